"""Text to agent audio: one utterance at a time, in order, sentence by sentence.

An utterance is opened, fed text pieces as an agent produces them, and closed. Complete
sentences (``split_sentences``) go to the TTS at once, so the first sentence plays while
the agent is still writing the rest. Audio leaves through the ``Port`` tagged with the
utterance number; ``utterance_end`` follows its last chunk (the Codec then sends the
utterance's mark).

Limits: ``MAX_QUEUED`` utterances waiting; past it a new utterance is refused (None) and
noted. ``cancel()`` drops every queued and playing utterance (for barge-in), and
``heard(utterance, played_ms)`` says which words of an utterance had been played by then
(each sentence's place in the audio is recorded; within a sentence, words are assumed
evenly spread). Timings of the last ``KEEP_TIMINGS`` utterances are kept.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from typing import TYPE_CHECKING, Protocol

import numpy as np

from ..speech.engines import tts_for
from ..speech.tts import split_sentences
from .base import Port

if TYPE_CHECKING:
    from ..config import SpeechOptions

MAX_QUEUED = 16
KEEP_TIMINGS = 8
FALLBACK = "One moment, please."
"""Said while a failed back end or agent is retried."""
APOLOGY = "I'm sorry, I'm having trouble right now. Please call again later. Goodbye."
"""Said when the retries are used up; the call ends after it."""
GOODBYE = "Goodbye."
"""Said when an agent hangs up (a tool) without a word of its own."""


class Voice(Protocol):
    """A TTS engine (``speech.tts.EspeakTTS``, ``speech.pooled.PiperTTS``)."""

    sample_rate: int

    def stream(self, text: str) -> AsyncGenerator[np.ndarray, None]: ...


def shared_tts(speech: SpeechOptions, listening: bool = True) -> Voice:
    """The process's voice (``TTS``), shared by every call's Speaker (``speech.engines``)."""
    return tts_for(speech, listening)


async def prewarm_voice(voice: Voice, texts: tuple[str, ...]) -> None:
    """Load ``voice``; a neural one also speaks ``texts`` now, sentence by sentence, so they
    start at once when said (the greeting, the fallback lines)."""
    prewarm = getattr(voice, "prewarm", None)
    if prewarm is not None:
        await prewarm([s for text in texts for s in split_sentences(text)])


class Utterance:
    def __init__(self, number: int, kind: str, on_first_audio: Callable[[int], None] | None) -> None:
        self.number = number
        self.kind = kind
        self.text = ""
        self._pending = ""
        self.sentences: asyncio.Queue[str | None] = asyncio.Queue()
        self.on_first_audio = on_first_audio
        self.closed = False

    def add(self, piece: str) -> None:
        """More text; complete sentences are queued for speech at once."""
        self.text += piece
        text = self._pending + piece
        parts = split_sentences(text)
        ends_sentence = text.rstrip()[-1:] in (".", "!", "?", ";")
        complete = parts if ends_sentence else parts[:-1]
        self._pending = "" if ends_sentence else (parts[-1] if parts else "")
        for sentence in complete:
            self.sentences.put_nowait(sentence)

    def interject(self, text: str) -> None:
        """Say ``text`` next, between what was added so far (a sentence not finished yet is
        said first) and what comes after: a slow tool's filler in the middle of a reply."""
        if self._pending.strip():
            self.sentences.put_nowait(self._pending)
        self._pending = ""
        self.text += f" {text} "
        self.sentences.put_nowait(text)

    def close(self) -> None:
        if self._pending.strip():
            self.sentences.put_nowait(self._pending)
        self._pending = ""
        self.closed = True
        self.sentences.put_nowait(None)


class Speaker:
    def __init__(self, port: Port, tts: Voice, new_number: Callable[[], int]) -> None:
        self.port = port
        self.tts = tts
        self._new_number = new_number
        self._queue: asyncio.Queue[Utterance] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.current: Utterance | None = None
        self.timings: dict[int, list[tuple[str, float, float]]] = {}
        """utterance -> [(sentence, start_ms, end_ms)] in the utterance's audio."""

    def open(self, kind: str, on_first_audio: Callable[[int], None] | None = None) -> Utterance | None:
        if self._queue.qsize() >= MAX_QUEUED:
            self.port.note("utterance_dropped", kind=kind)
            return None
        utterance = Utterance(self._new_number(), kind, on_first_audio)
        self._queue.put_nowait(utterance)
        if self._task is None or self._task.done():
            self._task = self.port.spawn(self._run(), "speaker")
        return utterance

    def say(self, text: str, kind: str) -> Utterance | None:
        utterance = self.open(kind)
        if utterance is not None:
            utterance.add(text)
            utterance.close()
        return utterance

    def cancel(self) -> None:
        """Stop speaking now: the utterance being synthesised and all queued ones."""
        while not self._queue.empty():
            self._queue.get_nowait()
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self.current = None

    def heard(self, utterance: int, played_ms: float) -> str:
        """The part of ``utterance`` that had played after ``played_ms`` of its audio."""
        words: list[str] = []
        for sentence, start, end in self.timings.get(utterance, []):
            if played_ms >= end:
                words.extend(sentence.split())
            elif played_ms > start:
                parts = sentence.split()
                words.extend(parts[: int(len(parts) * (played_ms - start) / (end - start))])
        return " ".join(words)

    async def _run(self) -> None:
        while True:
            self.current = await self._queue.get()
            await self._speak(self.current)
            self.current = None

    async def _speak(self, utterance: Utterance) -> None:
        port, tts = self.port, self.tts
        requested = port.now()
        samples = 0
        timings = self.timings[utterance.number] = []
        while len(self.timings) > KEEP_TIMINGS:
            del self.timings[next(iter(self.timings))]
        while (sentence := await utterance.sentences.get()) is not None:
            start_ms = samples * 1000 / tts.sample_rate
            async with aclosing(tts.stream(sentence)) as chunks:
                async for chunk in chunks:
                    if samples == 0:
                        port.note(
                            f"{utterance.kind}_audio",
                            utterance=utterance.number,
                            latency_ms=round((port.now() - requested) * 1000.0, 1),
                        )
                        if utterance.on_first_audio is not None:
                            utterance.on_first_audio(utterance.number)
                    samples += len(chunk)
                    port.audio(utterance.number, chunk.tobytes(), tts.sample_rate)
            timings.append((sentence, start_ms, samples * 1000 / tts.sample_rate))
        port.utterance_end(utterance.number)
        port.note(
            f"{utterance.kind}_synthesised",
            utterance=utterance.number,
            audio_ms=round(samples * 1000 / tts.sample_rate),
            text=utterance.text[:500],
        )
