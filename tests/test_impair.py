"""Network impairment model for the simulator: determinism, loss, stalls, TCP ordering,
Twilio-style numbering, CLI parsers."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callbridge.sim.impair import (
    DEFAULT_GAP_MS,
    Impairment,
    delays_ms,
    parse_gap,
    parse_jitter,
    parse_loss,
)


def test_clean_line_delivers_every_frame_on_time():
    s = Impairment().schedule(100)
    assert [(d.at_s, d.chunk, d.timestamp_ms, d.frame) for d in s] == [
        (i * 0.02, i + 1, i * 20, i) for i in range(100)
    ]
    assert Impairment().schedule(0) == []


def test_deterministic_for_a_seed():
    imp = dict(loss=0.05, jitter=(200, 800), gap=(100, 400), noise_ms=5.0)
    a = Impairment(seed=42, **imp).schedule(5000)
    assert a == Impairment(seed=42, **imp).schedule(5000)
    assert a != Impairment(seed=43, **imp).schedule(5000)


def test_loss_rate_is_as_requested_and_shows_as_timestamp_gaps():
    n = 50_000
    s = Impairment(loss=0.03, seed=1).schedule(n)
    assert 1 - len(s) / n == pytest.approx(0.03, abs=0.003)
    # Twilio numbers the messages it sends: chunk contiguous, timestamp jumps
    assert [d.chunk for d in s] == list(range(1, len(s) + 1))
    steps = np.diff([d.timestamp_ms for d in s])
    assert steps.min() == 20 and (steps > 20).sum() > 0.02 * n
    assert all(d.timestamp_ms == d.frame * 20 for d in s)


def test_chunk_gaps_option_numbers_chunks_by_frame():
    s = Impairment(loss=0.1, seed=2, chunk_gaps=True).schedule(1000)
    assert all(d.chunk == d.frame + 1 for d in s)


def test_no_reordering_and_bursts_after_stalls():
    s = Impairment(jitter=(200, 800), noise_ms=5.0, seed=3).schedule(10_000)
    at = [d.at_s for d in s]
    assert at == sorted(at) and [d.frame for d in s] == sorted(d.frame for d in s)
    _, counts = np.unique(at, return_counts=True)
    assert counts.max() >= 10  # everything queued in a stall arrives at once


def test_stalls_stay_within_their_bounds():
    lo, hi = 200, 800
    d = np.array(delays_ms(Impairment(jitter=(lo, hi), seed=4).schedule(20_000)))
    assert d.min() >= 0 and d.max() <= hi + 1e-6
    assert d.max() >= lo  # stalls do happen
    assert (d > 1e-6).mean() < 0.5  # and the line is mostly clean between them
    # the longest wait in each burst (the stall's length) is within [lo, hi]
    s = Impairment(jitter=(lo, hi), seed=4).schedule(20_000)
    worst = {}
    for x, dl in zip(s, d, strict=True):
        worst[x.at_s] = max(worst.get(x.at_s, 0.0), dl)
    stalls = [w for w in worst.values() if w > 1e-6]
    assert len(stalls) > 50 and min(stalls) > 0 and max(stalls) <= hi + 1e-6
    assert np.percentile(stalls, 90) >= lo  # most bursts waited a whole stall


def test_stall_spacing_follows_stall_every():
    s = Impairment(jitter=(100, 100), stall_every_s=(2.0, 2.0), seed=5).schedule(3000)
    bursts = sorted({d.at_s for d, dl in zip(s, delays_ms(s), strict=True) if dl > 1e-6})
    assert bursts[0] == pytest.approx(2.1)
    assert np.allclose(np.diff(bursts), 2.1)


def test_noise_is_bounded_and_monotone():
    s = Impairment(noise_ms=5.0, seed=6).schedule(5000)
    d = np.array(delays_ms(s))
    assert d.min() >= 0 and d.max() <= 5.0 + 1e-9
    assert all(a.at_s <= b.at_s for a, b in itertools.pairwise(s))


def test_gaps_are_runs_of_lost_frames_within_bounds():
    imp = Impairment(gap=(100, 400), gap_every_s=(1.0, 3.0), seed=7)
    lost = imp.lost_frames(10_000)
    runs, n = [], 0
    for x in [*lost, False]:
        if x:
            n += 1
        elif n:
            runs.append(n)
            n = 0
    assert len(runs) > 50 and min(runs) >= 5 and max(runs) <= 20
    s = imp.schedule(10_000)
    jumps = np.diff([d.timestamp_ms for d in s])
    assert set(jumps[jumps > 20] - 20) <= {r * 20 for r in runs}


def test_impairments_are_seeded_independently():
    """Turning loss on does not move the stalls: the frames still delivered arrive when
    they did without loss."""
    base = {d.frame: d.at_s for d in Impairment(jitter=(200, 800), seed=8).schedule(5000)}
    lossy = Impairment(jitter=(200, 800), loss=0.1, gap=(100, 300), seed=8).schedule(5000)
    assert all(base[d.frame] == d.at_s for d in lossy)


@settings(max_examples=60, deadline=None)
@given(
    loss=st.floats(0, 0.5),
    jitter=st.one_of(st.none(), st.tuples(st.integers(0, 1000), st.integers(0, 1000)).map(sorted).map(tuple)),
    gap=st.one_of(st.none(), st.tuples(st.integers(0, 500), st.integers(0, 500)).map(sorted).map(tuple)),
    noise=st.sampled_from([0.0, 3.0]),
    seed=st.integers(0, 2**32),
    n=st.integers(0, 400),
)
def test_schedule_invariants(loss, jitter, gap, noise, seed, n):
    imp = Impairment(loss=loss, jitter=jitter, gap=gap, noise_ms=noise, seed=seed, gap_every_s=(0.1, 1.0))
    s = imp.schedule(n)
    assert [d.chunk for d in s] == list(range(1, len(s) + 1))
    assert all(a.at_s <= b.at_s and a.frame < b.frame for a, b in itertools.pairwise(s))
    assert all(d.timestamp_ms == 20 * d.frame and 0 <= d.frame < n for d in s)
    lost = imp.lost_frames(n)
    assert [d.frame for d in s] == [i for i in range(n) if not lost[i]]
    bound = (jitter[1] if jitter else 0) + noise
    assert all(-1e-9 <= x <= bound + 1e-6 for x in delays_ms(s))


# --------------------------------------------------------------------------- parsers


@pytest.mark.parametrize(
    "text, want",
    [
        ("3%", 0.03),
        ("0.5%", 0.005),
        (" 10 % ", 0.10),
        ("0%", 0.0),
        ("0.03", 0.03),
        ("0", 0.0),
        (".2", 0.2),
    ],
)
def test_parse_loss(text, want):
    assert parse_loss(text) == pytest.approx(want)


@pytest.mark.parametrize(
    "text, msg",
    [
        ("", "bad loss"),
        ("abc", "bad loss"),
        ("-1%", "bad loss"),
        ("100%", "below 100%"),
        ("3", "did you mean '3%'"),
        ("1.0", "below 1"),
        ("3%%", "bad loss"),
        ("nan", "bad loss"),
    ],
)
def test_parse_loss_errors(text, msg):
    with pytest.raises(ValueError, match=msg):
        parse_loss(text)


@pytest.mark.parametrize(
    "text, want",
    [
        ("200-800ms", (200, 800)),
        ("200-800", (200, 800)),
        ("200ms-800ms", (200, 800)),
        (" 50 - 200 ms ", (50, 200)),
        ("0.2-0.8s", (200, 800)),
        ("300ms", (300, 300)),
        ("0-0", (0, 0)),
    ],
)
def test_parse_jitter(text, want):
    assert parse_jitter(text) == want


@pytest.mark.parametrize(
    "text, msg",
    [
        ("", "bad jitter"),
        ("800-200ms", "low bound above high"),
        ("200-800kb", "bad jitter"),
        ("1.5-2ms", "whole milliseconds"),
        ("-200-800ms", "bad jitter"),
        ("200ms-0.8s", "mixed units"),
        ("1-90000ms", "above 60000"),
        ("200-800-900", "bad jitter"),
    ],
)
def test_parse_jitter_errors(text, msg):
    with pytest.raises(ValueError, match=msg):
        parse_jitter(text)


def test_parse_gap_and_from_cli():
    assert parse_gap("100-400ms") == (100, 400)
    assert parse_gap("") == DEFAULT_GAP_MS
    with pytest.raises(ValueError, match="bad gap"):
        parse_gap("lots")
    imp = Impairment.from_cli(loss="3%", jitter="200-800ms", gap=True, seed=9)
    assert (imp.loss, imp.jitter, imp.gap, imp.seed) == (0.03, (200, 800), DEFAULT_GAP_MS, 9)
    assert Impairment.from_cli() == Impairment()
    assert Impairment.from_cli(gap="60-90ms").gap == (60, 90)
    with pytest.raises(TypeError, match="loss must be a string"):
        parse_loss(0.03)


@pytest.mark.parametrize(
    "kw, exc, msg",
    [
        (dict(loss=1.0), ValueError, "loss"),
        (dict(loss=-0.1), ValueError, "loss"),
        (dict(jitter=(800, 200)), ValueError, "jitter"),
        (dict(jitter=(1, 2, 3)), TypeError, "jitter"),
        (dict(gap=(0, 70_000)), ValueError, "gap"),
        (dict(stall_every_s=(0, 1)), ValueError, "stall_every_s"),
        (dict(seed=1.5), TypeError, "seed"),
        (dict(noise_ms=-1), ValueError, "noise_ms"),
        (dict(frame_ms=0), ValueError, "frame_ms"),
    ],
)
def test_impairment_validation(kw, exc, msg):
    with pytest.raises(exc, match=msg):
        Impairment(**kw)


def test_schedule_size_is_checked():
    with pytest.raises(ValueError, match="n_frames"):
        Impairment().schedule(-1)
    with pytest.raises(TypeError, match="n_frames"):
        Impairment().schedule(10.0)
