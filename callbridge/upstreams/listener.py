"""Listening: VAD -> endpointing -> streaming STT, for one call.

Caller audio (16 kHz, 20 ms frames) goes through the VAD; the endpointer turns speech
probabilities into turn boundaries (start after sustained speech, end after
``ENDPOINT_SILENCE_MS`` of silence, never on a partial alone). The recogniser is fed
only while the caller speaks, plus ``PRE_ROLL_MS`` of audio from before the detected
start (so the first syllable is not lost), which keeps STT CPU per call low. Decoders
come from a process-wide pool and run off the event loop.

Limits: a turn longer than ``MAX_TURN_S`` is cut there by the endpointer and
transcribed (memory and latency bound); audio that arrives while a decoder is being
checked out is buffered (at most ``MAX_TURN_S`` of it).
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..config import Settings
from ..speech.endpoint import Endpointer, SpeechEnd, SpeechStart
from ..speech.stt import get_recognizer
from ..speech.vad import WINDOW_SAMPLES, Vad
from .base import Port

FRAME_MS = 20
PRE_ROLL_MS = 300
MAX_TURN_S = 30.0
_KEEP_MS = PRE_ROLL_MS + 2000 + 100  # a start is reported MIN_SPEECH_MS (<= 2 s) late


@dataclass(frozen=True)
class Heard:
    text: str
    last_speech: float
    """When the caller's last speech frame arrived (monotonic s)."""
    detected_at: float
    """When the endpointer declared the turn over (``last_speech`` + silence)."""
    final_at: float
    """When the final transcript was ready."""


class Listener:
    def __init__(self, port: Port, settings: Settings, on_heard: Callable[[Heard], None]) -> None:
        self.port = port
        self.on_heard = on_heard
        self.vad = Vad()
        self.endpointer = Endpointer(
            min_speech_ms=settings.min_speech_ms,
            end_silence_ms=settings.endpoint_silence_ms,
            pre_roll_ms=PRE_ROLL_MS,
            max_speech_ms=MAX_TURN_S * 1000,
            window_ms=1000 * WINDOW_SAMPLES[16000] / 16000,
        )
        self.recognizer = get_recognizer(decoders=settings.stt_decoders)
        self.recent: deque[tuple[float, np.ndarray]] = deque(maxlen=_KEEP_MS // FRAME_MS)
        self.turn: _Turn | None = None

    def feed(self, pcm16k: np.ndarray, now: float) -> None:
        if self.turn is None:
            self.recent.append((now, pcm16k))
        else:
            self.turn.feed(pcm16k)
        for probability in self.vad.process(pcm16k):
            for event in self.endpointer.update(probability, now):
                if isinstance(event, SpeechStart) and self.turn is None:
                    self._start(event)
                elif isinstance(event, SpeechEnd) and self.turn is not None:
                    self._end(event.at_last_speech, now)

    def _start(self, event: SpeechStart) -> None:
        self.port.note("speech_started", onset_ms_ago=round((self.port.now() - event.at) * 1000))
        self.port.caller_speech(event.at)
        # A frame stamped t holds audio from t - 20 ms: keep those that reach audio_from.
        audio = [pcm for t, pcm in self.recent if t > event.audio_from]
        self.recent.clear()
        turn = self.turn = _Turn(self, event.at, audio)
        self.port.spawn(turn.run(), "stt")

    def _end(self, last_speech: float, now: float) -> None:
        turn, self.turn = self.turn, None
        assert turn is not None
        self.port.note("speech_ended", speech_ms=round((last_speech - turn.started) * 1000))
        turn.end(last_speech, now)

    def reject(self) -> None:
        """Drop the turn in progress (it was echo, not the caller): nothing is transcribed;
        the endpointer starts afresh."""
        if self.turn is not None:
            self.port.note("speech_rejected")
            self.stop()
            self.endpointer.reset()

    def stop(self) -> None:
        if self.turn is not None:
            self.turn.cancelled = True
            self.turn.end(self.port.now(), self.port.now())
            self.turn = None


class _Turn:
    """One caller turn: check a decoder out, feed it, finalise, report."""

    def __init__(self, listener: Listener, started: float, pre_roll: list[np.ndarray]) -> None:
        self.listener = listener
        self.started = started
        self.buffered: list[np.ndarray] | None = pre_roll  # until the decoder is ours
        self.utterance = None
        self.ended = asyncio.Event()
        self.last_speech = started
        self.detected_at = started
        self.cancelled = False

    def feed(self, pcm: np.ndarray) -> None:
        if self.utterance is not None:
            self.utterance.feed(pcm)
        elif self.buffered is not None and len(self.buffered) < MAX_TURN_S * 1000 / FRAME_MS:
            self.buffered.append(pcm)

    def end(self, last_speech: float, detected_at: float) -> None:
        self.last_speech = last_speech
        self.detected_at = detected_at
        self.ended.set()

    async def run(self) -> None:
        port = self.listener.port
        utterance = await self.listener.recognizer.start(
            on_partial=lambda text: port.note("transcript.partial", text=text)
        )
        try:
            for pcm in self.buffered or ():
                utterance.feed(pcm)
            self.buffered = None
            self.utterance = utterance
            await self.ended.wait()
        except BaseException:
            await utterance.cancel()
            raise
        if self.cancelled:
            await utterance.cancel()
            return
        text = await utterance.finish()
        final_at = port.now()
        port.note("transcript.final", text=text, stt_ms=round((final_at - self.detected_at) * 1000, 1))
        self.listener.on_heard(Heard(text, self.last_speech, self.detected_at, final_at))
