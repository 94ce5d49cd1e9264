"""Endpointer: synthetic probability sequences and injected times (no model, no clock)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callbridge.speech.endpoint import Endpointer, SpeechEnd, SpeechStart, run_start

W = 0.032  # Silero window, seconds


def feed(ep: Endpointer, probs, t0: float = 100.0, dt: float = W):
    """Feed probabilities at regular times; returns [(now, event)]."""
    out = []
    for i, p in enumerate(probs):
        now = t0 + i * dt
        out += [(now, e) for e in ep.update(p, now)]
    return out


def seconds(p: float, s: float) -> list[float]:
    return [p] * round(s / W)


def test_one_turn_start_and_end_times():
    ep = Endpointer(min_speech_ms=200, end_silence_ms=500, pre_roll_ms=300)
    probs = seconds(0.02, 1.0) + seconds(0.95, 1.5) + seconds(0.02, 1.5)
    ev = feed(ep, probs)
    assert [type(e) for _, e in ev] == [SpeechStart, SpeechEnd]
    (t_start, start), (t_end, end) = ev
    first_speech = 100.0 + 31 * W  # index of the first 0.95 window
    assert start.at == pytest.approx(first_speech)
    assert start.audio_from == pytest.approx(first_speech - 0.3)
    assert 0.2 <= t_start - start.at < 0.2 + W  # after min_speech, promptly
    last_speech = 100.0 + (31 + 47 - 1) * W
    assert end.at_last_speech == pytest.approx(last_speech)
    assert end.at_detected == t_end
    assert 0.5 <= end.at_detected - end.at_last_speech < 0.5 + W
    assert not end.forced
    assert not ep.in_speech


@pytest.mark.parametrize("silence_ms", [300, 500, 800])
def test_end_silence_is_configurable(silence_ms):
    ep = Endpointer(end_silence_ms=silence_ms)
    ev = feed(ep, seconds(0.9, 1.0) + seconds(0.0, 2.0))
    end = ev[-1][1]
    assert isinstance(end, SpeechEnd)
    assert silence_ms / 1000 <= end.at_detected - end.at_last_speech < silence_ms / 1000 + W


@pytest.mark.parametrize("burst_s", [0.032, 0.064, 0.128, 0.16])
def test_short_bursts_do_not_start_a_turn(burst_s):
    """A cough / door slam shorter than min_speech_ms: nothing."""
    ep = Endpointer(min_speech_ms=200)
    probs = seconds(0.01, 0.5) + seconds(0.99, burst_s) + seconds(0.01, 0.5)
    probs = probs * 5  # several bursts
    assert feed(ep, probs) == []


def test_min_speech_boundary():
    # Runs last (n - 1) * W in this measure: 7 windows = 192 ms, 8 = 224 ms.
    assert feed(Endpointer(min_speech_ms=200), [0.0] + [0.9] * 7 + [0.0] * 30) == []
    ev = feed(Endpointer(min_speech_ms=200), [0.0] + [0.9] * 8 + [0.0] * 30)
    assert [type(e) for _, e in ev] == [SpeechStart, SpeechEnd]


def test_min_speech_zero_starts_on_first_window():
    ev = feed(Endpointer(min_speech_ms=0), [0.0, 0.8])
    assert ev == [(100.0 + W, SpeechStart(100.0 + W, 100.0 + W - 0.3))]


def test_hysteresis():
    ep = Endpointer(threshold=0.5)  # neg_threshold 0.35
    assert ep.neg_threshold == pytest.approx(0.35)
    # 0.4 alone never starts a turn ...
    assert feed(ep, [0.4] * 100) == []
    # ... but does not end one either; nor does it break a starting run.
    ep = Endpointer(threshold=0.5, end_silence_ms=300)
    ev = feed(ep, [0.6] + [0.4] * 20 + [0.2] * 20)
    assert [type(e) for _, e in ev] == [SpeechStart, SpeechEnd]
    assert ev[1][1].at_last_speech == pytest.approx(100.0 + 20 * W)
    # A dip below neg_threshold restarts the candidate run.
    ep = Endpointer(threshold=0.5, min_speech_ms=200)
    assert feed(ep, ([0.9] * 6 + [0.3]) * 10) == []


def test_pauses_between_words_are_bridged():
    ep = Endpointer(end_silence_ms=500)
    word, pause = seconds(0.9, 0.4), seconds(0.05, 0.35)
    ev = feed(ep, (word + pause) * 4 + seconds(0.05, 1.0))
    assert [type(e) for _, e in ev] == [SpeechStart, SpeechEnd]


def test_two_turns():
    ep = Endpointer(end_silence_ms=300)
    turn = seconds(0.9, 0.6) + seconds(0.0, 0.6)
    ev = feed(ep, turn * 2)
    assert [type(e) for _, e in ev] == [SpeechStart, SpeechEnd, SpeechStart, SpeechEnd]


def test_max_speech_forces_an_end_then_restarts():
    ep = Endpointer(min_speech_ms=100, max_speech_ms=2000)
    ev = feed(ep, seconds(0.9, 3.0))
    kinds = [type(e) for _, e in ev]
    assert kinds == [SpeechStart, SpeechEnd, SpeechStart]
    forced = ev[1][1]
    assert forced.forced and forced.at_detected - ev[0][1].at >= 2.0
    assert ev[2][1].at > forced.at_detected  # a new run after the cut


def test_finish_closes_a_turn():
    ep = Endpointer()
    feed(ep, seconds(0.9, 1.0))
    assert ep.in_speech
    [end] = ep.finish(200.0)
    assert end.forced and end.at_detected == 200.0
    assert not ep.in_speech and ep.finish(201.0) == []


def test_irregular_times_use_now_not_window_counts():
    ep = Endpointer(min_speech_ms=200, end_silence_ms=500)
    assert ep.update(0.9, 10.0) == []
    assert ep.update(0.9, 10.05) == []
    assert ep.update(0.9, 10.25) == [SpeechStart(10.0, 9.7)]
    assert ep.update(0.1, 10.5) == []
    assert ep.update(0.1, 10.749) == []
    assert ep.update(0.1, 10.75) == [SpeechEnd(10.25, 10.75)]


@pytest.mark.parametrize("bad", [99, 3001, -1, math.nan, "500", True])
def test_end_silence_range(bad):
    with pytest.raises(ValueError):
        Endpointer(end_silence_ms=bad)


def test_other_validation():
    Endpointer(end_silence_ms=100)
    Endpointer(end_silence_ms=3000)
    for kwargs in (
        {"threshold": 0.0},
        {"threshold": 1.0},
        {"threshold": 0.5, "neg_threshold": 0.6},
        {"neg_threshold": 0.0},
        {"min_speech_ms": -1},
        {"min_speech_ms": 2001},
        {"pre_roll_ms": -5},
        {"max_speech_ms": 10},
    ):
        with pytest.raises(ValueError):
            Endpointer(**kwargs)
    ep = Endpointer()
    for p in (-0.1, 1.1, math.nan):
        with pytest.raises(ValueError):
            ep.update(p, 1.0)
    ep.update(0.5, 2.0)
    with pytest.raises(ValueError, match="backwards"):
        ep.update(0.5, 1.0)
    ep.reset()
    ep.update(0.5, 1.0)  # reset forgets the clock


# --------------------------------------------------------------------------- #
# Properties
# --------------------------------------------------------------------------- #

windows = st.lists(
    st.tuples(
        st.one_of(st.floats(0.0, 1.0), st.sampled_from([0.0, 0.34, 0.35, 0.5, 1.0])),
        st.floats(0.0, 0.2),  # time step, may be 0
    ),
    max_size=300,
)


@settings(max_examples=300, deadline=None)
@given(
    seq=windows,
    min_speech_ms=st.sampled_from([0, 100, 200, 400]),
    end_silence_ms=st.sampled_from([100, 300, 500, 800, 3000]),
)
def test_events_are_consistent_with_the_input(seq, min_speech_ms, end_silence_ms):
    ep = Endpointer(min_speech_ms=min_speech_ms, end_silence_ms=end_silence_ms, max_speech_ms=600000)
    thr, neg = ep.threshold, ep.neg_threshold
    min_s, sil = min_speech_ms / 1000, end_silence_ms / 1000
    now, hist, in_speech = 0.0, [], False
    for p, dt in seq:
        now += dt
        hist.append((now, p))
        events = ep.update(p, now)
        assert len(events) <= 1
        for e in events:
            if isinstance(e, SpeechStart):
                assert not in_speech
                in_speech = True
                assert now - e.at >= min_s - 1e-9
                # the run: a window at `at` over threshold, none below neg since
                assert any(
                    t == e.at and q >= thr and all(q2 >= neg for _, q2 in hist[i:])
                    for i, (t, q) in enumerate(hist)
                )
            else:
                assert in_speech and not e.forced
                in_speech = False
                assert e.at_detected == now
                assert now - e.at_last_speech >= sil - 1e-9
                # silence since the last speech window, detected promptly
                j = max(i for i, (_, q) in enumerate(hist) if q >= neg)
                assert hist[j][0] == e.at_last_speech
                after = hist[j + 1 :]
                assert after and all(q < neg for _, q in after)
                assert all(t - e.at_last_speech < sil for t, _ in after[:-1])
        assert ep.in_speech == in_speech


@settings(max_examples=200, deadline=None)
@given(
    bursts=st.lists(
        st.tuples(st.integers(1, 6), st.integers(1, 40), st.floats(0.35, 1.0)),
        max_size=30,
    )
)
def test_bursts_shorter_than_min_speech_never_start_a_turn(bursts):
    # min_speech 200 ms; bursts of at most 6 windows span at most 5 * 32 = 160 ms.
    ep = Endpointer(min_speech_ms=200)
    probs = []
    for n_speech, n_gap, level in bursts:
        probs += [level] * n_speech + [0.1] * n_gap
    assert feed(ep, probs) == []


# --------------------------------------------------------------------------- #
# Back-dating to the sound's onset, and starts between windows
# --------------------------------------------------------------------------- #


def test_run_start_is_backdated_to_the_sound_but_bounded():
    assert run_start(1.0, None, 0.08) == 1.0
    assert run_start(1.0, 1.01, 0.08) == 1.0  # the sound began after the window: no change
    assert run_start(1.0, 0.95, 0.08) == pytest.approx(0.95)
    assert run_start(1.0, 0.5, 0.08) == pytest.approx(0.92)  # at most max_backdate earlier
    assert run_start(1.0, 0.95, 0.0) == 1.0


def test_a_backdated_run_counts_min_speech_from_the_sound_onset():
    # Sound began at 100.0; the VAD said speech from the window ending 100.096 (it began
    # at 100.064); min 200 ms: the turn starts at the first window >= 100.2, not 100.264.
    ep = Endpointer(min_speech_ms=200, window_ms=32, max_backdate_ms=80)
    ev = []
    for i, p in enumerate([0.1, 0.2, 0.9] + [0.95] * 10):
        now = 100.032 + i * W
        ev += [(now, e) for e in ep.update(p, now, sound_from=100.0)]
    ((now, start),) = ev
    assert start.at == pytest.approx(100.0)
    assert now == pytest.approx(100.032 + 6 * W)  # 100.224: the first window end >= 100.2
    # Without the sound's onset the same windows start the turn 64 ms later.
    plain = Endpointer(min_speech_ms=200, window_ms=32)
    ev = [
        (100.032 + i * W, e)
        for i, p in enumerate([0.1, 0.2, 0.9] + [0.95] * 10)
        for e in plain.update(p, 100.032 + i * W)
    ]
    assert ev[0][0] == pytest.approx(100.032 + 8 * W)


def test_backdating_never_excuses_the_vad_from_confirming():
    # A long sound, but the VAD says speech for only 96 ms of it: no turn, however far
    # back the sound began (max_backdate_ms 80 < 200 - 96).
    ep = Endpointer(min_speech_ms=200, window_ms=32, max_backdate_ms=80)
    probs = [0.1] * 10 + [0.9] * 3 + [0.1] * 10
    assert [e for i, p in enumerate(probs) for e in ep.update(p, 100 + i * W, sound_from=99.0)] == []
    assert Endpointer(window_ms=32, max_backdate_ms=0).max_backdate == 0
    with pytest.raises(ValueError):
        Endpointer(min_speech_ms=100, max_backdate_ms=150)


def test_advance_starts_between_windows_only_while_sounding():
    def run(sounding: bool) -> list:
        ep = Endpointer(min_speech_ms=200, window_ms=32)
        out = []
        # windows at 0.032 k; two frames between windows, 11 ms apart
        for k in range(1, 12):
            out += [(k * W, e) for e in ep.update(0.9, k * W)]
            for f in range(1, 3):
                t = k * W + f * 0.011
                out += [(t, e) for e in ep.advance(t, sounding)]
        return out

    ((t, start),) = run(True)
    assert start.at == pytest.approx(0.0)  # the first window began at 0
    assert t == pytest.approx(6 * W + 0.011)  # the first frame at or after 200 ms
    ((t, _),) = run(False)  # silence since the last window: wait for the VAD
    assert t == pytest.approx(7 * W)
    ep = Endpointer()
    assert ep.advance(1.0, True) == []  # no run: nothing
    with pytest.raises(ValueError, match="backwards"):
        ep.advance(0.5, True)


@settings(max_examples=200, deadline=None)
@given(
    seq=st.lists(st.tuples(st.floats(0.0, 1.0), st.floats(0.0, 0.5), st.booleans()), max_size=200),
    backdate_ms=st.sampled_from([0, 40, 80, 200]),
)
def test_vad_confirms_at_least_min_speech_minus_backdate(seq, backdate_ms):
    """Whatever the sound tracker says, a start needs the VAD's windows (>= neg since one
    >= threshold) to span at least min_speech - max_backdate before it is reported."""
    ep = Endpointer(min_speech_ms=200, window_ms=32, max_backdate_ms=backdate_ms)
    now, hist = 10.0, []
    for p, back, sounding in seq:
        now += 0.02
        hist.append((now, p))
        events = ep.update(p, now, sound_from=now - back) + ep.advance(now, sounding)
        for e in events:
            if isinstance(e, SpeechStart):
                j = (
                    max(i for i, (_, q) in enumerate(hist) if q < ep.neg_threshold) + 1
                    if any(q < ep.neg_threshold for _, q in hist)
                    else 0
                )
                first = next(t for t, q in hist[j:] if q >= ep.threshold)
                assert now - (first - 0.032) >= 0.2 - backdate_ms / 1000 - 1e-9
                assert e.at >= first - 0.032 - backdate_ms / 1000 - 1e-9
                assert now - e.at >= 0.2 - 1e-9


def test_cut_ends_the_turn_now_and_wait_longer_holds_it_for_the_pause_in_progress():
    """What the words of a pause say (``speech.turnend``): ``cut`` ends the turn at once;
    ``wait_longer`` stretches only the pause in progress; speech resets it."""
    ep = Endpointer(min_speech_ms=200, end_silence_ms=500)
    feed(ep, seconds(0.95, 0.6))
    last = ep.last_speech
    assert ep.in_speech and last == pytest.approx(100.0 + (len(seconds(0.95, 0.6)) - 1) * W)
    end = ep.cut(last + 0.2)
    assert end == SpeechEnd(last, last + 0.2) and not ep.in_speech and ep.last_speech is None
    assert ep.cut(last + 0.3) is None

    ep = Endpointer(min_speech_ms=200, end_silence_ms=500)
    t = 200.0
    feed(ep, seconds(0.95, 0.6), t0=t)
    ep.wait_longer(1200)
    t_quiet = t + len(seconds(0.95, 0.6)) * W
    assert feed(ep, seconds(0.02, 1.0), t0=t_quiet) == []  # 1 s of pause: still the turn
    t_again = t_quiet + len(seconds(0.02, 1.0)) * W
    feed(ep, seconds(0.95, 0.3), t0=t_again)  # speech again: the next pause is a normal one
    t_end = t_again + len(seconds(0.95, 0.3)) * W
    ev = feed(ep, seconds(0.02, 0.7), t0=t_end)
    assert [type(e) for _, e in ev] == [SpeechEnd]
    assert 0.5 <= ev[0][0] - ev[0][1].at_last_speech < 0.5 + W
    with pytest.raises(ValueError, match="silence_ms"):
        ep.wait_longer(5000)
