"""JitterBuffer child. For now: forward caller audio in order, dropping duplicates and
frames that arrive after a newer one (counted). Concealment and adaptive depth come with
the jitter-buffer issue."""

from __future__ import annotations

from . import messages as m
from .runtime import Actor, ActorContext


class JitterBuffer(Actor):
    role = "jitter"
    CONSUMERS = ("upstream", "bargein")

    def __init__(self, ctx: ActorContext, settings: object = None) -> None:
        super().__init__(ctx)
        self.last_chunk = -1
        self.out_of_order = 0

    def receiveMsg_CallerAudio(self, msg: m.CallerAudio) -> None:  # noqa: N802
        if msg.chunk <= self.last_chunk:
            self.out_of_order += 1
            if self.out_of_order == 1:
                self.ctx.note("frame_out_of_order", chunk=msg.chunk, last=self.last_chunk)
            return
        self.last_chunk = msg.chunk
        for role in self.CONSUMERS:
            self.ctx.tell(role, msg)
