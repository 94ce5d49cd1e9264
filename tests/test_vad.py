"""Silero VAD on speech synthesised at test time and on generated noise."""

from __future__ import annotations

import gc

import numpy as np
import pytest

from callbridge.codecs.resample import StreamingResampler
from callbridge.speech import vad as vad_mod
from callbridge.speech.endpoint import Endpointer, SpeechEnd, SpeechStart
from callbridge.speech.tts import EspeakTTS
from callbridge.speech.vad import WINDOW_SAMPLES, Vad, preload

SR = 16000
FRAME = 320  # 20 ms

try:
    import onnxruntime  # noqa: F401 - imported only to see that it loads

    BACKENDS = ["onnxruntime", "native"]
except ImportError:  # the native backend alone still works
    BACKENDS = ["native"]

_cache: dict[str, np.ndarray] = {}


def speech16k(text: str, voice: str = "en-us") -> np.ndarray:
    key = f"{voice}:{text}"
    if key not in _cache:
        tts = EspeakTTS(voice=voice)
        chunks: list[np.ndarray] = []
        tts.synthesize(text, chunks.append)
        _cache[key] = StreamingResampler(tts.sample_rate, SR).process(np.concatenate(chunks))
    return _cache[key]


def i16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x), -32768, 32767).astype(np.int16)


def white(rng, seconds: float, rms: float) -> np.ndarray:
    return rng.normal(0.0, rms, int(seconds * SR))


def cough(rng, seconds: float = 0.2, peak: float = 20000.0) -> np.ndarray:
    """A short, loud, fast-decaying noise burst."""
    t = np.arange(int(seconds * SR)) / SR
    env = np.exp(-t / 0.05) * (1 - np.exp(-t / 0.004))
    x = np.convolve(rng.normal(0, 1, len(t)), np.ones(6) / 6, "same")
    return peak * env * x / np.abs(x).max()


def breathing(rng, seconds: float = 3.0, rms: float = 2000.0) -> np.ndarray:
    """Low-passed noise swelling in and out at 0.75 Hz."""
    n = int(seconds * SR)
    y = np.convolve(rng.normal(0, 1, n), np.ones(16) / 16, "same")
    y -= np.convolve(y, np.ones(200) / 200, "same")
    env = 0.5 * (1 - np.cos(2 * np.pi * 0.75 * np.arange(n) / SR))
    return rms * env * y / y.std()


def run_frames(v: Vad, pcm: np.ndarray) -> np.ndarray:
    probs: list[float] = []
    for i in range(0, len(pcm), FRAME):
        probs += v.process(pcm[i : i + FRAME])
    return np.array(probs)


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


