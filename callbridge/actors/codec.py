"""Codec child: mu-law 8 kHz <-> PCM, with streaming resamplers and exact 20 ms framing.

Inbound: ``CallerUlaw`` (mu-law, continuous, from the Dejitter) -> decode ->
resample to ``CALLER_PCM_RATE`` -> ``CallerAudio`` to the Upstream and BargeIn. Outbound: ``AgentAudio`` (PCM at any rate) ->
resample to 8 kHz -> encode -> 160-byte ``OutboundFrame``s to the supervisor; on
``AgentUtteranceEnd`` the resampler tail and the last partial frame (padded with
silence) are flushed, then the utterance's end ``OutboundMark`` follows. Every
``MARK_EVERY_FRAMES`` frames of an utterance a progress mark goes out too
(``codecs.marks.MarkName``), so the played position is known to within 200 ms.

``Interrupted`` (barge-in): the partial frame and resampler state are dropped, and so is
any later audio of that utterance or an earlier one still on its way from the Upstream.

Pass-through (built with ``caller_format`` ``"ulaw"``, the call's back end's
``BackendSpec.caller_format``: OpenAI Realtime, Vapi with ``VAPI_AUDIO=mulaw``):
the caller's mu-law goes to the Upstream untouched (``CallerUlaw``; BargeIn still gets
its levels, decoded at 8 kHz, no resampling), and ``AgentUlaw`` payloads are only framed.

Fresh state on restart means resampler history is lost: at most one frame's filter
transient (~4 ms), never a shifted or resized frame.
"""

from __future__ import annotations

import math

import numpy as np

from ..codecs.framing import Framer
from ..codecs.g711 import ulaw_decode, ulaw_encode
from ..codecs.resample import StreamingResampler
from ..upstreams.base import PCM16K, ULAW
from . import messages as m
from .runtime import Actor, ActorContext

CALLER_PCM_RATE = 16000
TWILIO_RATE = 8000
MARK_EVERY_FRAMES = 10
CALLER_AUDIO_TO = ("upstream", "bargein")


class Codec(Actor):
    role = "codec"

    def __init__(self, ctx: ActorContext, caller_format: str = PCM16K) -> None:
        super().__init__(ctx)
        self.passthrough = caller_format == ULAW
        self.fed: set[int] = set()
        """Rates whose resampler holds audio of the current utterance."""
        self.inbound = StreamingResampler(TWILIO_RATE, CALLER_PCM_RATE)
        self.outbound: dict[int, StreamingResampler] = {}
        self.framer = Framer()
        self.utterance = -1
        self.frames_in_utterance = 0
        self.cut = 0
        """Utterances up to this number were interrupted: their audio is dropped."""

    def receiveMsg_CallerUlaw(self, msg: m.CallerUlaw) -> None:
        if self.passthrough:
            self.ctx.tell("upstream", msg)
            pcm8k = ulaw_decode(msg.payload).tobytes()
            self.ctx.tell("bargein", m.CallerAudio(msg.chunk, msg.timestamp, pcm8k, TWILIO_RATE, msg.at))
            return
        pcm = self.inbound.process(ulaw_decode(msg.payload))
        audio = m.CallerAudio(msg.chunk, msg.timestamp, pcm.tobytes(), CALLER_PCM_RATE, msg.at)
        for role in CALLER_AUDIO_TO:
            self.ctx.tell(role, audio)

    def receiveMsg_AgentAudio(self, msg: m.AgentAudio) -> None:
        if not self._open(msg.utterance):
            return
        resampler = self.outbound.get(msg.rate)
        if resampler is None:
            resampler = self.outbound[msg.rate] = StreamingResampler(msg.rate, TWILIO_RATE)
        self.fed.add(msg.rate)
        self._emit(resampler.process(np.frombuffer(msg.pcm, dtype="<i2")))

    def receiveMsg_AgentUlaw(self, msg: m.AgentUlaw) -> None:
        if self._open(msg.utterance):
            self._frame(msg.payload)

    def _open(self, utterance: int) -> bool:
        """False for audio of a cut utterance; announces a new one."""
        if utterance <= self.cut:
            return False
        if utterance != self.utterance:
            self.utterance = utterance
            self.frames_in_utterance = 0
            self.ctx.tell_parent(m.UtteranceStarting(utterance))
        return True

    def receiveMsg_AgentUtteranceEnd(self, msg: m.AgentUtteranceEnd) -> None:
        if msg.utterance <= self.cut:
            return
        for rate in self.fed:
            resampler = self.outbound[rate]
            # Push the filter's delay line out with zeros so the utterance ends whole.
            tail_in = math.ceil((resampler.delay_samples + 1) * rate / TWILIO_RATE)
            self._emit(resampler.process(np.zeros(tail_in, dtype=np.int16)))
            resampler.reset()
        self.fed.clear()
        last = self.framer.flush()
        if last is not None:
            self.ctx.tell_parent(m.OutboundFrame(last))
        self.ctx.tell_parent(m.OutboundMark(msg.utterance))

    def receiveMsg_Interrupted(self, msg: m.Interrupted) -> None:
        self.cut = max(self.cut, msg.utterance)
        self.framer.reset()
        for resampler in self.outbound.values():
            resampler.reset()
        self.fed.clear()

    def _emit(self, pcm8k: np.ndarray) -> None:
        if len(pcm8k):
            self._frame(ulaw_encode(pcm8k))

    def _frame(self, ulaw: bytes) -> None:
        for frame in self.framer.push(ulaw):
            self.ctx.tell_parent(m.OutboundFrame(frame))
            self.frames_in_utterance += 1
            if self.frames_in_utterance % MARK_EVERY_FRAMES == 0:
                self.ctx.tell_parent(m.OutboundMark(self.utterance, self.frames_in_utterance))
