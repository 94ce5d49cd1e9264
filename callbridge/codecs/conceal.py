"""What stands in for a missing 20 ms mu-law frame (pure: no I/O, no clock).

``Concealer.good(payload)`` after each frame of caller audio; ``conceal()`` for each
missing one: the last good frame repeated and faded out over ``conceal_ms`` (kind
``"concealed"``), then comfort noise at ``comfort_dbfs`` (or digital silence) (kind
``"comfort"``). Shared by the jitter buffer and the in-order path
(``codecs.jitterbuffer``, ``codecs.inorder``); the model: docs/audio.md.
"""

from __future__ import annotations

import numpy as np

from .g711 import ULAW_SILENCE, ulaw_decode, ulaw_encode

__all__ = ["COMFORT", "CONCEALED", "Concealer"]

CONCEALED, COMFORT = "concealed", "comfort"


class Concealer:
    """See the module docstring. One per stream; ``conceal_ms`` a whole number of frames
    or less (0: comfort noise at once)."""

    def __init__(
        self,
        frame_ms: int = 20,
        frame_bytes: int = 160,
        conceal_ms: int = 60,
        comfort_noise: bool = True,
        comfort_dbfs: float = -60.0,
        seed: int = 0,
    ) -> None:
        spf = frame_bytes
        nfade = conceal_ms // frame_ms
        self._ramps = [(1.0 - (i + np.arange(spf) / spf) / nfade).astype(np.float32) for i in range(nfade)]
        if comfort_noise:
            rms = 32768.0 * 10 ** (comfort_dbfs / 20)
            noise = np.random.default_rng(seed).normal(0.0, rms, (8, spf))
            pcm = np.clip(np.round(noise), -32768, 32767).astype(np.int16)
            self._comfort = [ulaw_encode(row) for row in pcm]
        else:
            self._comfort = [bytes([ULAW_SILENCE]) * spf]
        self._comfort_i = 0
        self._last_good: bytes | None = None
        self._run = 0  # concealment frames since the last good frame

    def good(self, payload: bytes) -> None:
        """A frame of caller audio went out: the next concealment repeats it."""
        self._last_good = payload
        self._run = 0

    def conceal(self) -> tuple[bytes, str]:
        """One frame standing in for a missing one, and its kind."""
        run = self._run
        self._run = run + 1
        if run < len(self._ramps) and self._last_good is not None:
            pcm = ulaw_decode(self._last_good) * self._ramps[run]
            return ulaw_encode(pcm.astype(np.int16)), CONCEALED
        payload = self._comfort[self._comfort_i]
        self._comfort_i = (self._comfort_i + 1) % len(self._comfort)
        return payload, COMFORT
