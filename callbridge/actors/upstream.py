"""Upstream child: the voice-AI back end of the call.

For now the embedded agent speaks: the greeting when the call starts, and a read-back
of each DTMF key ("You pressed 5."). Speech comes from the embedded espeak-ng TTS,
streamed sentence by sentence (the first audio leaves before the rest is synthesised);
one utterance plays at a time, in order. Caller audio is counted; understanding it is
the embedded-agent issue's job.

Restart: a fresh Upstream gets ``CallStarted`` with ``generation > 0``; it does not greet
again, and numbers its utterances from ``generation * 10000`` so mark names stay
unique within the call. An utterance cut off by the crash is not repeated.
"""

from __future__ import annotations

import asyncio
from contextlib import aclosing
from functools import lru_cache
from typing import Any

from ..config import Settings
from ..speech.tts import EspeakTTS, split_sentences
from . import messages as m
from .runtime import Actor, ActorContext

DTMF_WORDS = {"*": "star", "#": "pound"}
MAX_PENDING_UTTERANCES = 16


@lru_cache(maxsize=8)
def _tts(voice: str, rate_wpm: int) -> EspeakTTS:
    return EspeakTTS(voice=voice, rate_wpm=rate_wpm)


class Upstream(Actor):
    role = "upstream"

    def __init__(self, ctx: ActorContext, settings: Settings) -> None:
        super().__init__(ctx)
        self.settings = settings
        self.queue: asyncio.Queue[tuple[int, str, str]] = asyncio.Queue(MAX_PENDING_UTTERANCES)
        self.speaker: asyncio.Task[Any] | None = None
        self.next_utterance = 1
        self.started_at = 0.0
        self.caller_frames = 0

    def receiveMsg_CallStarted(self, msg: m.CallStarted) -> None:  # noqa: N802
        self.next_utterance = msg.generation * 10000 + 1
        self.started_at = self.ctx.now()
        if msg.generation == 0 and self.settings.greeting.strip():
            self.say(self.settings.greeting, "greeting")

    def receiveMsg_DtmfReceived(self, msg: m.DtmfReceived) -> None:  # noqa: N802
        self.say(f"You pressed {DTMF_WORDS.get(msg.digit, msg.digit)}.", "dtmf_reply")

    def receiveMsg_CallerAudio(self, msg: m.CallerAudio) -> None:  # noqa: N802
        self.caller_frames += 1

    def say(self, text: str, kind: str) -> None:
        """Queue an utterance; past ``MAX_PENDING_UTTERANCES`` it is dropped and noted."""
        utterance = self.next_utterance
        self.next_utterance += 1
        try:
            self.queue.put_nowait((utterance, text, kind))
        except asyncio.QueueFull:
            self.ctx.note("utterance_dropped", utterance=utterance, kind=kind)
            return
        if self.speaker is None:
            self.speaker = self.ctx.spawn(self._speak_loop(), "speaker")

    async def _speak_loop(self) -> None:
        tts = _tts(self.settings.tts_voice, self.settings.tts_rate_wpm)
        while True:
            utterance, text, kind = await self.queue.get()
            await self._speak(tts, utterance, text, kind)

    async def _speak(self, tts: EspeakTTS, utterance: int, text: str, kind: str) -> None:
        requested = self.ctx.now()
        samples = 0
        for sentence in split_sentences(text):
            async with aclosing(tts.stream(sentence)) as chunks:
                async for chunk in chunks:
                    if samples == 0:
                        self.ctx.note(
                            f"{kind}_audio",
                            utterance=utterance,
                            latency_ms=round((self.ctx.now() - requested) * 1000.0, 1),
                            text=text[:200],
                        )
                    samples += len(chunk)
                    self.ctx.tell("codec", m.AgentAudio(utterance, chunk.tobytes(), tts.sample_rate))
        self.ctx.tell("codec", m.AgentUtteranceEnd(utterance))
        self.ctx.note(
            f"{kind}_synthesised", utterance=utterance, audio_ms=round(samples * 1000 / tts.sample_rate)
        )
