"""The in-process actor runtime and the call supervisor, run for real (no event-loop fakes)."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callbridge.actors import messages as m
from callbridge.actors.runtime import Actor, Dispatcher, InjectedFault
from callbridge.actors.supervisor import CHILDREN, POLICIES, CallSupervisor
from callbridge.config import Settings

# --- messages ---------------------------------------------------------------------------

EXAMPLES = [
    m.MediaReceived(1, 20, b"\xff" * 160),
    m.CallerUlaw(2, 40, b"\xff" * 160, 12.04),
    m.CallerAudio(1, 20, b"\x00\x01" * 320, 16000, 12.02),
    m.AgentAudio(3, b"\x01\x00" * 10, 22050),
    m.AgentUtteranceEnd(3),
    m.OutboundFrame(b"\x7f" * 160),
    m.OutboundMark(3),
    m.OutboundMark(3, 10),
    m.UtteranceStarting(3),
    m.AgentAudioSent(3),
    m.EndCall("goodbye"),
    m.CallerSpeech(12.5, 12.75),
    m.SpeechRejected(12.5),
    m.BargeInDetected(3, 840, 12.5),
    m.Interrupted(3, 840),
    m.CallStarted("CA1", "MZ1", {"lang": "en"}, 2),
    m.CallStopped("twilio stop"),
    m.MarkPlayed(3),
    m.MarkPlayed(3, 10),
    m.DtmfReceived("#"),
    m.ChildFailed("codec", "ValueError: x"),
    m.InjectFault("test"),
    m.TimelineNote("greeting_audio", {"latency_ms": 1.5, "text": "hi"}),
    m.AgentUlaw(4, b"\xff" * 160),
    m.UpstreamBound("vapi", "3f2a-call"),
    m.Playback(),
    m.Playback(3, 3, 2, 1, 10, 12.5, 11.0, 4),
    m.CallAction(1, "transfer", {"to": "+15551234567", "mode": "warm", "summary": "wants a person"}),
    m.ActionDone(1, {"ok": False, "error": "no answer"}),
    m.HangUpAfterPlayed("vapi: phone-call-control hang-up"),
    m.AnsweredBy("machine_end_beep"),
    m.LeaveVoicemail(3),
]


def test_every_message_type_has_an_example():
    assert {type(e) for e in EXAMPLES} == set(m.MESSAGE_TYPES)


@pytest.mark.parametrize("msg", EXAMPLES, ids=lambda e: type(e).__name__)
def test_messages_round_trip_through_msgpack(msg):
    assert m.decode(m.encode(msg)) == msg
    with pytest.raises(dataclasses.FrozenInstanceError):
        msg.__setattr__(dataclasses.fields(msg)[0].name, None)


@given(st.binary(max_size=200))
def test_decode_rejects_garbage_with_message_error(data):
    try:
        m.decode(data)
    except m.MessageError:
        pass


def test_decode_checks_field_types():
    import msgpack

    code = m.MESSAGE_TYPES.index(m.MediaReceived)
    with pytest.raises(m.MessageError, match="chunk"):
        m.decode(msgpack.packb([code, "1", 20, b""]))
    with pytest.raises(m.MessageError):
        m.decode(msgpack.packb([99, 1]))
    with pytest.raises(m.MessageError):
        m.decode(msgpack.packb([code, 1]))  # missing fields


# --- the runtime --------------------------------------------------------------------------


class Recorder(Actor):
    role = "recorder"

    def __init__(self, ctx, log):
        super().__init__(ctx)
        self.log = log

    def receiveMsg_DtmfReceived(self, msg):
        self.log.append(("dtmf", msg.digit))
        if msg.digit == "1":  # a send from inside a handler is queued, not nested
            self.ctx.tell("recorder", m.MarkPlayed(1))
            self.log.append(("after-tell", msg.digit))

    def receiveMsg_MarkPlayed(self, msg):
        self.log.append(("mark", msg.utterance))

    def receiveMsg_OutboundFrame(self, msg):
        self.log.append(("frame", msg.payload))

    def receiveMsg_ChildFailed(self, msg):
        self.log.append(("failed", msg.role))


class Fragile(Actor):
    role = "fragile"

    def __init__(self, ctx, log):
        super().__init__(ctx)
        self.log = log
        self.count = 0

    def receiveMsg_OutboundFrame(self, msg):
        self.count += 1
        if msg.payload == b"boom":
            raise ValueError("boom")
        self.log.append(("fragile", self.count))

    def receiveMsg_DtmfReceived(self, msg):
        async def fail_later():
            await asyncio.sleep(0)
            raise RuntimeError("task failed")

        self.ctx.spawn(fail_later(), "x")


def _dispatcher(log):
    d = Dispatcher(clock=lambda: 0.0, check_messages=True)
    d.add(Recorder, None, log)
    d.add(Fragile, "recorder", log)
    return d


def test_no_reentrancy_and_order():
    log = []
    d = _dispatcher(log)
    d.tell("recorder", m.DtmfReceived("1"))
    assert log == [("dtmf", "1"), ("after-tell", "1"), ("mark", 1)]


def test_system_messages_jump_the_queue():
    log = []
    d = _dispatcher(log)

    class Burst(Actor):
        role = "burst"

        def receiveMsg_DtmfReceived(self, msg):
            for i in range(3):
                self.ctx.tell("recorder", m.OutboundFrame(bytes([i])))
            self.ctx.tell("recorder", m.MarkPlayed(2))

    d.add(Burst)
    d.tell("burst", m.DtmfReceived("2"))
    assert log[0] == ("mark", 2)
    assert [e[1] for e in log[1:]] == [b"\x00", b"\x01", b"\x02"]


def test_handler_failure_reports_to_parent_and_drops_only_that_message():
    log = []
    d = _dispatcher(log)
    for payload in (b"a", b"boom", b"b"):
        d.tell("fragile", m.OutboundFrame(payload))
    assert log == [("fragile", 1), ("failed", "fragile"), ("fragile", 3)]


async def test_task_failure_fails_the_actor_and_cancel_on_remove():
    log = []
    d = _dispatcher(log)
    d.tell("fragile", m.DtmfReceived("9"))
    await asyncio.sleep(0.01)
    assert log == [("failed", "fragile")]
    # Tasks of a removed actor are cancelled, never reported.
    d.tell("fragile", m.DtmfReceived("9"))
    d.remove("fragile")
    await asyncio.sleep(0.01)
    assert log == [("failed", "fragile")]


async def test_ticker_keeps_a_grid_skips_missed_ticks_and_stops_with_its_actor():
    import time

    log = []
    d = _dispatcher(log)
    d.clock = time.monotonic  # tickers follow the call's clock: a real one here
    fired = []
    start = time.monotonic()
    ticker = d.every("recorder", 0.01, lambda: fired.append(time.monotonic()))
    await asyncio.sleep(0.055)
    assert fired
    # Tick i is due at start + i * period or later (skipped ticks only push it later):
    # never early, and no drift accumulates.
    for i, t in enumerate(fired, 1):
        assert t >= start + i * 0.01
    time.sleep(0.05)  # noqa: ASYNC251 - the loop is blocked for five periods, on purpose
    n = len(fired)
    await asyncio.sleep(0.03)
    after = fired[n:]
    assert after
    # The ticks missed are skipped: no burst of catch-up ticks right after the block.
    assert sum(t < after[0] + 0.002 for t in after) <= 2
    d.remove("recorder")
    assert not ticker.active
    n = len(fired)
    await asyncio.sleep(0.03)
    assert len(fired) == n


async def test_ticker_exception_fails_the_actor_once():
    import time

    log = []
    d = _dispatcher(log)
    d.clock = time.monotonic

    def boom():
        raise RuntimeError("tick failed")

    ticker = d.every("fragile", 0.005, boom)
    await asyncio.sleep(0.03)
    assert log == [("failed", "fragile")]
    assert not ticker.active


def test_handlers_follow_a_replaced_actor():
    log = []
    d = _dispatcher(log)
    d.tell("fragile", m.OutboundFrame(b"a"))
    d.tell("fragile", m.OutboundFrame(b"a"))
    d.add(Fragile, "recorder", log)  # fresh state: its count starts again
    d.tell("fragile", m.OutboundFrame(b"a"))
    assert log == [("fragile", 1), ("fragile", 2), ("fragile", 1)]
    d.remove("fragile")
    d.tell("fragile", m.OutboundFrame(b"a"))
    assert len(log) == 3


def test_queue_bound_drops_data_not_system():
    from callbridge.actors import runtime

    log = []
    d = _dispatcher(log)
    d._draining = True  # hold delivery to fill the queue
    for _ in range(runtime.MAX_QUEUED + 10):
        d.tell("recorder", m.OutboundFrame(b"x"))
    d.tell("recorder", m.MarkPlayed(3))
    assert d.dropped == 10
    d._draining = False
    d._drain()
    assert log[0] == ("mark", 3) and len(log) == runtime.MAX_QUEUED + 1


def test_closed_dispatcher_discards():
    log = []
    d = _dispatcher(log)
    d.close()
    d.tell("recorder", m.DtmfReceived("1"))
    assert log == [] and d.actors == {}


# --- the supervisor -------------------------------------------------------------------------


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


class CallRecord:
    """A real CallIO that records what the supervisor asks of the socket side."""

    def __init__(self):
        self.frames, self.marks, self.notes, self.ended = [], [], [], []

    def send_frame(self, payload):
        self.frames.append(payload)

    def send_mark(self, name):
        self.marks.append(name)

    def notify_when_sent(self, utterance):
        self.marks.append(f"notify:{utterance}")

    def end(self, reason):
        self.ended.append(reason)

    def note(self, event, **data):
        self.notes.append((event, data))


async def _call(clock):
    io = CallRecord()
    d = Dispatcher(clock, check_messages=True, name="CAtest")
    sup = d.add(CallSupervisor, None, Settings(greeting=""), io, m.CallStarted("CAtest", "MZtest"))
    return d, sup, io


class CodecInbox(Actor):
    """Stands where the Codec is: keeps what the jitter buffer sends it."""

    role = "codec"

    def __init__(self, ctx, got):
        super().__init__(ctx)
        self.got = got

    def receiveMsg_CallerUlaw(self, msg):
        self.got.append(msg)


async def test_supervisor_restarts_with_fresh_state_and_replays_call_start():
    clock = FakeClock()
    d, sup, io = await _call(clock)
    assert set(d.actors) == {"supervisor"} | {c.role for c in CHILDREN}
    old_jitter = d.actors["jitter"]
    d.tell("jitter", m.MediaReceived(1, 0, b"\xff" * 160))
    assert old_jitter.buffer.stats().received == 1
    d.tell("jitter", m.InjectFault())
    new_jitter = d.actors["jitter"]
    assert new_jitter is not old_jitter and new_jitter.buffer.stats().received == 0
    assert (
        "child_restarted",
        {"child": "jitter", "error": "InjectedFault: fault injected into jitter: ", "generation": 1},
    ) in io.notes
    assert sup.view().restarts["jitter"] == 1
    d.tell("jitter", m.MediaReceived(2, 20, b"\xff" * 160))  # audio flows through the new child
    assert new_jitter.buffer.stats().received == 1
    d.tell("jitter", m.MediaReceived(3, 40, b"\xff" * 160))
    assert new_jitter.out_chunk >= 1
    d.close()


async def test_restart_budget_then_policy():
    clock = FakeClock()
    d, sup, io = await _call(clock)
    policy = POLICIES["bargein"]
    for _ in range(policy.max_restarts):
        d.tell("bargein", m.InjectFault())
        clock.t += 1
    assert sup.view().restarts["bargein"] == policy.max_restarts
    d.tell("bargein", m.InjectFault())
    assert "bargein" not in d.actors  # run_without: the call goes on
    assert io.ended == []
    # The window slides: old restarts stop counting.
    for _ in range(POLICIES["codec"].max_restarts):
        d.tell("codec", m.InjectFault())
    clock.t += POLICIES["codec"].window_s + 1
    d.tell("codec", m.InjectFault())
    assert "codec" in d.actors and io.ended == []
    for _ in range(POLICIES["codec"].max_restarts):
        d.tell("codec", m.InjectFault())
    assert io.ended and "codec failed" in io.ended[0]
    d.close()


def test_injected_fault_is_a_real_exception():
    with pytest.raises(InjectedFault):
        Actor(None).receiveMsg_InjectFault(m.InjectFault("x"))
