"""BargeIn child. For now it only observes: it follows agent playback through mark
echoes and caller audio level, and notes when the caller's audio starts. Detection,
``clear`` and truncation come with the barge-in issue."""

from __future__ import annotations

import numpy as np

from . import messages as m
from .runtime import Actor, ActorContext

SPEECH_RMS = 500.0
"""Caller frame RMS (int16) taken as "sound on the line" for the timeline note."""


class BargeIn(Actor):
    role = "bargein"

    def __init__(self, ctx: ActorContext, settings: object = None) -> None:
        super().__init__(ctx)
        self.heard_caller = False
        self.marks_played = 0

    def receiveMsg_CallerAudio(self, msg: m.CallerAudio) -> None:  # noqa: N802
        if self.heard_caller:
            return
        pcm = np.frombuffer(msg.pcm, dtype="<i2").astype(np.float32)
        if len(pcm) and float(np.sqrt(np.mean(pcm * pcm))) >= SPEECH_RMS:
            self.heard_caller = True
            self.ctx.note("caller_sound", chunk=msg.chunk)

    def receiveMsg_MarkPlayed(self, msg: m.MarkPlayed) -> None:  # noqa: N802
        self.marks_played += 1
