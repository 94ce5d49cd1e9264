"""Caller audio for tests and benchmarks: speech from the embedded TTS, and the noises a
caller's side carries (``noises_8k``, ``hard_noises_8k``) that must not barge in."""

from __future__ import annotations

import numpy as np

from callbridge.codecs.resample import StreamingResampler
from callbridge.speech.tts import EspeakTTS


def speech(tts: EspeakTTS, text: str) -> np.ndarray:
    """``text`` spoken by ``tts``, as int16 at 8 kHz."""
    chunks: list[np.ndarray] = []
    tts.synthesize(text, chunks.append)
    return StreamingResampler(tts.sample_rate, 8000).process(np.concatenate(chunks))


_pipers: dict[float, object] = {}


def natural_speech(text: str, length_scale: float = 1.1) -> np.ndarray:
    """``text`` spoken by the Piper voice (a human-sounding caller), as int16 at 8 kHz;
    ``length_scale`` > 1 speaks slower. Without sampling noise: the same text gives the same
    audio, in every run. The engine is loaded in this process on first use."""
    from callbridge.speech.piper import PiperEngine

    if length_scale not in _pipers:
        _pipers[length_scale] = PiperEngine(threads=1, length_scale=length_scale, noise=False)
    piper = _pipers[length_scale]
    assert isinstance(piper, PiperEngine)
    return StreamingResampler(piper.sample_rate, 8000).process(piper.synthesize(text))


LONG_GREETING = (
    "Hello, and thanks for calling the appointment desk. I can book, move or cancel an "
    "appointment for you, and tell you our opening hours. How can I help you today?"
)


SR = 8000


def _burst(
    out: np.ndarray,
    rng: np.random.Generator,
    at_s: float,
    dur_s: float,
    level: float,
    shape: np.ndarray | None = None,
) -> None:
    """Add a decaying noise burst (optionally filtered by ``shape``) to ``out`` at ``at_s``."""
    n = int(dur_s * SR)
    x = rng.normal(0, level, n) * np.exp(-np.arange(n) / (0.3 * n))
    if shape is not None:
        x = np.convolve(x, shape, mode="same")
    out[int(at_s * SR) : int(at_s * SR) + n] += x


def _add(out: np.ndarray, at_s: float, x: np.ndarray) -> None:
    out[int(at_s * SR) : int(at_s * SR) + len(x)] += x


def _bark(freq: float) -> np.ndarray:
    """A harmonic burst of 120 ms."""
    t = np.arange(int(0.12 * SR)) / SR
    return 6000 * np.sign(np.sin(2 * np.pi * freq * t)) * np.exp(-t / 0.05)


def _breath(rng: np.random.Generator, seconds: float, level: float, smooth: int) -> np.ndarray:
    """Slowly modulated, low-passed noise."""
    n = int(seconds * SR)
    breath = np.convolve(rng.normal(0, level, n), np.ones(smooth) / smooth, mode="same")
    return breath * (0.5 + 0.5 * np.sin(np.linspace(0, 4 * np.pi, n)))


def noises_8k(seed: int = 7) -> np.ndarray:
    """A door slam, a cough, two dog barks and breathing, with pauses: 3 s at 8 kHz."""
    rng = np.random.default_rng(seed)
    out = np.zeros(3 * SR)
    _burst(out, rng, 0.1, 0.06, 12000)  # door slam
    _burst(out, rng, 0.6, 0.15, 6000, np.hanning(9) / 2)  # cough
    for at in (1.1, 1.4):  # barks
        _add(out, at, _bark(450))
    _add(out, 1.7, _breath(rng, 1.2, 400, 25))  # breathing: quiet
    return np.clip(out, -32768, 32767).astype(np.int16)


def hard_noises_8k(seed: int = 7) -> np.ndarray:
    """Noises close together, so that their sound runs on for longer than MIN_SPEECH_MS
    (what the speech-onset back-dating must not be fooled by): a door slam with a cough
    40 ms after it, two barks, 0.6 s of typing with a cough straight after it, then loud
    breathing 40 ms after that cough: 4 s at 8 kHz."""
    rng = np.random.default_rng(seed)
    out = np.zeros(4 * SR)
    _burst(out, rng, 0.1, 0.06, 12000)  # door slam
    _burst(out, rng, 0.2, 0.15, 6000, np.hanning(9) / 2)  # a cough 40 ms after it
    for at in (0.8, 1.05):  # two barks, 130 ms apart
        _add(out, at, _bark(400 + 100 * rng.random()))
    for k in range(14):  # typing: a click every 45 ms for 0.6 s
        _burst(out, rng, 1.7 + 0.045 * k, 0.008, 9000)
    _burst(out, rng, 2.35, 0.15, 6000, np.hanning(9) / 2)  # a cough straight after it
    _add(out, 2.54, _breath(rng, 1.0, 1500, 15))  # loud breathing, 40 ms after the cough
    return np.clip(out, -32768, 32767).astype(np.int16)
