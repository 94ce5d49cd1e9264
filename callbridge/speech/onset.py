"""Where the caller's sound began, to the block (pure: no I/O, no model, no clock).

The VAD's probability crosses its threshold one to three windows after speech began, so
``MIN_SPEECH_MS`` counted from there would make every barge-in 30-100 ms late.
``SoundOnset`` follows the audio itself: ``feed(pcm, end)`` takes int16 PCM at ``rate`` whose
last sample was captured at ``end`` (seconds, the caller's clock), and ``since(now)`` is the
start of the stretch of sound still going at ``now`` (else None). A stretch starts at a block
whose peak reaches ``audible_peak`` (-30 dBFS) and ends after ``max_gap_ms`` without one
reaching ``sound_peak`` (-40 dBFS). The endpointer back-dates a confirmed run to it.

Defaults, limits and cost: docs/speech.md.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["SoundOnset"]


class SoundOnset:
    """Per-stream tracker of the current stretch of audible sound; see the module docstring."""

    def __init__(
        self,
        rate: int = 16000,
        *,
        block_ms: float = 2.0,
        audible_peak: int = 1000,
        sound_peak: int = 300,
        max_gap_ms: float = 20.0,
    ) -> None:
        if not 8000 <= rate <= 48000:
            raise ValueError(f"rate must be 8000..48000, got {rate!r}")
        if not 1 <= block_ms <= 20 or (rate * block_ms / 1000) % 1:
            raise ValueError(f"block_ms must be 1..20 and a whole number of samples, got {block_ms!r}")
        if not 1 <= audible_peak <= 32767:
            raise ValueError(f"audible_peak must be 1..32767, got {audible_peak!r}")
        if not 1 <= sound_peak <= audible_peak:
            raise ValueError(f"sound_peak must be 1..audible_peak, got {sound_peak!r}")
        if not 0 <= max_gap_ms <= 200:
            raise ValueError(f"max_gap_ms must be 0..200, got {max_gap_ms!r}")
        self.rate = rate
        self.block = int(rate * block_ms / 1000)
        self.audible_peak = audible_peak
        self.sound_peak = sound_peak
        self.max_gap = max_gap_ms / 1000.0
        self._pending = np.zeros(0, np.int16)
        self.reset()

    def reset(self) -> None:
        """Forget the stretch in progress and the last ``end``."""
        self._start: float | None = None  # start of the current stretch
        self._last_loud = -math.inf  # end of its last block at sound_peak or above
        self._last_end = -math.inf
        self._pending = self._pending[:0]

    def feed(self, pcm: np.ndarray, end: float) -> None:
        """Account ``pcm``, whose last sample was captured at ``end`` (seconds)."""
        if not isinstance(pcm, np.ndarray) or pcm.dtype != np.int16 or pcm.ndim != 1:
            raise TypeError("SoundOnset.feed expects a 1-D numpy int16 array")
        if not end >= self._last_end:
            raise ValueError(f"time went backwards: {end!r} < {self._last_end!r}")
        self._last_end = end
        if len(self._pending):
            pcm = np.concatenate([self._pending, pcm])
        b = self.block
        whole = len(pcm) // b * b
        self._pending = pcm[whole:].copy()
        if not whole:
            return
        peaks = np.abs(pcm[:whole].reshape(-1, b).astype(np.int32)).max(axis=1)
        first = end - len(pcm) / self.rate  # start of block 0
        span = b / self.rate
        for i in np.flatnonzero(peaks >= self.sound_peak):
            start = first + i * span
            if start - self._last_loud > self.max_gap:  # after a pause: a new sound, if loud
                self._start = None
            if self._start is None and peaks[i] < self.audible_peak:
                continue
            if self._start is None:
                self._start = start
            self._last_loud = start + span

    def since(self, now: float) -> float | None:
        """Start of the stretch of sound still going on at ``now``, or None."""
        if self._start is None or now - self._last_loud > self.max_gap:
            return None
        return self._start
