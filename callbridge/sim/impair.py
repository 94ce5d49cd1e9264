"""Seeded network impairment for the call simulator (pure: no I/O, no clock, no sleeping).

``Impairment(loss=..., gap=..., jitter=..., noise_ms=..., seed=...).schedule(n_frames)`` says
which of a caller's ``n_frames`` 20 ms frames reach us as Twilio ``media`` messages, with which
``chunk`` and ``timestamp``, and when (``Delivery``; seconds from the capture of frame 0). Loss
and gaps happen before Twilio (the timestamp jumps); stalls and noise between Twilio and us
(TCP: late, never reordered or lost). The same arguments always give the same schedule. Bad
values raise ``ValueError`` (``TypeError`` for wrong types) naming the field.

What each impairment models, and the limits: docs/audio.md.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

__all__ = [
    "DEFAULT_GAP_MS",
    "Delivery",
    "Impairment",
    "delays_ms",
    "parse_gap",
    "parse_jitter",
    "parse_loss",
    "parse_range_ms",
]

MAX_FRAMES = 24 * 3600 * 50
MAX_RANGE_MS = 60_000
DEFAULT_GAP_MS = (100, 400)
"""Gap length range for a bare ``--gap``."""


class Delivery(NamedTuple):
    """One ``media`` message as it reaches us."""

    at_s: float  # delivery time, s after frame 0 was captured
    chunk: int  # Twilio chunk, 1-based
    timestamp_ms: int  # Twilio timestamp: frame * frame_ms
    frame: int  # index of the frame in the caller's sequence


def _check_range(name: str, r: object, *, unit: str = "ms", positive: bool = False) -> tuple:
    if not isinstance(r, (tuple, list)) or len(r) != 2:
        raise TypeError(f"{name} must be a (lo, hi) pair, got {r!r}")
    lo, hi = r
    for v in (lo, hi):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise TypeError(f"{name} bounds must be finite numbers, got {r!r}")
    if lo < 0 or hi < lo or (positive and lo <= 0):
        raise ValueError(f"{name} must satisfy {'0 <' if positive else '0 <='} lo <= hi, got {r!r}")
    if unit == "ms" and hi > MAX_RANGE_MS:
        raise ValueError(f"{name} upper bound {hi} ms is above {MAX_RANGE_MS} ms")
    return (lo, hi)


@dataclass(frozen=True)
class Impairment:
    """A seeded line model; see the module docstring."""

    loss: float = 0.0
    jitter: tuple[float, float] | None = None
    gap: tuple[float, float] | None = None
    seed: int = 0
    stall_every_s: tuple[float, float] = (1.0, 5.0)
    gap_every_s: tuple[float, float] = (5.0, 20.0)
    noise_ms: float = 0.0
    chunk_gaps: bool = False
    frame_ms: int = 20

    def __post_init__(self) -> None:
        loss = self.loss
        if isinstance(loss, bool) or not isinstance(loss, (int, float)) or not 0 <= loss < 1:
            raise ValueError(f"loss must be a fraction in [0, 1), got {self.loss!r}")
        if self.jitter is not None:
            object.__setattr__(self, "jitter", _check_range("jitter", self.jitter))
        if self.gap is not None:
            object.__setattr__(self, "gap", _check_range("gap", self.gap))
        _check_range("stall_every_s", self.stall_every_s, unit="s", positive=True)
        _check_range("gap_every_s", self.gap_every_s, unit="s", positive=True)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise TypeError(f"seed must be an int, got {self.seed!r}")
        n = self.noise_ms
        if isinstance(n, bool) or not isinstance(n, (int, float)) or not 0 <= n <= MAX_RANGE_MS:
            raise ValueError(f"noise_ms must be in [0, {MAX_RANGE_MS}], got {n!r}")
        if isinstance(self.frame_ms, bool) or not isinstance(self.frame_ms, int) or self.frame_ms <= 0:
            raise ValueError(f"frame_ms must be a positive int, got {self.frame_ms!r}")
        if not isinstance(self.chunk_gaps, bool):
            raise TypeError(f"chunk_gaps must be a bool, got {self.chunk_gaps!r}")

    @classmethod
    def from_cli(
        cls,
        loss: str | None = None,
        jitter: str | None = None,
        gap: str | bool | None = None,
        seed: int = 0,
        **kw: Any,
    ) -> Impairment:
        """Build from CLI strings: ``loss="3%"``, ``jitter="200-800ms"``, ``gap="100-400ms"``
        (or ``gap=True`` / ``""`` for ``DEFAULT_GAP_MS``); None means off."""
        g = None
        if gap is True or gap == "":
            g = DEFAULT_GAP_MS
        elif gap not in (None, False):
            assert isinstance(gap, str)  # True was taken above
            g = parse_gap(gap)
        return cls(
            loss=parse_loss(loss) if loss is not None else 0.0,
            jitter=parse_jitter(jitter) if jitter is not None else None,
            gap=g,
            seed=seed,
            **kw,
        )

    def _rng(self, what: str) -> random.Random:
        return random.Random(f"callbridge.impair:{self.seed}:{what}")

    def lost_frames(self, n_frames: int) -> list[bool]:
        """For each frame, whether it is lost upstream of Twilio (``loss`` and ``gap``)."""
        _check_n(n_frames)
        fs = self.frame_ms / 1000.0
        lost = [False] * n_frames
        if self.loss > 0:
            r = self._rng("loss")
            lost = [r.random() < self.loss for _ in range(n_frames)]
        if self.gap is not None:
            r = self._rng("gap")
            lo, hi = self.gap
            t = r.uniform(*self.gap_every_s)
            while True:
                first = math.ceil(t / fs)
                if first >= n_frames:
                    break
                n = max(1, round(r.uniform(lo, hi) / self.frame_ms))
                for i in range(first, min(n_frames, first + n)):
                    lost[i] = True
                t = (first + n) * fs + r.uniform(*self.gap_every_s)
        return lost

    def schedule(self, n_frames: int) -> list[Delivery]:
        """The deliveries of ``n_frames`` caller frames, in delivery order (which is also
        capture order: nothing is reordered)."""
        lost = self.lost_frames(n_frames)
        fs = self.frame_ms / 1000.0
        noise = self._rng("noise")
        stall = self._rng("stall")
        s_start = s_end = math.inf
        jitter = self.jitter
        if jitter is not None:
            s_start = stall.uniform(*self.stall_every_s)
            s_end = s_start + stall.uniform(*jitter) / 1000.0
        out: list[Delivery] = []
        prev = -math.inf
        chunk = 0
        for i in range(n_frames):
            extra = noise.uniform(0.0, self.noise_ms) / 1000.0 if self.noise_ms else 0.0
            if lost[i]:
                if self.chunk_gaps:
                    chunk += 1
                continue
            t = max(i * fs + extra, prev)
            while t >= s_end:  # stalls that ended before this frame left
                assert jitter is not None  # s_end is finite only with jitter
                s_start = s_end + stall.uniform(*self.stall_every_s)
                s_end = s_start + stall.uniform(*jitter) / 1000.0
                if t < s_start:
                    break
            if s_start <= t < s_end:
                t = s_end
            prev = t
            chunk += 1
            out.append(Delivery(t, chunk, i * self.frame_ms, i))
        return out


def _check_n(n_frames: int) -> None:
    if isinstance(n_frames, bool) or not isinstance(n_frames, int):
        raise TypeError(f"n_frames must be an int, got {type(n_frames).__name__}")
    if not 0 <= n_frames <= MAX_FRAMES:
        raise ValueError(f"n_frames must be in [0, {MAX_FRAMES}], got {n_frames}")


def delays_ms(deliveries: Sequence[Delivery], frame_ms: int = 20) -> list[float]:
    """Delivery delay of each delivery after its frame's capture, in ms.  Its spread
    (``delay - min(delay)``) is the line's delay variation."""
    return [(d.at_s - d.frame * frame_ms / 1000.0) * 1000.0 for d in deliveries]