def test_speech_vs_silence(backend):
    speech = speech16k("I would like to book an appointment on Tuesday at three pm")
    lead = np.zeros(SR, np.int16)
    probs = run_frames(Vad(backend=backend), np.concatenate([lead, speech, lead]))
    w = WINDOW_SAMPLES[SR]
    n_lead = len(lead) // w
    silence = np.concatenate([probs[: n_lead - 1], probs[-n_lead + 2 :]])
    assert silence.max() < 0.5
    core = probs[n_lead + 3 : n_lead + len(speech) // w - 3]  # inside the speech
    assert np.mean(core > 0.5) > 0.85, np.round(core, 2)


@pytest.mark.parametrize(
    "name", ["low white noise", "loud white noise", "white noise bursts", "cough", "breathing"]
)
def test_noise_is_mostly_not_speech(backend, name):
    rng = np.random.default_rng(7)
    gap = np.zeros(SR // 2)
    noise = {
        "low white noise": lambda: white(rng, 3.0, 50),
        "loud white noise": lambda: white(rng, 3.0, 3000),
        "white noise bursts": lambda: np.concatenate(
            [np.concatenate([white(rng, 0.25, 6000), gap]) for _ in range(4)]
        ),
        "cough": lambda: np.concatenate([gap, cough(rng), gap, cough(rng, 0.3), gap]),
        "breathing": lambda: breathing(rng),
    }[name]()
    probs = run_frames(Vad(backend=backend), i16(noise))
    assert np.mean(probs < 0.5) >= 0.95, np.round(probs, 2)


def test_window_accounting(backend):
    v = Vad(backend=backend)
    assert v.window_samples == 512 and v.window_ms == 32.0
    counts = [len(v.process(np.zeros(FRAME, np.int16))) for _ in range(8)]
    assert counts == [0, 1, 0, 1, 1, 0, 1, 1]  # 8 frames = 2560 samples = 5 windows
    assert v.windows == 5
    assert v.process(np.zeros(0, np.int16)) == []
    assert len(v.process(np.zeros(512 * 10 + 100, np.int16))) == 10


def test_chunking_does_not_matter(backend):
    rng = np.random.default_rng(1)
    x = np.concatenate([speech16k("Cancel my appointment"), i16(white(rng, 0.3, 200))])
    whole = Vad(backend=backend).process(x)
    v = Vad(backend=backend)
    pieces: list[float] = []
    i = 0
    for n in rng.integers(1, 900, size=1000):
        pieces += v.process(x[i : i + n])
        i += n
        if i >= len(x):
            break
    assert len(pieces) == len(whole) == len(x) // 512
    np.testing.assert_allclose(pieces, whole, atol=1e-6)


def test_reset_and_independent_streams(backend):
    a_pcm = speech16k("Yes that is correct")
    b_pcm = i16(white(np.random.default_rng(2), 2.0, 300))
    ref_a = Vad(backend=backend).process(a_pcm)
    ref_b = Vad(backend=backend).process(b_pcm)
    # Interleaved per frame: each Vad keeps its own state (shared model).
    va, vb = Vad(backend=backend), Vad(backend=backend)
    got_a, got_b = [], []
    for i in range(0, max(len(a_pcm), len(b_pcm)), FRAME):
        got_a += va.process(a_pcm[i : i + FRAME])
        got_b += vb.process(b_pcm[i : i + FRAME])
    np.testing.assert_allclose(got_a, ref_a, atol=1e-6)
    np.testing.assert_allclose(got_b, ref_b, atol=1e-6)
    va.process(np.zeros(100, np.int16))
    va.reset()
    assert va.windows == 0
    np.testing.assert_allclose(va.process(a_pcm), ref_a, atol=1e-6)


@pytest.mark.skipif(len(BACKENDS) < 2, reason="onnxruntime not installed")
def test_backends_agree():
    x = np.concatenate(
        [speech16k("Please reschedule it to tomorrow at ten thirty"), np.zeros(4000, np.int16)]
    )
    a = Vad(backend="onnxruntime").process(x)
    b = Vad(backend="native").process(x)
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_8khz():
    speech = StreamingResampler(SR, 8000).process(speech16k("Book me for Wednesday at noon"))
    v = Vad(sample_rate=8000)
    assert v.window_samples == 256
    probs = np.array(v.process(np.concatenate([np.zeros(8000, np.int16), speech])))
    assert probs[:28].max() < 0.5 and probs[34:].max() > 0.9


def test_native_engines_are_reused():
    v = Vad(backend="native")
    engine = v._engine
    v.close()
    v.close()
    with pytest.raises(RuntimeError):
        v.process(np.zeros(FRAME, np.int16))
    assert Vad(backend="native")._engine is engine  # taken from the free list
    gc.collect()  # ... and given back by the finalizer of the dropped Vad
    assert engine in vad_mod._native_free[SR]


def test_preload():
    assert preload() == Vad().backend
    assert preload("native") == "native"


def test_bad_input():
    with pytest.raises(ValueError):
        Vad(sample_rate=44100)
    with pytest.raises(ValueError):
        Vad(backend="torch")
    v = Vad()
    with pytest.raises(TypeError):
        v.process(np.zeros(FRAME, np.float32))
    with pytest.raises(TypeError):
        v.process([0] * FRAME)
    with pytest.raises(ValueError):
        v.process(np.zeros((2, FRAME), np.int16))


def test_vad_and_endpointer_find_one_turn_and_ignore_a_cough():
    """The chain a call runs: 20 ms frames -> VAD windows -> endpointer events."""
    rng = np.random.default_rng(3)
    speech = speech16k("Can I move my appointment to Friday morning")
    floor = lambda s: white(rng, s, 30)  # noqa: E731 - a quiet line
    pcm = i16(
        np.concatenate(
            [
                floor(0.5),
                cough(rng, 0.25) + floor(0.25),
                floor(0.5),
                speech + floor(len(speech) / SR),
                floor(1.5),
            ]
        )
    )
    speech_at = 0.5 + 0.25 + 0.5
    v, ep, events = Vad(), Endpointer(end_silence_ms=500), []
    k = 0  # windows so far: window k ends at stream time k * 32 ms
    for i in range(0, len(pcm), FRAME):
        for p in v.process(pcm[i : i + FRAME]):
            k += 1
            events += ep.update(p, k * v.window_ms / 1000)
    assert [type(e) for e in events] == [SpeechStart, SpeechEnd]
    start, end = events
    assert speech_at - 0.05 <= start.at <= speech_at + 0.3
    speech_end = speech_at + len(speech) / SR
    assert speech_end - 0.4 <= end.at_last_speech <= speech_end + 0.1
    assert end.at_detected - end.at_last_speech == pytest.approx(0.5, abs=0.04)
