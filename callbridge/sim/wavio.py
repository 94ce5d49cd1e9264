"""WAV files in and out (stdlib ``wave``, PCM only).

``read_wav(path, rate)``: 8/16/32-bit PCM, mono or stereo (mixed down), any rate
(resampled with the streaming resampler) -> int16 mono at ``rate``. Anything else
(compressed WAV, not a WAV) raises ``ValueError`` naming the file. At most
``MAX_WAV_SECONDS`` are read.
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from ..codecs.resample import StreamingResampler

MAX_WAV_SECONDS = 600


def read_wav(path: str | Path, rate: int = 8000) -> np.ndarray:
    try:
        with wave.open(str(path), "rb") as w:
            width, channels, src_rate = w.getsampwidth(), w.getnchannels(), w.getframerate()
            frames = w.readframes(min(w.getnframes(), MAX_WAV_SECONDS * src_rate))
    except (wave.Error, EOFError) as exc:
        raise ValueError(f"{path}: not a PCM WAV file ({exc})") from None
    if width == 1:
        pcm = (np.frombuffer(frames, np.uint8).astype(np.int16) - 128) << 8
    elif width == 2:
        pcm = np.frombuffer(frames, "<i2")
    elif width == 4:
        pcm = (np.frombuffer(frames, "<i4") >> 16).astype(np.int16)
    else:
        raise ValueError(f"{path}: unsupported sample width {width * 8} bits")
    if channels > 1:
        pcm = pcm.reshape(-1, channels).mean(axis=1).astype(np.int16)
    if src_rate != rate:
        pcm = StreamingResampler(src_rate, rate).process(np.ascontiguousarray(pcm, dtype=np.int16))
    return np.ascontiguousarray(pcm, dtype=np.int16)


def write_wav(path: str | Path, pcm: np.ndarray, rate: int) -> None:
    """int16 samples, shape (n,) mono or (n, channels)."""
    pcm = np.asarray(pcm, dtype="<i2")
    channels = 1 if pcm.ndim == 1 else pcm.shape[1]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
