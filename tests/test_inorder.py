"""The in-order path for mu-law pass-through back ends (callbridge.codecs.inorder): each
frame out the moment it is pushed, gaps concealed with their duration, duplicates, late
and stale frames dropped and counted, the line measured; and the Dejitter actor using it."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callbridge.actors import messages as m
from callbridge.actors.jitter import Dejitter
from callbridge.actors.runtime import Dispatcher
from callbridge.codecs.inorder import InOrder, InOrderParams

from .test_actors import CodecInbox, FakeClock, Recorder
from .test_jitterbuffer import frame_payload


def feed(io: InOrder, frames, now=lambda i: i * 0.02):
    """Push (ts, payload) pairs, the i-th at now(i): everything that came out, in order."""
    out = []
    for i, (ts, payload) in enumerate(frames):
        out += io.push(i, ts, payload, now(i))
    return out


def test_in_order_frames_go_out_at_once_untouched():
    io = InOrder()
    sent = [(1000 + i * 20, frame_payload(i)) for i in range(50)]
    for i, (ts, payload) in enumerate(sent):
        (frame,) = io.push(i, ts, payload, 5.0 + i * 0.02)  # out at the push: nothing waits
        assert (frame.payload, frame.kind, frame.source_ts_ms) == (payload, "audio", ts)
        assert (
            frame.timestamp_ms == ts and not frame.filler and frame.latency_ms == pytest.approx(0, abs=1e-6)
        )
    s = io.stats()
    assert (s.received, s.played, s.output, s.lost, s.duplicates, s.late, s.stale) == (50, 50, 50, 0, 0, 0, 0)
    assert s.loss_pct == 0 and s.concealed_pct == 0 and s.jitter_ms == pytest.approx(0, abs=1e-9)
    assert s.depth_ms == 0 and s.target_ms == 0 and s.latency_p95_ms == 0


def test_a_burst_after_a_stall_goes_out_whole_at_once():
    """The case that broke the byte-exact call tests: 240 ms of nothing, then the frames queued
    in the socket all at the same moment. All go out, none dropped to catch up."""
    io = InOrder()
    quiet = [(i * 20, b"\xff" * 160) for i in range(30)]
    out = feed(io, quiet, now=lambda i: 0.44 if 10 <= i <= 22 else i * 0.02)
    assert [f.payload for f in out] == [p for _, p in quiet]
    s = io.stats()
    assert s.played == 30 and s.lost == 0 and s.skipped == 0
    assert s.latency_p95_ms is not None and s.latency_p95_ms >= 200  # what the stall cost, measured
    assert s.jitter_ms > 0


def test_media_time_follows_the_timestamps_never_runs_ahead_of_arrival_nor_back():
    """``Frame.at`` (the clock of the VAD and endpointer): a stall's burst keeps the
    times the caller spoke at; a first frame that came late does not push the clock past
    the arrival of faster ones; and the clock never goes back."""
    io = InOrder()
    arrivals = [max(3.1, 3.0 + i * 0.02) for i in range(20)] + [3.7] * 10  # slow first, a stall
    out = feed(io, [(i * 20, frame_payload(i)) for i in range(30)], now=lambda i: arrivals[i])
    ats = [f.at for f in out]
    assert all(at is not None and at <= arrivals[i] + 1e-9 for i, at in enumerate(ats))
    assert ats == sorted(ats)
    assert ats[19:] == pytest.approx([3.0 + i * 0.02 for i in range(19, 30)])  # the burst: media time


def test_duplicates_are_dropped_and_counted():
    io = InOrder()
    a, b = frame_payload(0), frame_payload(1)
    assert len(io.push(0, 0, a, 0.0)) == 1
    assert io.push(0, 0, a, 0.01) == []  # the same frame again
    assert io.push(5, 0, b, 0.015) == []  # another payload for a slot gone out: still a duplicate
    assert len(io.push(1, 20, b, 0.02)) == 1
    assert io.push(1, 20, b, 0.03) == []
    s = io.stats()
    assert (s.duplicates, s.played, s.output, s.late, s.stale) == (3, 2, 2, 0, 0)


def test_a_gap_is_concealed_with_its_duration_when_the_next_frame_comes():
    io = InOrder()
    last = frame_payload(0)
    io.push(0, 0, last, 0.0)
    out = io.push(1, 20 * 6, frame_payload(6), 0.12)  # slots 1-5 never came
    assert [f.kind for f in out] == ["concealed"] * 3 + ["comfort"] * 2 + ["audio"]  # 60 ms fade
    assert [f.source_ts_ms for f in out] == [20, 40, 60, 80, 100, 120]
    assert [f.timestamp_ms for f in out] == [20, 40, 60, 80, 100, 120]  # continuous, right duration
    assert all(len(f.payload) == 160 and f.payload != last for f in out[:5])
    assert out[-1].payload == frame_payload(6)
    s = io.stats()
    assert (s.lost, s.concealed, s.comfort, s.played, s.output, s.skipped) == (5, 3, 2, 2, 7, 0)
    assert s.loss_pct == pytest.approx(100 * 5 / 7)
    assert s.concealed_pct == pytest.approx(100 * 5 / 7)
    # the frame of a concealed slot, arriving after all: late, dropped
    assert io.push(2, 40, frame_payload(2), 0.13) == []
    assert io.stats().late == 1


def test_a_huge_timestamp_jump_is_concealed_only_up_to_max_gap():
    io = InOrder(InOrderParams(max_gap_ms=2000))
    io.push(0, 0, frame_payload(0), 0.0)
    hours = 10 * 3600 * 1000
    out = io.push(1, hours, frame_payload(1), 0.02)
    assert len(out) == 2000 // 20 + 1 and out[-1].kind == "audio"
    s = io.stats()
    assert s.lost == hours // 20 - 1 and s.skipped == s.lost - 100 and s.concealed + s.comfort == 100
    assert len(io.push(2, hours + 20, frame_payload(2), 0.04)) == 1  # and it goes on from there
    # back to the old timeline: hours behind, stale
    assert io.push(3, 40, frame_payload(3), 0.06) == [] and io.stats().stale == 1


def test_stale_and_late_frames():
    io = InOrder(InOrderParams(stale_ms=200))
    io.push(0, 0, frame_payload(0), 0.0)
    io.push(1, 20 * 30, frame_payload(30), 0.6)  # slots 1-29 lost, concealed
    assert io.push(2, 20 * 25, frame_payload(25), 0.61) == []  # 100 ms behind: late
    assert io.push(3, 20 * 5, frame_payload(5), 0.62) == []  # 500 ms behind: stale
    s = io.stats()
    assert (s.late, s.stale, s.lost, s.played) == (1, 1, 29, 2)


def test_jitter_is_rfc3550_on_arrival_times():
    io = InOrder()
    # every other frame 10 ms late: |D| = 10 ms each step, J -> 10 ms
    feed(io, [(i * 20, frame_payload(i)) for i in range(400)], now=lambda i: i * 0.02 + 0.01 * (i % 2))
    assert io.stats().jitter_ms == pytest.approx(10.0, abs=0.1)
    assert io.stats().latency_p50_ms in (0.0, 10.0) and io.stats().latency_p95_ms == 10.0


def test_bad_arguments_are_refused():
    io = InOrder()
    with pytest.raises(ValueError, match="160 bytes"):
        io.push(0, 0, b"\xff" * 10, 0.0)
    with pytest.raises(TypeError):
        io.push(0, "0", b"\xff" * 160, 0.0)
    with pytest.raises(ValueError):
        io.push(-1, 0, b"\xff" * 160, 0.0)
    io.push(0, 0, bytearray(160), 1.0)  # bytes-like is taken
    with pytest.raises(ValueError, match="backwards"):
        io.push(1, 20, b"\xff" * 160, 0.5)
    with pytest.raises(ValueError):
        io.push(1, 20, b"\xff" * 160, float("nan"))
    for bad in ({"frame_ms": 0}, {"max_gap_ms": -1}, {"comfort_dbfs": 3.0}):
        with pytest.raises(ValueError):
            InOrderParams(**bad)
    for bad in ({"frame_ms": 20.5}, {"comfort_noise": 1}, {"stale_ms": float("inf")}):
        with pytest.raises(TypeError):
            InOrderParams(**bad)


@settings(max_examples=200, deadline=None)
@given(
    order=st.permutations(range(30)),
    dups=st.lists(st.integers(0, 29), max_size=10),
    lost=st.sets(st.integers(1, 29), max_size=10),
)
def test_any_arrival_order_gives_one_continuous_stream_of_untouched_frames(order, dups, lost):
    io = InOrder()
    arrivals = [i for i in order if i not in lost] + dups
    first = arrivals[0]
    out = []
    for k, i in enumerate(arrivals):
        got = io.push(k, 1000 + i * 20, frame_payload(i), k * 0.02)
        assert len(got) <= 2000 // 20 + 1
        out += got
    audio = [f for f in out if f.kind == "audio"]
    sources = [f.source_ts_ms for f in audio]
    assert sources == sorted(set(sources))  # in media order, each slot once
    assert all(f.payload == frame_payload((f.source_ts_ms - 1000) // 20) for f in audio)  # untouched
    assert [f.timestamp_ms for f in out] == [1000 + first * 20 + 20 * k for k in range(len(out))]
    assert [f.source_ts_ms for f in out] == list(
        range(1000 + first * 20, 1000 + first * 20 + 20 * len(out), 20)
    )
    s = io.stats()
    assert s.output == len(out) == s.played + s.lost and s.played == len(audio)
    assert s.played + s.duplicates + s.late + s.stale == len(arrivals)


async def test_dejitter_passes_each_frame_on_the_moment_it_is_read_stamped_with_media_time():
    """No tick, no playout depth: a burst after a stall reaches the Codec whole, at the
    instant it arrives, each frame stamped with its media time (when the caller said it),
    not its arrival: to the VAD and endpointer the stall is no silence."""
    clock, got = FakeClock(), []
    d = Dispatcher(clock, check_messages=True)
    d.add(Recorder, None, [])
    jitter = d.add(Dejitter, "recorder")
    d.add(CodecInbox, "recorder", got)
    sent = [frame_payload(i) for i in range(60)]
    for i, payload in enumerate(sent):
        clock.t = 10.64 if 20 <= i < 32 else 10 + i * 0.02  # a 240 ms stall, then a burst
        d.tell("jitter", m.MediaReceived(i + 1, i * 20, payload))
        assert len(got) == i + 1  # out before the next one is read
    assert [msg.payload for msg in got] == sent
    assert [msg.chunk for msg in got] == list(range(1, 61))
    assert [msg.at for msg in got] == pytest.approx([10 + i * 0.02 for i in range(60)])
    clock.t = 10 + 61 * 0.02
    d.tell("jitter", m.MediaReceived(61, 61 * 20, sent[0]))  # slot 60 lost: concealed first
    assert [msg.timestamp for msg in got[-2:]] == [60 * 20, 61 * 20] and got[-2].payload != sent[0]
    assert [msg.at for msg in got[-2:]] == pytest.approx([11.2, 11.22])  # the gap keeps its time
    d.tell("jitter", m.CallStopped("test"))
    d.close()
    summary = jitter.summary()
    assert summary["concealed_frames"] == 1 and summary["loss_pct"] == pytest.approx(100 / 62, abs=0.1)
    assert summary["latency_p95_ms"] >= 150
