"""Jitter buffer: properties under arbitrary arrival schedules (hypothesis, injected clock)
and examples on simulated lines (callbridge.sim.impair)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from callbridge.codecs.g711 import ulaw_decode, ulaw_encode
from callbridge.codecs.jitterbuffer import Frame, JitterBuffer, JitterParams, quietest
from callbridge.sim.impair import Impairment

FB = 160
FMS = 20
TAIL = FB // 4  # spliced frames (speech dropped to catch up) keep every byte from here on


def frame_payload(i: int, copy: int = 0, loud: bool = True) -> bytes:
    """A unique payload per (frame, copy): a loud or quiet body with the ids in the tail."""
    body = ulaw_encode((np.sin(np.arange(FB) * 0.3) * (8000 if loud else 20)).astype(np.int16))
    tag = bytes([i & 0xFF, (i >> 8) & 0xFF, copy & 0xFF, 0x5A])
    return body[: FB - 4] + tag


def drive(jb: JitterBuffer, arrivals, end_s: float, tick_s: float = 0.02, phase_s: float = 0.0):
    """Push each (t, chunk, ts, payload) at t and pop every tick_s; returns the pops as
    (now, frames) and the push results as (ts, payload, result)."""
    arrivals = sorted(arrivals, key=lambda a: a[0])
    pops, pushed = [], []
    i, k = 0, 0
    while True:
        now = phase_s + k * tick_s
        if now > end_s:
            break
        while i < len(arrivals) and arrivals[i][0] <= now:
            t, chunk, ts, payload = arrivals[i]
            pushed.append((ts, payload, jb.push(chunk, ts, payload, t)))
            i += 1
        pops.append((now, jb.pop(now)))
        k += 1
    return pops, pushed


def line(imp: Impairment, n: int, loud=lambda i: True):
    """Arrivals of n frames over an impaired line."""
    return [
        (d.at_s, d.chunk, d.timestamp_ms, frame_payload(d.frame, loud=loud(d.frame))) for d in imp.schedule(n)
    ]


def flat(pops) -> list[Frame]:
    return [f for _, fr in pops for f in fr]


# --------------------------------------------------------------------------- properties


@st.composite
def schedules(draw):
    n = draw(st.integers(1, 90))
    tcp = draw(st.booleans())
    lost = draw(st.lists(st.sampled_from([False] * 6 + [True]), min_size=n, max_size=n))
    lost[0] = False
    delay_ms = st.one_of(st.just(0), st.integers(0, 120), st.integers(0, 3000))
    delay = draw(st.lists(delay_ms, min_size=n, max_size=n))
    delay[0] = 0  # frame 0 has the smallest transit (so the transit floor never moves)
    dups = draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, 2500)), max_size=8))
    loud = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    ts0 = draw(st.integers(0, 400)) * FMS
    arrivals, prev = [], 0.0
    for i in range(n):
        if lost[i]:
            continue
        t = i * FMS / 1000 + delay[i] / 1000
        if tcp:
            t = max(t, prev)
        prev = t
        arrivals.append((t, i + 1, ts0 + i * FMS, frame_payload(i, 0, loud[i])))
    for j, (i, extra) in enumerate(dups):
        if not lost[i]:
            t = i * FMS / 1000 + delay[i] / 1000 + extra / 1000
            chunk = i + 1 + draw(st.sampled_from([0, 1000]))
            arrivals.append((t, chunk, ts0 + i * FMS, frame_payload(i, j + 1, loud[i])))
    tick_ms = draw(st.sampled_from([20, 20, 10, 7, 50, 100]))
    phase = draw(st.integers(0, 19)) / 1000
    params = draw(
        st.sampled_from(
            [
                JitterParams(),
                JitterParams(
                    initial_depth_ms=0,
                    min_depth_ms=0,
                    max_depth_ms=200,
                    hold_ms=0,
                    stale_ms=300,
                    window_s=1.0,
                    update_every=1,
                    comfort_noise=False,
                ),
                JitterParams(max_frames=8, hold_ms=100, margin_ms=0, accelerate_ms=0, lookahead_ms=0),
            ]
        )
    )
    return arrivals, tick_ms / 1000, phase, params


@pytest.mark.slow
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schedules())
def test_output_continuous_monotone_bounded_and_only_pushed_audio(case):
    arrivals, tick, phase, p = case
    jb = JitterBuffer(p)
    arrivals = sorted(arrivals, key=lambda a: a[0])
    end = arrivals[-1][0] + 2.0  # drained: latency never exceeds 1000 + 300 + 20 ms
    start = arrivals[0][0] + p.initial_depth_ms / 1000
    sent = {}  # ts -> payloads that were queued
    rejected = set()
    out: list[Frame] = []
    max_target = jb.target_ms
    i, k = 0, 0
    while (now := phase + k * tick) <= end:
        while i < len(arrivals) and arrivals[i][0] <= now:
            t, chunk, ts, payload = arrivals[i]
            r = jb.push(chunk, ts, payload, t)
            assert r in ("queued", "duplicate", "late", "stale")
            (sent.setdefault(ts, []).append(payload) if r == "queued" else rejected.add(payload))
            assert len(jb) <= p.max_frames
            i += 1
        got = jb.pop(now)
        max_target = max(max_target, jb.target_ms)
        # continuous in wall time: one frame per frame_ms since playout started
        expect = math.floor((now - start) / (FMS / 1000) + 1e-9) + 1 if now >= start - 1e-9 else 0
        assert len(out) + len(got) == max(0, expect)
        for f in got:
            assert len(f.payload) == FB and f.kind in ("audio", "concealed", "comfort")
            if f.kind == "audio":
                assert f.payload not in rejected
                tails = [s[TAIL:] for s in sent[f.source_ts_ms]]
                assert f.payload in sent[f.source_ts_ms] or f.payload[TAIL:] in tails
                # bounded latency (the transit floor is frame 0's, so it never moves)
                assert -1e-6 <= f.latency_ms <= max_target + p.hold_ms + FMS + tick * 1000 + 1e-6
        out += got
        k += 1
    # output timestamps: strictly increasing, one frame apart, across pops
    assert all(b.timestamp_ms - a.timestamp_ms == FMS for a, b in itertools.pairwise(out))
    # media played or concealed in order, each at most once, never behind a played one
    src = [f.source_ts_ms for f in out if f.source_ts_ms is not None]
    assert src == sorted(set(src))
    st_ = jb.stats()
    assert st_.output == len(out)
    assert st_.played == sum(f.kind == "audio" for f in out)
    assert st_.concealed + st_.comfort == len(out) - st_.played
    spliced = sum(f.kind == "audio" and f.payload not in sent[f.source_ts_ms] for f in out)
    assert spliced <= st_.dropped_speech
    # drained: every frame taken in was played or dropped, and counted
    assert len(jb) == 0
    assert st_.received == st_.played + st_.dropped_quiet + st_.dropped_speech + st_.stale_head + st_.overflow


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 60), st.integers(-3000, 3000)), min_size=1, max_size=60),
    st.sampled_from([20, 50]),
)
def test_any_arrival_order_never_replays_and_bounds_latency_by_stale(frames, tick_ms):
    """Arbitrary timestamps and arrival times (reordering, dups, far-late frames): each
    media timestamp is output at most once, in order, within target + stale_ms."""
    p = JitterParams()
    jb = JitterBuffer(p)
    arr = sorted(((i * 0.02 + max(0, d) / 1000, i * FMS, c) for c, (i, d) in enumerate(frames)))
    pops, pushed = drive(
        jb, [(t, c, ts, frame_payload(ts // FMS, c)) for t, ts, c in arr], arr[-1][0] + 3, tick_ms / 1000
    )
    out = flat(pops)
    src = [f.source_ts_ms for f in out if f.source_ts_ms is not None]
    assert src == sorted(set(src))
    assert all(b.timestamp_ms - a.timestamp_ms == FMS for a, b in itertools.pairwise(out))
    bad = {pl for _, pl, r in pushed if r != "queued"}
    for f in out:
        if f.kind == "audio":
            assert f.payload not in bad
            assert f.latency_ms <= p.max_depth_ms + p.stale_ms + tick_ms + 1e-6


# --------------------------------------------------------------------------- examples


def test_nothing_before_the_first_frame_then_playout_after_initial_depth():
    jb = JitterBuffer()
    assert jb.pop(0.0) == [] and jb.pop(5.0) == []
    assert jb.push(1, 0, frame_payload(0), 5.0) == "queued"
    assert jb.pop(5.059) == []
    out = jb.pop(5.06)
    assert [(f.timestamp_ms, f.kind, f.source_ts_ms) for f in out] == [(0, "audio", 0)]
    assert out[0].latency_ms == pytest.approx(60.0)
    assert jb.pop(5.0799) == []
    # underrun: held (no media slot consumed), the last frame repeated and faded
    assert [(f.kind, f.source_ts_ms) for f in jb.pop(5.08)] == [("concealed", None)]
    assert jb.stats().held == 1 and jb.stats().lost == 0


def test_clean_line_plays_everything_in_order_at_the_initial_depth():
    arrivals = [(i * 0.02, i + 1, i * FMS, frame_payload(i)) for i in range(1500)]
    jb = JitterBuffer()
    pops, _pushed = drive(jb, arrivals, 30.04)
    out = flat(pops)
    audio = [f for f in out if f.kind == "audio"]
    assert [f.payload for f in audio] == [a[3] for a in arrivals]
    assert len(out) == len(audio)
    assert {round(f.latency_ms) for f in audio} == {60}
    s = jb.stats()
    assert (s.concealed, s.comfort, s.lost, s.duplicates, s.late, s.stale) == (0, 0, 0, 0, 0, 0)
    assert s.jitter_ms == pytest.approx(0, abs=1e-6)
    assert s.latency_p50_ms == s.latency_p95_ms == 60.0


def test_random_loss_is_concealed_at_the_loss_rate():
    n = 6000
    arrivals = line(Impairment(loss=0.03, seed=7), n)
    jb = JitterBuffer()
    pops, _ = drive(jb, arrivals, arrivals[-1][0] + 0.06)
    s = jb.stats()
    assert 2.4 <= s.loss_pct <= 3.6
    assert abs(s.concealed_pct - s.loss_pct) < 0.3
    assert s.held == 0 and s.dropped_speech == 0
    # no catch-up on a line that only loses frames: latency stays at the initial depth
    assert s.latency_p95_ms <= 61
    out = flat(pops)
    assert len(out) == arrivals[-1][2] // FMS + 1  # the right duration


def test_concealment_repeats_and_fades_then_comfort_noise():
    loud = ulaw_encode((np.sin(np.arange(FB) * 0.3) * 8000).astype(np.int16))
    jb = JitterBuffer(JitterParams(comfort_noise=False))
    # frames 0 and 1, then 10 lost (200 ms), then frame 12
    for i in (0, 1, 12):
        jb.push(i + 1, i * FMS, loud, i * 0.02)
    out = jb.pop(0.30)  # slots 0..12, all arrived before they were due
    kinds = [f.kind for f in out]
    assert kinds == ["audio", "audio"] + ["concealed"] * 3 + ["comfort"] * 7 + ["audio"]
    assert [f.source_ts_ms for f in out[2:12]] == [i * FMS for i in range(2, 12)]
    rms = [np.sqrt(np.mean(ulaw_decode(f.payload).astype(float) ** 2)) for f in out[1:5]]
    assert rms[0] > rms[1] > rms[2] > rms[3]  # fading
    assert rms[3] < 0.3 * rms[0]
    first = ulaw_decode(out[2].payload).astype(int)
    assert abs(first[5]) >= 0.9 * abs(ulaw_decode(loud).astype(int)[5])  # starts at full level
    assert out[5].payload == bytes([0xFF]) * FB  # silence once the fade is over
    s = jb.stats()
    assert s.lost == 10 and s.concealed == 3 and s.comfort == 7


def test_comfort_noise_is_low_level_noise():
    jb = JitterBuffer(JitterParams(comfort_dbfs=-60))
    jb.push(1, 0, frame_payload(0), 0.0)
    jb.push(2, 400, frame_payload(20), 0.0)
    out = jb.pop(0.06 + 0.3)
    comfort = [f for f in out if f.kind == "comfort"]
    assert comfort
    rms = np.sqrt(np.mean(np.concatenate([ulaw_decode(f.payload).astype(float) for f in comfort]) ** 2))
    assert 10 < rms < 100  # -60 dBFS is 33


def test_duplicates_late_and_stale_are_dropped_and_counted():
    jb = JitterBuffer()
    assert jb.push(1, 0, frame_payload(0), 0.0) == "queued"
    assert jb.push(1, 0, frame_payload(0, 1), 0.001) == "duplicate"
    assert jb.push(3, 40, frame_payload(2), 0.04) == "queued"
    out = jb.pop(0.06) + jb.pop(0.08)  # frame 1 is missing and frame 2 is here: concealed
    assert [f.kind for f in out] == ["audio", "concealed"]
    assert jb.push(2, 20, frame_payload(1), 0.081) == "late"
    assert jb.push(1, 0, frame_payload(0, 2), 0.082) == "duplicate"  # already played
    for k in range(150):
        jb.push(4 + k, 60 + k * FMS, frame_payload(3 + k), 0.1 + k * 0.02)
        jb.pop(0.1 + k * 0.02)
    assert jb.push(2, 20, frame_payload(1, 3), 3.1) == "stale"  # ~2.9 s behind
    s = jb.stats()
    assert (s.duplicates, s.late, s.stale) == (2, 1, 1)
    assert all(f.payload != frame_payload(1) for f in out)


def test_smaller_timestamp_chunk_wins_a_slot_whatever_the_arrival_order():
    jb = JitterBuffer()
    jb.push(7, 0, frame_payload(0, 7), 0.0)
    assert jb.push(5, 0, frame_payload(0, 5), 0.001) == "queued"  # replaces chunk 7
    assert jb.push(6, 0, frame_payload(0, 6), 0.002) == "duplicate"
    assert jb.pop(0.06)[0].payload == frame_payload(0, 5)
    assert jb.stats().duplicates == 2


def test_timestamps_off_the_grid_are_rounded_to_slots():
    jb = JitterBuffer()
    wobble = [0, 3, -4, 9, -9, 1] * 20
    arrivals = [(i * 0.02, i + 1, 100 + i * FMS + w, frame_payload(i)) for i, w in enumerate(wobble)]
    pops, _ = drive(jb, arrivals, 3.0)
    audio = [f for f in flat(pops) if f.kind == "audio"]
    assert len(audio) == len(wobble) and jb.stats().lost == 0


def test_stalls_grow_the_depth_then_a_calm_line_shrinks_it():
    n_bad, n_calm = 3000, 7500  # 60 s of 200-800 ms stalls, then 150 s of a clean line
    bad = Impairment(jitter=(200, 800), seed=3).schedule(n_bad)
    arrivals = [(d.at_s, d.chunk, d.timestamp_ms, frame_payload(d.frame)) for d in bad]
    last = arrivals[-1][0]
    arrivals += [
        (max(last, i * 0.02), i + 1, i * FMS, frame_payload(i)) for i in range(n_bad, n_bad + n_calm)
    ]
    jb = JitterBuffer()
    targets = {}
    i, k = 0, 0
    lat = []
    while (now := k * 0.02) < (n_bad + n_calm) * 0.02 + 1.5:
        while i < len(arrivals) and arrivals[i][0] <= now:
            jb.push(arrivals[i][1], arrivals[i][2], arrivals[i][3], arrivals[i][0])
            i += 1
        lat += [(now, f.latency_ms) for f in jb.pop(now) if f.kind == "audio"]
        targets[round(now)] = jb.target_ms
        k += 1
    p = jb.params
    assert targets[59] >= 250  # grew to cover the stalls (p93 of their delay variation)
    assert max(targets.values()) <= p.max_depth_ms
    assert targets[round((n_bad + n_calm) * 0.02)] <= p.min_depth_ms + 1  # shrunk back
    # slowly: never faster than shrink_ms_per_s
    for t in range(61, 200):
        assert targets[t - 1] - targets[t] <= p.shrink_ms_per_s * 1.0 + 1e-6
    end_lat = [x for t, x in lat if t > 205]
    assert max(end_lat) <= p.min_depth_ms + p.margin_ms + 5


@pytest.mark.slow
def test_a_long_call_with_bursts_does_not_creep_up():
    n = 30_000  # 10 minutes of 200-800 ms stalls and 3% loss
    jb = JitterBuffer()
    pops, _ = drive(jb, line(Impairment(loss=0.03, jitter=(200, 800), seed=11), n), n * 0.02 + 2)
    lat = [(now, f.latency_ms) for now, fr in pops for f in fr if f.kind == "audio"]
    early = [x for t, x in lat if 60 <= t < 180]
    late = [x for t, x in lat if 480 <= t < 600]
    assert np.percentile(late, 50) <= np.percentile(early, 50) + 40
    assert np.percentile(late, 95) <= np.percentile(early, 95) + 60
    s = jb.stats()
    assert s.stale == 0 and s.overflow == 0
    assert max(x for _, x in lat) <= jb.params.max_depth_ms + jb.params.hold_ms + FMS


def test_catch_up_drops_quiet_frames_before_speech():
    # 60 s of a clean line, a 1 s stall, then frames alternating quiet / loud: the buffer
    # holds through the stall, then catches up on the quiet frames, not on speech
    n0 = 3000
    arrivals = [(i * 0.02, i + 1, i * FMS, frame_payload(i)) for i in range(n0)]
    arrivals += [
        (max(61.0, i * 0.02), i + 1, i * FMS, frame_payload(i, loud=bool(i % 2))) for i in range(n0, n0 + 300)
    ]
    jb = JitterBuffer()
    pops, _ = drive(jb, arrivals, 66.0)
    s = jb.stats()
    p = jb.params
    assert s.target_ms == p.min_depth_ms  # one stall in a minute does not move the p93
    assert s.dropped_quiet >= 10 and s.dropped_speech == 0
    lat = [(now, f.latency_ms) for now, fr in pops for f in fr if f.kind == "audio"]
    assert max(x for _, x in lat) <= p.min_depth_ms + p.hold_ms + FMS + 1
    assert all(x <= p.min_depth_ms + p.margin_ms + 1 for t, x in lat if t > 63)


def test_bounded_memory_drops_the_oldest():
    jb = JitterBuffer()
    for i in range(600):  # nobody pops for 12 s
        jb.push(i + 1, i * FMS, frame_payload(i), i * 0.02)
    assert len(jb) == 500 and jb.stats().overflow == 100
    out = jb.pop(12.0)
    audio = [f for f in out if f.kind == "audio"]
    assert audio[0].source_ts_ms == 100 * FMS and len(audio) == 500
    assert out[0] is audio[0]


def test_rfc3550_jitter():
    jb = JitterBuffer()
    for i in range(400):  # transit alternating 0 / 10 ms: |D| = 10 ms every frame
        jb.push(i + 1, i * FMS, frame_payload(i), i * 0.02 + (0.01 if i % 2 else 0.0))
    assert jb.stats().jitter_ms == pytest.approx(10.0, rel=1e-3)


def test_bad_input_raises_clear_errors():
    jb = JitterBuffer()
    with pytest.raises(ValueError, match="160 bytes"):
        jb.push(1, 0, b"\xff" * 159, 0.0)
    with pytest.raises(TypeError, match="payload"):
        jb.push(1, 0, "x" * 160, 0.0)
    with pytest.raises(TypeError, match="chunk"):
        jb.push(True, 0, b"\xff" * FB, 0.0)
    with pytest.raises(TypeError, match="timestamp_ms"):
        jb.push(1, 0.5, b"\xff" * FB, 0.0)
    with pytest.raises(ValueError, match="timestamp_ms must be >= 0"):
        jb.push(1, -20, b"\xff" * FB, 0.0)
    with pytest.raises(ValueError, match="finite"):
        jb.pop(float("nan"))
    jb.push(1, 0, bytearray(b"\xff" * FB), 1.0)
    with pytest.raises(ValueError, match="backwards"):
        jb.pop(0.5)
    with pytest.raises(ValueError, match="percentile"):
        jb.latency_percentile(101)
    with pytest.raises(ValueError, match="min_depth_ms"):
        JitterParams(min_depth_ms=500, max_depth_ms=100)
    with pytest.raises(ValueError, match="stale_ms"):
        JitterParams(hold_ms=3000)
    with pytest.raises(TypeError, match="max_frames"):
        JitterParams(max_frames=10.5)
    with pytest.raises(TypeError, match="comfort_noise"):
        JitterParams(comfort_noise=1)


def test_frame_size_is_a_parameter():
    p = JitterParams(frame_ms=10, frame_bytes=80)
    jb = JitterBuffer(p)
    for i in range(10):
        if i != 4:
            jb.push(i + 1, i * 10, bytes([0x10]) * 80, i * 0.01)
    out = jb.pop(0.2)
    assert [len(f.payload) for f in out] == [80] * len(out)
    assert [f.kind for f in out[:6]] == ["audio"] * 4 + ["concealed", "audio"]


def test_fillers_are_exactly_the_frames_inserted_while_holding():
    # 1 s clean, a lost slot (concealed: media time, not a filler), then a 300 ms stall
    # (held: fillers), then the rest in a burst.
    arrivals = [(i * 0.02, i + 1, i * FMS, frame_payload(i)) for i in range(50) if i != 30]
    arrivals += [(1.3, i + 1, i * FMS, frame_payload(i)) for i in range(50, 80)]
    jb = JitterBuffer()
    out = flat(drive(jb, arrivals, 3.0)[0])
    last_audio = max(i for i, f in enumerate(out) if f.kind == "audio")
    fillers = [f for f in out[:last_audio] if f.filler]
    assert all(f.kind != "audio" and f.source_ts_ms is None for f in out if f.filler)
    assert len(fillers) >= 10  # the stall: ~300 ms held
    lost = [f for f in out if f.source_ts_ms == 30 * FMS]
    assert len(lost) == 1 and lost[0].kind == "concealed" and not lost[0].filler
    # Without the fillers, what is left is the media in order, each slot once, the lost
    # slot concealed in its place: the recogniser hears the words at their own pace.
    media = [f.source_ts_ms for f in out[: last_audio + 1] if not f.filler]
    assert media == sorted(set(media)) and media[0] == 0 and media[-1] == 79 * FMS
    s = jb.stats()
    assert len(media) == 80 - s.dropped_quiet - s.dropped_speech - s.skipped


def test_quietest():
    assert quietest([]) == 0
    assert quietest([5.0]) == 0
    assert quietest([5.0, 3.0, 3.0, 4.0]) == 1  # the earliest of equals
    assert quietest([1.0, 3.0]) == 0


def test_speech_dropped_to_catch_up_is_the_quietest_just_ahead():
    # After a stall, nothing quiet to drop: the buffer must drop speech, and it picks,
    # among the frames buffered in the next drop_choice_ms, the quietest.
    n0 = 3000

    def level(i: int) -> int:
        if i < n0:  # a pause every 10 frames keeps the noise floor down
            return 20 if i % 10 == 0 else 8000
        return 5000 if i % 3 == 2 else 8000  # every third frame softer, none quiet

    def payload(i: int) -> bytes:
        body = ulaw_encode((np.sin(np.arange(FB) * 0.3) * level(i)).astype(np.int16))
        return body[: FB - 4] + bytes([i & 0xFF, (i >> 8) & 0xFF, 0, 0x5A])

    # 60 s clean, then a 340 ms stall (within the hold limit), then a burst
    arrivals = [(i * 0.02, i + 1, i * FMS, payload(i)) for i in range(n0)]
    arrivals += [(max(60.34, i * 0.02), i + 1, i * FMS, payload(i)) for i in range(n0, n0 + 300)]
    jb = JitterBuffer(JitterParams(drop_choice_ms=60))
    out = flat(drive(jb, arrivals, 68.0)[0])
    s = jb.stats()
    assert s.dropped_quiet == 0 and s.lost_late == 0
    # A spliced frame is reported under the frame after the dropped one.
    played = {f.source_ts_ms // FMS for f in out if f.kind == "audio"}
    gone = sorted(set(range(n0, n0 + 300)) - played)
    assert s.dropped_speech == len(gone) >= 5
    assert all(level(i) == 5000 for i in gone)


@given(
    st.lists(st.floats(-50, 2000, allow_nan=False), min_size=1, max_size=400),
    st.floats(0.01, 1.0),
    st.floats(-50, 2000, allow_nan=False),
)
def test_target_quantile_matches_numpy_and_is_skipped_only_when_it_cannot_rise(devs, q, target):
    from callbridge.codecs.jitterbuffer import quantile

    values = np.array(devs)
    assert quantile(values, q) == pytest.approx(float(np.quantile(values, q)), abs=1e-9)
    buf = JitterBuffer(JitterParams(quantile=q))
    buf._dev[: len(devs)] = values
    buf._dev_n = len(devs)
    buf._target = target
    if not buf._may_rise():
        assert float(np.quantile(values, q)) <= target + 1e-9
