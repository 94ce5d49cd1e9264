"""BargeIn child: notices the caller talking over the agent, and says so at once.

What the caller has heard: the Codec marks every utterance every 200 ms
(``u<n>.<frames>``) and at its end (``u<n>``); Twilio echoes a mark once the audio before
it has played. So the agent is audible from ``UtteranceStarting`` until the end mark of
that utterance comes back, and the played position is the last echoed mark plus the time
since (at most 200 ms more).

A barge-in is caller speech (``CallerSpeech``: the endpointer's start of turn, i.e. speech
sustained for ``MIN_SPEECH_MS``, which coughs, door slams and breathing do not reach)
while the agent is audible, or within ``GRACE_S`` after it stopped (mobile jitter). Then
``BargeInDetected`` goes to the supervisor in the same frame. Not a barge-in:

- a second start while the same utterance is being cut (``wait... wait... wait`` is one);
- speech much quieter than the agent's own recent audio (``ECHO_MARGIN_DB``): that is the
  agent's voice coming back on the line (echo), not the caller.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from ..codecs.g711 import ulaw_decode
from . import messages as m
from .runtime import Actor, ActorContext

GRACE_S = 0.5
ECHO_MARGIN_DB = 15.0
"""Caller speech must be no more than this far below the agent's recent level."""
ECHO_WINDOW_FRAMES = 40
"""The agent's level is its loudest frame among the last 0.8 s played before detection."""
MAX_LEVEL_FRAMES = 30_000
"""Frame levels kept per utterance (10 minutes)."""
SPEECH_RMS = 500.0
"""Caller frame RMS (int16) taken as "sound on the line" for the timeline note."""


def _rms(pcm: np.ndarray) -> float:
    if not len(pcm):
        return 0.0
    x = pcm.astype(np.float32)
    return math.sqrt(float(x.dot(x)) / len(x))  # dot: 1.1 µs a frame; mean(x * x): 4.9


def _ulaw_rms(payload: bytes) -> float:
    """RMS of a mu-law frame, from a table of squared code values (1.3 µs a frame)."""
    return math.sqrt(float(_ULAW_SQUARED.take(np.frombuffer(payload, dtype=np.uint8)).sum()) / len(payload))


class BargeIn(Actor):
    role = "bargein"

    def __init__(self, ctx: ActorContext, settings: object = None) -> None:
        super().__init__(ctx)
        self.playing: int | None = None
        self.stopped_at = -math.inf
        self.last_started = 0
        self.cut_upto = 0
        self.echoed_frames = 0
        self.echoed_at = 0.0
        self.heard_caller = False
        self.echoes = 0
        self.agent_levels: list[float] = []
        """RMS of each frame of the latest utterance, in play order."""
        self.caller_levels: deque[tuple[float, float]] = deque(maxlen=50)

    # -- what the agent is doing ----------------------------------------------------------

    def receiveMsg_UtteranceStarting(self, msg: m.UtteranceStarting) -> None:  # noqa: N802
        if msg.utterance > self.cut_upto:
            self.playing = msg.utterance
            self.last_started = msg.utterance
            self.echoed_frames, self.echoed_at = 0, self.ctx.now()
            self.agent_levels = []
            self.echoes = 0

    def receiveMsg_OutboundFrame(self, msg: m.OutboundFrame) -> None:  # noqa: N802
        if len(self.agent_levels) < MAX_LEVEL_FRAMES and msg.payload:
            self.agent_levels.append(_ulaw_rms(msg.payload))

    def receiveMsg_MarkPlayed(self, msg: m.MarkPlayed) -> None:  # noqa: N802
        utterance, _, frames = msg.name.lstrip("u").partition(".")
        if not utterance.isdigit() or int(utterance) != self.playing:
            return
        if frames.isdigit():
            self.echoed_frames, self.echoed_at = int(frames), self.ctx.now()
        else:  # the end mark: everything of it has played
            self.playing, self.stopped_at = None, self.ctx.now()

    # -- what the caller is doing -----------------------------------------------------------

    def receiveMsg_CallerAudio(self, msg: m.CallerAudio) -> None:  # noqa: N802
        level = _rms(np.frombuffer(msg.pcm, dtype="<i2"))
        self.caller_levels.append((self.ctx.now(), level))
        if not self.heard_caller and level >= SPEECH_RMS:
            self.heard_caller = True
            self.ctx.note("caller_sound", chunk=msg.chunk)

    def receiveMsg_CallerSpeech(self, msg: m.CallerSpeech) -> None:  # noqa: N802
        now = self.ctx.now()
        utterance = self.playing if self.playing is not None else self.last_started
        audible = self.playing is not None or now - self.stopped_at <= GRACE_S
        if not audible or utterance <= self.cut_upto:
            return
        played_ms = self.echoed_frames * 20 + min(200, round((now - self.echoed_at) * 1000))
        position = len(self.agent_levels) if self.playing is None else played_ms // 20
        recent = self.agent_levels[max(0, position - ECHO_WINDOW_FRAMES) : position + 1]
        caller = [lvl for t, lvl in self.caller_levels if t >= msg.onset]
        caller_level = float(np.mean(caller)) if caller else 0.0
        agent_level = max(recent) if recent else 0.0
        if agent_level and caller_level < agent_level * 10 ** (-ECHO_MARGIN_DB / 20):
            self.echoes += 1
            if self.echoes == 1:  # once per utterance: echo repeats as long as the agent talks
                self.ctx.note("echo_ignored", caller_rms=round(caller_level), agent_rms=round(agent_level))
            self.ctx.tell("upstream", m.SpeechRejected(msg.onset))
            return
        if self.playing is None:
            played_ms = -1  # it had finished: the caller heard it all
        self.cut_upto = utterance
        self.playing = None
        self.ctx.tell_parent(m.BargeInDetected(utterance, played_ms, msg.onset))


_ULAW_SQUARED = ulaw_decode(bytes(range(256))).astype(np.float64) ** 2
"""Squared linear value of each mu-law code: a frame's RMS without decoding it."""
