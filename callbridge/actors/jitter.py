"""Dejitter child: Twilio's frames in, continuous 20 ms audio out.

Two ways, chosen by the call's back end (``BackendSpec.remote``, from the supervisor):

- **In order, at once** (a remote back end, OpenAI Realtime or Vapi, in either audio
  format: a machine listens, and Twilio's stream is TCP, so frames never reorder): each
  frame goes on the moment it is read, in media-timestamp order, Twilio's bytes untouched;
  gaps in the timestamps are concealed with their duration, duplicates, late and stale
  frames dropped (counted) (``callbridge.codecs.inorder``). No tick, no playout depth.
- **Jitter buffer** (the embedded pipeline, whose VAD and endpointer still run on arrival
  time) on a steady clock, as below.

First in the inbound path (``MediaReceived`` from the gateway), ahead of the Codec, so the
decoder, resampler, VAD and STT see continuous time with the right duration: frames are
ordered by timestamp, duplicates and late or stale frames dropped (counted), gaps
concealed (repeat-and-fade, then comfort noise), and the playout depth adapts to the
line (``callbridge.codecs.jitterbuffer``). A ticker (``ActorContext.every``) pops every
20 ms so a stalled line still yields (concealed) audio on time; arrivals pop too, so a
clean line adds only ``JITTER_MIN_MS``.

Stats (RFC 3550 jitter, loss %, concealed %, late and stale drops, depth, added latency
p50/p95) go to the timeline every ``STATS_EVERY_S`` while the line is impaired, and once
when the call stops. Payloads that are not 160 bytes (never sent by Twilio) are dropped
and noted once.
"""

from __future__ import annotations

import math
from typing import Any

from ..codecs.framing import FRAME_S
from ..codecs.inorder import InOrder
from ..codecs.jitterbuffer import Frame, JitterBuffer, JitterParams
from ..config import MediaOptions
from . import messages as m
from .runtime import Actor, ActorContext, Ticker

STATS_EVERY_S = 5.0


class Dejitter(Actor):
    """The call's ``jitter`` child: drives a ``codecs.jitterbuffer.JitterBuffer`` on the
    call's clock, or, for a remote back end, a ``codecs.inorder.InOrder``."""

    role = "jitter"

    def __init__(self, ctx: ActorContext, media: MediaOptions, in_order: bool = False) -> None:
        super().__init__(ctx)
        self.buffer: JitterBuffer | InOrder
        if in_order:
            self.buffer = InOrder()
        else:
            depth = float(media.jitter_min_ms)
            self.buffer = JitterBuffer(JitterParams(initial_depth_ms=depth, min_depth_ms=depth))
        self.ticker: Ticker | None = None
        self.out_chunk = 0
        self.bad_size = 0
        self.next_stats = 0.0

    def receiveMsg_MediaReceived(self, msg: m.MediaReceived) -> None:
        now = self.ctx.now()
        if len(msg.payload) != self.buffer.params.frame_bytes:
            self.bad_size += 1
            if self.bad_size == 1:
                self.ctx.note("frame_size_dropped", size=len(msg.payload))
            return
        buffer = self.buffer
        if isinstance(buffer, InOrder):
            if not buffer.started:
                self.next_stats = now + STATS_EVERY_S
            self._send(buffer.push(msg.chunk, msg.timestamp, msg.payload, now), now)
            return
        buffer.push(msg.chunk, msg.timestamp, msg.payload, now)
        if self.ticker is None:
            self.ticker = self.ctx.every(FRAME_S, self._tick)
            self.next_stats = now + STATS_EVERY_S
        self._play(now)

    def receiveMsg_CallStopped(self, msg: m.CallStopped) -> None:
        if self.buffer.started:
            self.ctx.note("jitter_stats", **self.summary())

    def _play(self, now: float) -> None:
        assert isinstance(self.buffer, JitterBuffer)
        self._send(self.buffer.pop(now), now)

    def _send(self, frames: list[Frame], now: float) -> None:
        for frame in frames:
            self.out_chunk += 1
            self.ctx.tell(
                "codec", m.CallerUlaw(self.out_chunk, frame.timestamp_ms, frame.payload, frame.filler)
            )
        if now >= self.next_stats:
            self.next_stats = now + STATS_EVERY_S
            stats = self.summary()
            if stats["loss_pct"] or stats["late"] or stats["stale"] or stats["concealed_pct"]:
                self.ctx.note("jitter_stats", **stats)

    def _tick(self) -> None:
        """Every 20 ms from the first frame (no drift), whatever arrives."""
        self._play(self.ctx.now())

    def summary(self) -> dict[str, Any]:
        s = self.buffer.stats()

        def r(x: float | None) -> float | None:
            return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(x, 1)

        return {
            "jitter_ms": r(s.jitter_ms),
            "loss_pct": r(s.loss_pct),
            "concealed_pct": r(s.concealed_pct),
            "concealed_frames": s.concealed + s.comfort,
            "late": s.late,
            "stale": s.stale,
            "duplicates": s.duplicates,
            "depth_ms": r(s.depth_ms),
            "target_ms": r(s.target_ms),
            "latency_p50_ms": r(s.latency_p50_ms),
            "latency_p95_ms": r(s.latency_p95_ms),
        }
