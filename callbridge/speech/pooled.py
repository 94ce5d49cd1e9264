"""The call-facing side of the speech workers: a Whisper recogniser and a Piper voice
with the same interfaces as the in-process ones (``speech.stt.Recognizer``/``Utterance``,
``speech.tts.EspeakTTS.stream``), their work done in a ``speech.workers.SpeechPool``.

``WhisperRecognizer.start()`` gives an utterance that keeps its audio here (at most
``max_utterance_s``; past it the audio is dropped and ``truncated`` set) and sends it
whole to a worker: Whisper does not stream, so there are no partial transcripts.
``hypothesis()`` transcribes what was fed so far *speculatively*: the listener asks at a
short pause (``ENDPOINT_COMPLETE_MS``), and when the turn then ends with no more speech
(at most ``REUSE_S`` more audio: the pause's tail), ``finish()`` returns that transcript
at once instead of starting again; speech after it makes ``finish()`` transcribe it all
afresh. Text comes cased and punctuated, as Whisper writes it. A failed job raises
``SttError``.

``PiperTTS.stream(text)`` has a worker speak ``text`` and yields its audio in
``CHUNK_MS`` chunks at ``sample_rate``; the last ``CACHE_SIZE`` texts' audio is kept, so a
greeting or a fallback line said before starts at once (``prewarm(texts)`` fills it), and a
text another call is having spoken right now waits for that job rather than queue its own.
A failed job raises ``SpeechError``.
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from collections.abc import AsyncGenerator, Callable, Iterable

import numpy as np

from .models import piper_voice
from .stt import SAMPLE_RATE, SttError, check_feed
from .workers import SpeechError, SpeechPool

REUSE_S = 0.15
CHUNK_MS = 60
CACHE_SIZE = 64


class WhisperRecognizer:
    """Whisper through ``pool``; ``hint``: the agent's words, as text (``Vocabulary.hint``)."""

    hypothesis_timeout_s = 1.0
    """How long a turn's judge waits for ``hypothesis()`` (a whole transcription)."""

    def __init__(self, pool: SpeechPool, hint: str = "", max_utterance_s: float = 30.0) -> None:
        self.pool = pool
        self.hint = hint
        self.max_samples = int(max_utterance_s * SAMPLE_RATE)
        self.mode = f"whisper-{pool.config.stt_model}"

    async def prewarm(self) -> None:
        await self.pool.start()

    async def start(self, on_partial: Callable[[str], None] | None = None) -> WhisperUtterance:
        return WhisperUtterance(self)


class WhisperUtterance:
    """One caller turn; see the module doc. Use from the event loop thread."""

    def __init__(self, rec: WhisperRecognizer) -> None:
        self._rec = rec
        self._chunks: list[np.ndarray] = []
        self._samples = 0
        self._open = True
        self._guess: tuple[int, asyncio.Task[str]] | None = None
        self.truncated = False

    @property
    def samples(self) -> int:
        return self._samples

    def feed(self, pcm16k: np.ndarray) -> None:
        check_feed(pcm16k, self._open)
        room = self._rec.max_samples - self._samples
        if len(pcm16k) > room:
            self.truncated = True
            pcm16k = pcm16k[: max(0, room)]
        if len(pcm16k):
            self._chunks.append(pcm16k.copy())
            self._samples += len(pcm16k)

    def _transcribe(self) -> asyncio.Task[str]:
        audio = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        return asyncio.ensure_future(self._rec.pool.run("transcribe", audio, self._rec.hint))

    async def hypothesis(self) -> str:
        if not self._open:
            return ""
        if self._guess is None or self._guess[0] != self._samples:
            self._guess = (self._samples, self._transcribe())
        try:
            return await asyncio.shield(self._guess[1])
        except SpeechError:
            return ""

    async def finish(self) -> str:
        self._open = False
        guess = self._guess
        if guess is not None and self._samples - guess[0] <= REUSE_S * SAMPLE_RATE:
            try:
                return await guess[1]
            except SpeechError:
                pass  # transcribe afresh
        try:
            return await self._transcribe()
        except SpeechError as exc:
            raise SttError(str(exc)) from None

    async def cancel(self) -> None:
        self._open = False
        self._chunks = []


class PiperTTS:
    """The Piper voice through ``pool``; see the module doc."""

    def __init__(self, pool: SpeechPool) -> None:
        self.pool = pool
        config = json.loads(piper_voice().config.read_text(encoding="utf-8"))
        self.sample_rate = int(config["audio"]["sample_rate"])
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._speaking: dict[str, asyncio.Future[np.ndarray]] = {}
        """Texts being spoken now: a second call asking for one waits for the same job."""

    def __repr__(self) -> str:
        return f"PiperTTS(rate={self.sample_rate}, cached={len(self._cache)})"

    async def prewarm(self, texts: Iterable[str] = ()) -> None:
        await self.pool.start()
        for text in texts:
            await self.audio(text)

    async def audio(self, text: str) -> np.ndarray:
        """All of ``text``'s audio (from the cache when it was said lately)."""
        audio = self._cache.get(text)
        if audio is not None:
            self._cache.move_to_end(text)
            return audio
        job = self._speaking.get(text)
        if job is None or job.get_loop() is not asyncio.get_running_loop():
            job = self._speaking[text] = asyncio.ensure_future(self.pool.run("speak", text))
            job.add_done_callback(
                lambda j: self._speaking.pop(text) if self._speaking.get(text) is j else None
            )
        audio = await asyncio.shield(job)
        self._cache[text] = audio
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return audio

    async def stream(self, text: str) -> AsyncGenerator[np.ndarray, None]:
        audio = await self.audio(text)
        step = self.sample_rate * CHUNK_MS // 1000
        for i in range(0, len(audio), step):
            yield audio[i : i + step]
