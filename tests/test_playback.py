"""``Playback``: what the caller hears of the agent, owned by the call's supervisor and
read by BargeIn and the Upstream. The transitions as pure values, then the real actor
tree (supervisor, children, msgpack round trips on) driven as the gateway drives it."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from callbridge.actors import messages as m
from callbridge.actors.bargein import QUICK_ANSWER_S
from callbridge.actors.runtime import Dispatcher
from callbridge.actors.supervisor import CallSupervisor
from callbridge.codecs.marks import MarkName
from callbridge.config import Settings

from .test_actors import CallRecord, FakeClock


class Socket(CallRecord):
    """The gateway's side of a call, recorded; a ``clear`` drops nothing queued."""

    def clear(self) -> float:
        self.notes.append(("clear", {}))
        return 0.0


async def _call(clock: FakeClock) -> tuple[Dispatcher, CallSupervisor, Socket]:
    io = Socket()
    d = Dispatcher(clock, check_messages=True, name="CAtest")
    sup = d.add(CallSupervisor, None, Settings(greeting=""), io, m.CallStarted("CAtest", "MZtest"))
    assert isinstance(sup, CallSupervisor)
    return d, sup, io


def test_an_utterance_plays_from_its_start_until_its_end_mark():
    p = m.Playback().start(1, now=10.0)
    assert (p.playing, p.started, p.frames, p.at, p.starts) == (1, 1, 0, 10.0, 1)
    assert p.played_ms(10.05) == 50
    p = p.echo(MarkName(1, 10), now=10.3)
    assert (p.frames, p.at) == (10, 10.3) and p.played_ms(10.35) == 250
    assert p.played_ms(11.0) == 400  # at most one mark interval past the last echo
    p = p.echo(MarkName(1), now=10.5)
    assert (p.playing, p.played_upto, p.quiet_since) == (None, 1, 10.5)
    assert m.Playback().playing is None and m.Playback().quiet_since == -math.inf


def test_a_cut_utterance_stops_being_audible_and_never_starts_again():
    p = m.Playback().start(2, now=1.0).cut(2)
    assert (p.playing, p.cut_upto, p.started) == (None, 2, 2)
    assert p.start(2, now=1.1) is p and p.start(1, now=1.1) is p  # its late frames: nothing
    assert p.start(3, now=1.2).playing == 3
    assert p.echo(MarkName(2, 10), now=1.3) is p  # a progress mark of what is not playing


def test_an_older_end_mark_leaves_the_playing_utterance_audible():
    p = m.Playback().start(1, now=0.0).start(2, now=1.0).echo(MarkName(1), now=1.1)
    assert (p.playing, p.played_upto, p.quiet_since) == (2, 1, 1.1)


async def test_the_supervisor_owns_it_and_the_readers_hold_its_latest():
    clock = FakeClock()
    d, sup, io = await _call(clock)
    bargein, upstream = d.actors["bargein"], d.actors["upstream"]

    def readers_agree() -> m.Playback:
        assert bargein.playback == sup.playback
        assert upstream.playback == upstream.backend.playback
        assert replace(upstream.playback, frames=0, at=0.0) == replace(sup.playback, frames=0, at=0.0)
        return sup.playback

    clock.t = 1.0
    d.tell("supervisor", m.UtteranceStarting(1))
    assert readers_agree().playing == 1 and io.marks == ["notify:1"]
    clock.t = 1.2
    d.tell("supervisor", m.MarkPlayed(1, 10))
    assert readers_agree().frames == 10
    assert upstream.playback.frames == 0  # progress is BargeIn's: not told to the Upstream
    clock.t = 1.5
    d.tell("supervisor", m.MarkPlayed(1))
    assert readers_agree().playing is None and sup.played_upto == 1
    d.tell("bargein", m.InjectFault())  # a restarted reader starts from the supervisor's value
    assert d.actors["bargein"] is not bargein and d.actors["bargein"].playback == sup.playback
    d.close()


