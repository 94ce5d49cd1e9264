"""BargeIn child: notices the caller talking over the agent, and says so at once.

What the caller has heard: the Codec marks every utterance every 200 ms (progress marks)
and at its end (``codecs.marks.MarkName``); Twilio echoes a mark once the audio before
it has played. The supervisor keeps that as the call's ``Playback`` (``actors.messages``):
the agent is audible from an utterance's first frame until its end mark comes back, and
the played position is the last echoed mark plus the time since (at most 200 ms more).
BargeIn reads the latest value it was told.

A barge-in is caller speech (``CallerSpeech``: the endpointer's start of turn, i.e. speech
sustained for ``MIN_SPEECH_MS``, which coughs, door slams and breathing do not reach)
while agent audio is still playing at Twilio (an utterance started, its end mark not back).
Then ``BargeInDetected`` goes to the supervisor in the same frame. Not a barge-in:

- a caller who answers as soon as the agent stops (its end mark came back): nothing is
  left to cut, so no ``clear``; it is a normal turn, noted ``quick_answer`` (with
  ``after_ms``, the time since the end mark) when it starts within ``QUICK_ANSWER_S``;
- a second start while the same utterance is being cut (``wait... wait... wait`` is one);
- speech much quieter than the agent's own recent audio (``ECHO_MARGIN_DB``): that is the
  agent's voice coming back on the line (echo), not the caller;
- with ``BACKCHANNEL_MS`` set (off by default), speech that is over within that time of its
  onset ("mm-hmm", "yeah", "okay": the caller lets the agent go on): judged at
  ``onset + BACKCHANNEL_MS`` of media time, it cuts if the caller is still audible in the
  last ``BACKCHANNEL_TAIL_S``; otherwise it is noted ``backchannel`` and its turn dropped
  (``SpeechRejected``: the agent does not answer it). A real interruption is cut that much
  later, and one as short as a backchannel ("Wait.") is taken for one: hence off by default.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from ..codecs.g711 import ULAW_SQUARED
from . import messages as m
from .runtime import Actor, ActorContext

QUICK_ANSWER_S = 1.0
"""Caller speech starting this soon after the agent's end mark is noted ``quick_answer``."""
ECHO_MARGIN_DB = 15.0
"""Caller speech must be no more than this far below the agent's recent level."""
ECHO_WINDOW_FRAMES = 40
"""The agent's level is its loudest frame among the last 0.8 s played before detection."""
MAX_LEVEL_FRAMES = 30_000
"""Frame levels kept per utterance (10 minutes)."""
CALLER_LEVEL_FRAMES = 50
"""The caller's latest frame levels kept (1 s: speech is judged from its onset on)."""
SPEECH_RMS = 500.0
"""Caller frame RMS (int16) taken as "sound on the line" for the timeline note."""
LEVEL_BATCH = 10
"""Frames whose levels are computed together, in one numpy pass (or sooner, when read)."""
BACKCHANNEL_TAIL_S = 0.1
"""A backchannel candidate is still speaking if one of its frames this recent is audible."""


def _rms(pcm: np.ndarray) -> float:
    if not len(pcm):
        return 0.0
    x = pcm.astype(np.float32)
    return math.sqrt(float(x.dot(x)) / len(x))  # dot: 1.1 µs a frame; mean(x * x): 4.9


def pcm_levels(frames: list[bytes]) -> list[float]:
    """RMS of each int16 PCM frame; frames of one size in one numpy pass."""
    if not frames:
        return []
    size = len(frames[0])
    if size and all(len(f) == size for f in frames):
        x = np.frombuffer(b"".join(frames), dtype="<i2").astype(np.float32).reshape(len(frames), -1)
        return np.sqrt(np.einsum("ij,ij->i", x, x) / x.shape[1]).tolist()
    return [_rms(np.frombuffer(f, dtype="<i2")) for f in frames]


def ulaw_levels(frames: list[bytes]) -> list[float]:
    """RMS of each mu-law frame (linear scale), from a table of squared code values;
    frames of one size in one numpy pass."""
    if not frames:
        return []
    size = len(frames[0])
    if size and all(len(f) == size for f in frames):
        codes = np.frombuffer(b"".join(frames), dtype=np.uint8).reshape(len(frames), -1)
        return np.sqrt(ULAW_SQUARED.take(codes).mean(axis=1)).tolist()
    return [ulaw_levels([f])[0] if f else 0.0 for f in frames]


class Levels:
    """Levels of frames in arrival order, measured ``LEVEL_BATCH`` at a time: ``add`` only
    keeps the frame (and its time); ``read()`` measures what is pending. Keeps the levels
    of the last ``keep`` frames (None: all of them, up to ``MAX_LEVEL_FRAMES``)."""

    def __init__(self, measure: Callable[[list[bytes]], list[float]], keep: int | None = None) -> None:
        self._measure = measure
        self._keep = keep
        self._pending: list[bytes] = []
        self._pending_t: list[float] = []
        self._levels: list[float] = []
        self._times: list[float] = []

    def add(self, frame: bytes, t: float = 0.0) -> None:
        if self._keep is None and len(self._levels) + len(self._pending) >= MAX_LEVEL_FRAMES:
            return
        self._pending.append(frame)
        self._pending_t.append(t)
        if len(self._pending) >= LEVEL_BATCH:
            self._flush()

    def read(self) -> tuple[list[float], list[float]]:
        """(levels, times) of the frames kept, oldest first."""
        self._flush()
        return self._levels, self._times

    def _flush(self) -> None:
        if not self._pending:
            return
        self._levels.extend(self._measure(self._pending))
        self._times.extend(self._pending_t)
        self._pending, self._pending_t = [], []
        if self._keep is not None and len(self._levels) > self._keep:
            del self._levels[: -self._keep], self._times[: -self._keep]


