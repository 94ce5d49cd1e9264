"""Twilio's inbound mu-law frames in media-timestamp order, at once (pure: no I/O, no clock).

For a listener that is a machine (a remote back end: OpenAI Realtime, Vapi), no playout
smoothing: ``push(chunk, timestamp_ms, payload, now)`` returns at
once what the frame lets out, never waiting for a tick. Twilio's stream is TCP, so frames
come in order; a stalled line's burst goes out as fast as it is read, every byte as the
caller's phone sent it.

- In order: the frame of the next media slot goes out as is (``"audio"``).
- A gap in the media timestamps (loss before Twilio) is concealed when the frame after
  it arrives, with its duration (repeat-and-fade, then comfort noise:
  ``codecs.conceal``), up to ``max_gap_ms``; the rest of a longer gap (a peer that
  jumps its timestamp by hours) is counted (``skipped``), not concealed. Every missing
  slot counts as ``lost``.
- A frame for a slot already passed is dropped and counted: ``duplicate`` (its slot went
  out), ``late`` (its slot was concealed or skipped), ``stale`` (more than ``stale_ms``
  behind).
- The line is measured as by the jitter buffer (``codecs.transit``): RFC 3550 jitter,
  loss, and each frame's latency (its arrival after the line's fastest transit: what a
  stall cost, none of it added here); ``stats()`` is the same ``JitterStats``.
- Every frame out carries its **media time** on the caller's clock (``Frame.at``, s, the
  end of its 20 ms): the first frame's arrival plus the media time since, the anchor
  lowered whenever a frame arrives earlier than that predicts (so ``at`` never runs ahead
  of arrival), never decreasing. It is the clock of the VAD, endpointer, barge-in and
  echo logic: a stall does not look like silence, and a burst is consumed at once.

Bad arguments raise ``ValueError``/``TypeError``. Memory is fixed (a 256-slot ring);
one ``push`` returns at most ``max_gap_ms / frame_ms + 1`` frames. docs/audio.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .conceal import Concealer
from .jitterbuffer import AUDIO, Frame, JitterStats, check_frame, check_now, check_types
from .transit import LatencyHistogram, Transit

__all__ = ["InOrder", "InOrderParams"]

_PLAYED_RING = 256
_NOTHING = dict.fromkeys(
    ("overflow", "lost_late", "held", "dropped_quiet", "dropped_speech", "stale_head"), 0
)
"""The jitter buffer's counters that stay 0 here: nothing is buffered, held or dropped."""


@dataclass(frozen=True, slots=True)
class InOrderParams:
    """Tuning of an :class:`InOrder`; every field is validated on construction."""

    frame_ms: int = 20
    frame_bytes: int = 160
    conceal_ms: int = 60
    max_gap_ms: int = 2000
    stale_ms: float = 2000.0
    window_s: float = 60.0
    comfort_noise: bool = True
    comfort_dbfs: float = -60.0
    seed: int = 0

    def __post_init__(self) -> None:
        check_types(self)
        if self.frame_ms <= 0 or self.frame_bytes <= 0:
            raise ValueError("InOrderParams: frame_ms and frame_bytes must be > 0")
        if min(self.conceal_ms, self.max_gap_ms, self.stale_ms) < 0 or self.comfort_dbfs > 0:
            raise ValueError("InOrderParams: conceal_ms, max_gap_ms, stale_ms >= 0 and comfort_dbfs <= 0")
        if self.window_s * 1000 < self.frame_ms:
            raise ValueError("InOrderParams: window_s must hold at least one frame")


class InOrder:
    """See the module docstring. One instance per inbound stream; not thread-safe."""

    def __init__(self, params: InOrderParams | None = None) -> None:
        p = self.params = params if params is not None else InOrderParams()
        self._half = p.frame_ms // 2
        self._max_gap = p.max_gap_ms // p.frame_ms
        self._ts0: int | None = None
        self._anchor = math.inf  # the caller's clock (s) at the end of media slot 0
        self._last_at = -math.inf
        self._cursor = 0  # next media slot
        self._k = 0  # frames returned so far
        self._last_now = -math.inf
        self._played_ring: list[int | None] = [None] * _PLAYED_RING
        self._transit = Transit(p.window_s)
        self._latency = LatencyHistogram()
        self._concealer = Concealer(
            p.frame_ms, p.frame_bytes, p.conceal_ms, p.comfort_noise, p.comfort_dbfs, p.seed
        )
        self._c = dict.fromkeys(
            ("received", "duplicates", "late", "stale", "played", "concealed", "comfort", "lost", "skipped"),
            0,
        )

    @property
    def started(self) -> bool:
        """Whether a frame has been pushed."""
        return self._ts0 is not None

    def push(self, chunk: int, timestamp_ms: int, payload: bytes, now: float) -> list[Frame]:
        """Take one arriving frame: the frames it lets out, in order (none for a dropped
        one; the concealment of a gap before it, then itself)."""
        p = self.params
        payload = check_frame(chunk, timestamp_ms, payload, p.frame_bytes)
        now = self._last_now = check_now(now, self._last_now)
        c = self._c
        if self._ts0 is None:
            self._ts0 = timestamp_ms
        ts0 = self._ts0
        fms = p.frame_ms
        slot = (timestamp_ms - ts0 + self._half) // fms
        s = self._cursor
        if slot < s:
            if self._played_ring[slot % _PLAYED_RING] == slot:
                c["duplicates"] += 1
                return []
            self._transit.observe(timestamp_ms, now)  # a new media slot: its timing counts
            c["stale" if (s - slot) * fms > p.stale_ms else "late"] += 1
            return []
        self._anchor = min(self._anchor, now - slot * fms / 1000.0)
        out: list[Frame] = []
        if slot > s:  # a gap: the slots before this one never came
            gap = slot - s
            conceal = min(gap, self._max_gap)
            c["lost"] += gap
            c["skipped"] += gap - conceal
            for i in range(conceal):
                out.append(self._conceal(ts0, s + i))
        tr = self._transit
        tr.observe(timestamp_ms, now)
        lat = (now - tr.tref) * 1000.0 - timestamp_ms
        self._latency.record(lat)
        self._concealer.good(payload)
        self._played_ring[slot % _PLAYED_RING] = slot
        self._cursor = slot + 1
        c["received"] += 1
        c["played"] += 1
        out.append(Frame(ts0 + self._k * fms, payload, AUDIO, timestamp_ms, lat, self._at(slot)))
        self._k += 1
        return out

    def _at(self, slot: int) -> float:
        """The media time of ``slot`` on the caller's clock (see the module docstring)."""
        at = self._last_at = max(self._last_at, self._anchor + slot * self.params.frame_ms / 1000.0)
        return at

    def _conceal(self, ts0: int, slot: int) -> Frame:
        payload, kind = self._concealer.conceal()
        self._c[kind] += 1
        fms = self.params.frame_ms
        frame = Frame(ts0 + self._k * fms, payload, kind, ts0 + slot * fms, None, self._at(slot))
        self._k += 1
        return frame

    def stats(self) -> JitterStats:
        """The counters, as the jitter buffer's (nothing is buffered, held or dropped to
        catch up: those fields are 0)."""
        return JitterStats(
            **_NOTHING,
            **self._c,
            output=self._k,
            jitter_ms=self._transit.jitter_ms,
            depth_ms=0.0,
            target_ms=0.0,
            latency_ms=self._latency.last,
            latency_p50_ms=self._latency.percentile(50),
            latency_p95_ms=self._latency.percentile(95),
        )
