"""How late a line's frames arrive (pure: no I/O, time passed in).

``Transit.observe(timestamp_ms, now)`` for each new media timestamp: its transit
(``now`` minus the media time), the windowed minimum transit (``tref``: the fastest a
frame crossed the line lately, the reference of "on time") and the RFC 3550
interarrival jitter (``jitter_ms``). ``LatencyHistogram`` keeps the added latency of
every frame played in 1 ms bins (fixed memory) for percentiles. Shared by the jitter
buffer and the in-order path (``codecs.jitterbuffer``, ``codecs.inorder``).
"""

from __future__ import annotations

import math
from collections import deque

__all__ = ["LatencyHistogram", "Transit"]

_HIST_BINS = 10_000  # 1 ms bins


class Transit:
    """See the module docstring. ``window_s``: how far back ``tref`` looks (ten buckets)."""

    def __init__(self, window_s: float = 60.0) -> None:
        self._bucket_s = window_s / 10.0
        self._buckets: deque[list[float]] = deque()
        self.tref = math.inf
        """Minimum transit over the window (s); inf before the first frame."""
        self.jitter_ms = 0.0
        """RFC 3550 interarrival jitter (ms)."""
        self._prev: float | None = None

    def observe(self, timestamp_ms: int, now: float) -> float:
        """One new media timestamp arrived at ``now`` (s): its transit (s)."""
        transit = now - timestamp_ms / 1000.0
        b = math.floor(now / self._bucket_s)
        bk = self._buckets
        if bk and bk[-1][0] == b:
            if transit < bk[-1][1]:
                bk[-1][1] = transit
            if transit < self.tref:
                self.tref = transit
        else:
            bk.append([b, transit])
            while bk[0][0] <= b - 10:
                bk.popleft()
            self.tref = min(x[1] for x in bk)
        if self._prev is not None:
            d = abs(transit - self._prev) * 1000.0
            self.jitter_ms += (d - self.jitter_ms) / 16.0
        self._prev = transit
        return transit


class LatencyHistogram:
    """Added latencies (ms) in 1 ms bins up to 10 s (the last bin holds the rest)."""

    def __init__(self) -> None:
        self._hist = [0] * _HIST_BINS
        self._n = 0
        self.last: float | None = None
        """The latest latency recorded, None before any."""

    def record(self, lat: float) -> None:
        self.last = lat
        i = int(lat + 0.5) if lat > 0 else 0
        self._hist[i if i < _HIST_BINS else _HIST_BINS - 1] += 1
        self._n += 1

    def percentile(self, q: float) -> float | None:
        """``q`` (0..100) percentile, in whole ms; None before any."""
        if not 0 <= q <= 100:
            raise ValueError(f"percentile must be in [0, 100], got {q}")
        total = self._n
        if not total:
            return None
        need = max(1, math.ceil(total * q / 100.0))
        acc = 0
        for i, n in enumerate(self._hist):
            acc += n
            if acc >= need:
                return float(i)
        return float(_HIST_BINS - 1)