async def test_a_barge_in_is_reported_once_and_the_cut_is_told_to_the_readers():
    clock = FakeClock()
    d, sup, io = await _call(clock)
    clock.t = 1.0
    d.tell("supervisor", m.UtteranceStarting(1))
    clock.t = 1.4
    d.tell("supervisor", m.MarkPlayed(1, 10))
    clock.t = 1.5
    d.tell("bargein", m.CallerSpeech(onset=1.3, detected=1.5))
    d.tell("bargein", m.CallerSpeech(onset=1.45, detected=1.5))  # "wait... wait": one cut
    cuts = [data for event, data in io.notes if event == "barge_in"]
    assert [(c["utterance"], c["heard_ms"]) for c in cuts] == [(1, 300)]
    assert sup.playback.cut_upto == 1 and sup.playback.playing is None
    assert d.actors["upstream"].playback == sup.playback
    d.tell("supervisor", m.UtteranceStarting(1))  # its frames still on their way: not audible
    assert sup.playback.playing is None
    d.close()


async def test_a_quick_answer_after_the_end_mark_is_a_turn_not_a_barge_in():
    """Nothing is left playing at Twilio: no cut, no ``clear``; noted ``quick_answer``
    when it starts within ``QUICK_ANSWER_S`` of the end mark."""
    clock = FakeClock()
    d, sup, io = await _call(clock)
    d.tell("supervisor", m.UtteranceStarting(1))
    clock.t = 2.0
    d.tell("supervisor", m.MarkPlayed(1))
    clock.t = 2.3
    d.tell("bargein", m.CallerSpeech(onset=2.1, detected=clock.t))  # 100 ms after the end mark
    d.tell("supervisor", m.UtteranceStarting(2))
    clock.t = 4.0
    d.tell("supervisor", m.MarkPlayed(2))
    clock.t = 4.0 + QUICK_ANSWER_S + 0.5
    d.tell("bargein", m.CallerSpeech(onset=clock.t - 0.2, detected=clock.t))  # later: nothing noted
    assert not [data for event, data in io.notes if event in ("barge_in", "clear")]
    assert [data for event, data in io.notes if event == "quick_answer"] == [{"after_ms": 100}]
    assert sup.playback.cut_upto == 0
    d.close()


async def _speak_over_the_agent(loud_s: float) -> Socket:
    """With BACKCHANNEL_MS=600: the agent talks; the caller is loud for ``loud_s`` from 1.0 s
    of media time, then quiet; the endpointer's start comes 200 ms after the onset."""
    clock = FakeClock()
    io = Socket()
    d = Dispatcher(clock, check_messages=True, name="CAtest")
    settings = Settings(greeting="", backchannel_ms=600)
    d.add(CallSupervisor, None, settings, io, m.CallStarted("CAtest", "MZtest"))
    d.tell("supervisor", m.UtteranceStarting(1))
    loud, quiet = (b"\x00\x20" * 320), (b"\x00\x00" * 320)
    for k in range(1, 101):  # 2 s of 20 ms frames
        clock.t = at = k * 0.02
        d.tell("bargein", m.CallerAudio(k, k * 20, loud if 1.0 < at <= 1.0 + loud_s else quiet, 16000, at))
        if k == 60:  # 1.2 s: sustained for MIN_SPEECH_MS
            d.tell("bargein", m.CallerSpeech(onset=1.0, detected=clock.t))
    d.close()
    return io


async def test_with_backchannel_ms_a_short_mm_hmm_leaves_the_agent_talking():
    io = await _speak_over_the_agent(loud_s=0.4)
    assert not [e for e, _ in io.notes if e in ("barge_in", "clear")]
    assert [data for event, data in io.notes if event == "backchannel"] == [
        {"utterance": 1, "speech_ms": 600}
    ]


async def test_with_backchannel_ms_speech_still_going_cuts_the_agent_at_the_window():
    io = await _speak_over_the_agent(loud_s=1.0)
    (cut,) = [data for event, data in io.notes if event == "barge_in"]
    assert cut["utterance"] == 1 and cut["detection_ms"] == pytest.approx(600, abs=25)
    assert not [e for e, _ in io.notes if e == "backchannel"]
