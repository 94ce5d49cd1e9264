"""SoundOnset: where the caller's sound began, on synthetic and synthesised audio (no clock)."""

from __future__ import annotations

import numpy as np
import pytest

from callbridge.codecs.resample import StreamingResampler
from callbridge.speech.onset import SoundOnset

from .conftest import speech_8k

FRAME = 320  # 20 ms at 16 kHz


def feed_frames(so: SoundOnset, pcm: np.ndarray, t0: float = 50.0) -> list[tuple[float, float | None]]:
    """Feed 20 ms frames; frame k ends at t0 + 0.02 (k + 1). Returns [(end, since(end))]."""
    out = []
    for k in range(len(pcm) // FRAME):
        end = t0 + 0.02 * (k + 1)
        so.feed(pcm[k * FRAME : (k + 1) * FRAME], end)
        out.append((end, so.since(end)))
    return out


def tone(ms: float, peak: int) -> np.ndarray:
    n = int(ms * 16)
    return (peak * np.sin(2 * np.pi * 300 * np.arange(n) / 16000)).astype(np.int16)


def silence(ms: float) -> np.ndarray:
    return np.zeros(int(ms * 16), np.int16)


def test_onset_of_a_sound_to_the_block():
    so = SoundOnset()
    out = feed_frames(so, np.concatenate([silence(130), tone(300, 8000), silence(200)]))
    starts = {s for _, s in out if s is not None}
    assert len(starts) == 1
    assert starts.pop() == pytest.approx(50.130, abs=0.0021)  # one 2 ms block
    assert out[5][1] is None  # 100..120 ms: silence
    assert out[-1][1] is None  # 200 ms of silence after it: over


def test_a_quiet_start_does_not_count_until_it_is_audible():
    # -45 dBFS hiss first (below sound_peak: nothing), then -40..-30 dBFS (quiet: continues
    # a sound, does not start one), then loud: the sound begins where it became audible.
    pcm = np.concatenate([tone(100, 180), tone(100, 600), tone(200, 5000)])
    (start,) = {s for _, s in feed_frames(SoundOnset(), pcm) if s is not None}
    assert start == pytest.approx(50.2, abs=0.0021)


def test_a_short_pause_is_bridged_a_longer_one_is_not():
    so = SoundOnset(max_gap_ms=25)
    bridged = np.concatenate([tone(100, 5000), silence(16), tone(100, 600), silence(300)])
    assert sorted({s for _, s in feed_frames(so, bridged) if s is not None}) == [pytest.approx(50.0)]
    so = SoundOnset(max_gap_ms=25)
    slam_then_cough = np.concatenate([tone(60, 12000), silence(40), tone(150, 5000), silence(300)])
    starts = sorted({s for _, s in feed_frames(so, slam_then_cough) if s is not None})
    assert starts == [pytest.approx(50.0), pytest.approx(50.1, abs=0.0021)]


def test_onset_of_synthesised_speech_is_its_first_audible_sample():
    speech = speech_8k("Hold on a second.")
    lead = np.zeros(8000, np.int16)
    pcm16 = StreamingResampler(8000, 16000).process(np.concatenate([lead, speech, lead]))
    first_audible = 50.0 + np.nonzero(np.abs(pcm16.astype(np.int32)) >= 1000)[0][0] / 16000
    starts = [s for _, s in feed_frames(SoundOnset(), pcm16) if s is not None]
    assert starts and abs(starts[0] - first_audible) <= 0.002  # the block it is in
    assert starts[0] > 50.9  # not in the second of silence before it


def test_pending_samples_and_odd_chunks_give_the_same_onset():
    pcm = np.concatenate([silence(97), tone(200, 8000), silence(100)])
    whole = SoundOnset()
    whole.feed(pcm, 10.0 + len(pcm) / 16000)
    chunked, pos = SoundOnset(), 0
    for n in (7, 100, 333, 1000, 2000, len(pcm)):
        part = pcm[pos : pos + n]
        pos += len(part)
        chunked.feed(part, 10.0 + pos / 16000)
    end = 10.0 + (97 + 200) / 1000
    assert whole.since(end) == pytest.approx(chunked.since(end)) == pytest.approx(10.096, abs=0.0021)


def test_validation():
    for kwargs in (
        {"rate": 4000},
        {"block_ms": 0.5},
        {"block_ms": 2.03},
        {"audible_peak": 0},
        {"sound_peak": 2000},
        {"max_gap_ms": 500},
    ):
        with pytest.raises(ValueError):
            SoundOnset(**kwargs)
    so = SoundOnset()
    with pytest.raises(TypeError):
        so.feed(np.zeros(320, np.float32), 1.0)
    with pytest.raises(TypeError):
        so.feed(np.zeros((2, 160), np.int16), 1.0)
    so.feed(silence(20), 2.0)
    with pytest.raises(ValueError, match="backwards"):
        so.feed(silence(20), 1.0)
    so.reset()
    so.feed(silence(20), 1.0)
