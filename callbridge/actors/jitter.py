"""Dejitter child: Twilio's frames in, the caller's continuous 20 ms audio out, at once.

First in the inbound path (``MediaReceived`` from the gateway), ahead of the Codec. The
listener is a machine (the embedded VAD, endpointer and recogniser, or a remote back end)
and Twilio's stream is TCP, so frames never reorder and need no playout smoothing: each
frame goes on the moment it is read, in media-timestamp order, Twilio's bytes untouched
(``callbridge.codecs.inorder``). Gaps in the timestamps (loss before Twilio) are concealed
with their duration; duplicates, late and stale frames dropped (counted). A stalled line's
burst is consumed as fast as it is read: every frame carries its **media time** on the
caller's clock (``CallerUlaw.at``), the clock of the VAD, endpointer, barge-in and echo
logic downstream, so a stall never looks like silence and adds no wait of its own.

Stats (RFC 3550 jitter, loss %, concealed %, late and stale drops, what stalls cost
p50/p95) go to the timeline every ``STATS_EVERY_S`` while the line is impaired, and once
when the call stops. Payloads that are not 160 bytes (never sent by Twilio) are dropped
and noted once.
"""

from __future__ import annotations

import math
from typing import Any

from ..codecs.inorder import InOrder
from . import messages as m
from .runtime import Actor, ActorContext

STATS_EVERY_S = 5.0


class Dejitter(Actor):
    """The call's ``jitter`` child: drives a ``codecs.inorder.InOrder`` on the call's clock."""

    role = "jitter"

    def __init__(self, ctx: ActorContext) -> None:
        super().__init__(ctx)
        self.buffer = InOrder()
        self.out_chunk = 0
        self.bad_size = 0
        self.next_stats = 0.0

    def receiveMsg_MediaReceived(self, msg: m.MediaReceived) -> None:
        now = self.ctx.now()
        buffer = self.buffer
        if len(msg.payload) != buffer.params.frame_bytes:
            self.bad_size += 1
            if self.bad_size == 1:
                self.ctx.note("frame_size_dropped", size=len(msg.payload))
            return
        if not buffer.started:
            self.next_stats = now + STATS_EVERY_S
        for frame in buffer.push(msg.chunk, msg.timestamp, msg.payload, now):
            self.out_chunk += 1
            assert frame.at is not None
            self.ctx.tell("codec", m.CallerUlaw(self.out_chunk, frame.timestamp_ms, frame.payload, frame.at))
        if now >= self.next_stats:
            self.next_stats = now + STATS_EVERY_S
            stats = self.summary()
            if stats["loss_pct"] or stats["late"] or stats["stale"] or stats["concealed_pct"]:
                self.ctx.note("jitter_stats", **stats)

    def receiveMsg_CallStopped(self, msg: m.CallStopped) -> None:
        if self.buffer.started:
            self.ctx.note("jitter_stats", **self.summary())

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
            "latency_p50_ms": r(s.latency_p50_ms),
            "latency_p95_ms": r(s.latency_p95_ms),
        }