class BargeIn(Actor):
    role = "bargein"

    def __init__(self, ctx: ActorContext, backchannel_ms: int = 0) -> None:
        super().__init__(ctx)
        self.backchannel_s = backchannel_ms / 1000.0
        self.candidate: tuple[int, float] | None = None
        """(utterance, onset) of speech over the agent waiting for ``BACKCHANNEL_MS``."""
        self.playback = m.Playback()
        """The supervisor's latest; a cut is applied at once (see ``CallerSpeech``)."""
        self.heard_caller = False
        self.echoes = 0
        self.agent_levels = Levels(ulaw_levels)
        """RMS of each frame of the latest utterance, in play order."""
        self.caller_levels = Levels(pcm_levels, keep=CALLER_LEVEL_FRAMES)
        """RMS of the caller's latest frames, with their media times (``CallerAudio.at``)."""

    # -- what the agent is doing ----------------------------------------------------------

    def receiveMsg_Playback(self, msg: m.Playback) -> None:
        if msg.starts != self.playback.starts:  # an utterance started: the new echo reference
            self.agent_levels = Levels(ulaw_levels)
            self.echoes = 0
        self.playback = msg

    def receiveMsg_OutboundFrame(self, msg: m.OutboundFrame) -> None:
        if msg.payload:
            self.agent_levels.add(msg.payload)

    # -- what the caller is doing -----------------------------------------------------------

    def receiveMsg_CallerAudio(self, msg: m.CallerAudio) -> None:
        self.caller_levels.add(msg.pcm, msg.at)
        if not self.heard_caller and _rms(np.frombuffer(msg.pcm, dtype="<i2")) >= SPEECH_RMS:
            self.heard_caller = True
            self.ctx.note("caller_sound", chunk=msg.chunk)
        candidate = self.candidate
        if candidate is not None and msg.at - candidate[1] >= self.backchannel_s:
            self.candidate = None
            self._backchannel_or_cut(*candidate, msg.at)

    def _backchannel_or_cut(self, utterance: int, onset: float, at: float) -> None:
        """``BACKCHANNEL_MS`` after the onset of speech over ``utterance``: cut it if the
        caller is still speaking, else let the agent go on and drop the turn."""
        if self.playback.playing != utterance or utterance <= self.playback.cut_upto:
            return  # the agent stopped meanwhile: a normal turn
        levels, times = self.caller_levels.read()
        if any(
            lvl >= SPEECH_RMS for t, lvl in zip(times, levels, strict=True) if t > at - BACKCHANNEL_TAIL_S
        ):
            self._cut(utterance, onset)
            return
        self.ctx.note("backchannel", utterance=utterance, speech_ms=round((at - onset) * 1000))
        self.ctx.tell("upstream", m.SpeechRejected(onset))

    def receiveMsg_CallerSpeech(self, msg: m.CallerSpeech) -> None:
        now = self.ctx.now()
        playback = self.playback
        utterance = playback.playing
        if utterance is None:
            after_s = msg.onset - playback.quiet_since
            if 0 <= after_s <= QUICK_ANSWER_S:
                self.ctx.note("quick_answer", after_ms=round(after_s * 1000))
            return
        if utterance <= playback.cut_upto:
            return
        played_ms = playback.played_ms(now)
        agent_levels, _ = self.agent_levels.read()
        position = played_ms // 20
        recent = agent_levels[max(0, position - ECHO_WINDOW_FRAMES) : position + 1]
        levels, times = self.caller_levels.read()
        caller = [lvl for t, lvl in zip(times, levels, strict=True) if t >= msg.onset]
        caller_level = float(np.mean(caller)) if caller else 0.0
        agent_level = max(recent) if recent else 0.0
        if agent_level and caller_level < agent_level * 10 ** (-ECHO_MARGIN_DB / 20):
            self.echoes += 1
            if self.echoes == 1:  # once per utterance: echo repeats as long as the agent talks
                self.ctx.note("echo_ignored", caller_rms=round(caller_level), agent_rms=round(agent_level))
            self.ctx.tell("upstream", m.SpeechRejected(msg.onset))
            return
        if self.backchannel_s > 0:
            if self.candidate is None:
                self.candidate = (utterance, msg.onset)
            return
        self._cut(utterance, msg.onset)

    def _cut(self, utterance: int, onset: float) -> None:
        # The supervisor will say it is cut; until then a second start is not a second cut.
        played_ms = self.playback.played_ms(self.ctx.now())
        self.playback = self.playback.cut(utterance)
        self.ctx.tell_parent(m.BargeInDetected(utterance, played_ms, onset))