# --------------------------------------------------------------------------- CLI parsers

_NUM = r"(\d+(?:\.\d*)?|\.\d+)"
_RANGE_RE = re.compile(rf"^\s*{_NUM}\s*(?:(ms|s)\s*)?(?:-\s*{_NUM}\s*(ms|s)?\s*)?$", re.IGNORECASE)
_LOSS_RE = re.compile(rf"^\s*{_NUM}\s*(%?)\s*$")


def parse_loss(text: str) -> float:
    """``"3%"`` -> 0.03, ``"0.03"`` -> 0.03.  A bare number must be a fraction below 1;
    a percentage must be below 100%."""
    if not isinstance(text, str):
        raise TypeError(f"loss must be a string like '3%', got {type(text).__name__}")
    m = _LOSS_RE.match(text)
    if not m:
        raise ValueError(f"bad loss {text!r}: expected a percentage like '3%' or a fraction like '0.03'")
    v = float(m.group(1))
    if m.group(2):
        if v >= 100:
            raise ValueError(f"bad loss {text!r}: must be below 100%")
        return v / 100.0
    if v >= 1:
        raise ValueError(
            f"bad loss {text!r}: a bare number is a fraction and must be below 1 "
            f"(did you mean '{m.group(1)}%'?)"
        )
    return v


def parse_range_ms(text: str, what: str = "range") -> tuple[int, int]:
    """``"200-800ms"`` -> (200, 800); also ``"200-800"``, ``"0.2-0.8s"``, ``"300ms"`` ->
    (300, 300).  Whole milliseconds, 0 <= lo <= hi <= MAX_RANGE_MS."""
    if not isinstance(text, str):
        raise TypeError(f"{what} must be a string like '200-800ms', got {type(text).__name__}")
    m = _RANGE_RE.match(text)
    if not m:
        raise ValueError(
            f"bad {what} {text!r}: expected 'LO-HIms' like '200-800ms', or one value like '300ms'"
        )
    a, unit_a, b, unit_b = m.groups()
    if b is None:
        b, unit_b = a, unit_a
    elif unit_a and unit_b and unit_a.lower() != unit_b.lower():
        raise ValueError(f"bad {what} {text!r}: mixed units")
    unit = (unit_b or unit_a or "ms").lower()
    scale = 1000.0 if unit == "s" else 1.0
    lo, hi = float(a) * scale, float(b) * scale
    if lo != int(lo) or hi != int(hi):
        raise ValueError(f"bad {what} {text!r}: bounds must be whole milliseconds")
    if hi < lo:
        raise ValueError(f"bad {what} {text!r}: low bound above high bound")
    if hi > MAX_RANGE_MS:
        raise ValueError(f"bad {what} {text!r}: above {MAX_RANGE_MS} ms")
    return int(lo), int(hi)


def parse_jitter(text: str) -> tuple[int, int]:
    """Stall length range: ``"200-800ms"`` -> (200, 800); see ``parse_range_ms``."""
    return parse_range_ms(text, "jitter")


def parse_gap(text: str) -> tuple[int, int]:
    """Upstream gap length range: ``"100-400ms"`` -> (100, 400); see ``parse_range_ms``.
    An empty string gives ``DEFAULT_GAP_MS`` (for a bare ``--gap``)."""
    if isinstance(text, str) and not text.strip():
        return DEFAULT_GAP_MS
    return parse_range_ms(text, "gap")
