"""Listening: VAD -> endpointing -> streaming STT, for one call.

Caller audio (16 kHz, 20 ms frames) goes through the VAD; the endpointer turns speech
probabilities into turn boundaries (start after sustained speech, end after
``ENDPOINT_SILENCE_MS`` of silence). Turns end on meaning too: after
``ENDPOINT_COMPLETE_MS`` of a pause the recogniser's hypothesis over all the turn's audio
(``Utterance.hypothesis``) is judged (``speech.turnend.judge``, with the agent's
``turn_complete``): a complete request ends the turn at once, a clearly unfinished one
waits ``ENDPOINT_UNFINISHED_MS``; no answer within the recogniser's
``hypothesis_timeout_s`` or no opinion:
the silence decides. Each verdict is noted (``turn.judged``). ``MIN_SPEECH_MS`` is
counted from the first audible sample of the speech (``speech.onset.SoundOnset``; at most
``MAX_BACKDATE_MS`` before the VAD's first speech window), and checked on every 20 ms
frame, not only every 32 ms VAD window: a barge-in is reported ~200-225 ms after the
caller's first audible sample, not 250-300 ms. The clock is the caller's media time
(``CallerAudio.at``), not arrival: a stalled line's burst is consumed at once and a
stall never counts as silence. The recogniser is fed
only while the caller speaks, plus ``PRE_ROLL_MS`` of audio from before the detected
start (so the first syllable is not lost), which keeps STT CPU per call low. Decoders
come from a process-wide pool and run off the event loop (``speech.engines``: Whisper in
the speech worker processes, or pocketsphinx on threads).

Limits: a turn longer than ``MAX_TURN_S`` is cut there by the endpointer and
transcribed (memory and latency bound); audio that arrives while a decoder is being
checked out is buffered (at most ``MAX_TURN_S`` of it).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..speech.endpoint import Endpointer, SpeechEnd, SpeechStart
from ..speech.engines import recognizer_for
from ..speech.onset import SoundOnset
from ..speech.turnend import Verdict
from ..speech.vad import WINDOW_SAMPLES, Vad
from ..speech.vocabulary import Vocabulary
from .base import Port

if TYPE_CHECKING:
    from ..config import SpeechOptions

FRAME_MS = 20
PRE_ROLL_MS = 300
MAX_BACKDATE_MS = 80
"""The VAD must itself have confirmed at least MIN_SPEECH_MS - this of a turn's start."""
ONSET_GAP_MS = 25
"""Near silence this long ends a stretch of sound (a door slam 40 ms before a cough)."""
MAX_TURN_S = 30.0
HOLD_AFTER_MS = 120
"""A pause in a turn reaches the recogniser only once speech resumes (or, its first
``TAIL_MS``, when the turn ends): decoding the silence makes pocketsphinx guess a short
word at the end ("...my appointment at"), which the pause's verdict would read."""
TAIL_MS = 100
_KEEP_MS = PRE_ROLL_MS + 2000 + 100  # a start is reported MIN_SPEECH_MS (<= 2 s) late


@dataclass(frozen=True)
class Heard:
    text: str
    last_speech: float
    """The media time of the caller's last speech frame (monotonic s)."""
    detected_at: float
    """When the endpointer declared the turn over (``last_speech`` + silence)."""
    final_at: float
    """When the final transcript was ready."""


class Listener:
    def __init__(
        self,
        port: Port,
        speech: SpeechOptions,
        on_heard: Callable[[Heard], None],
        judge: Callable[[str], Verdict] | None = None,
    ) -> None:
        self.port = port
        self.on_heard = on_heard
        self.judge = judge
        """What a pause's hypothesis says of the turn; None: the silence alone decides."""
        self.complete_s = speech.endpoint_complete_ms / 1000.0
        self.unfinished_ms = speech.endpoint_unfinished_ms
        self.asked: float | None = None
        """The last speech of the pause whose hypothesis was asked for (once a pause)."""
        self.now = 0.0
        """The media time of the latest frame."""
        self.vad = Vad()
        self.endpointer = Endpointer(
            min_speech_ms=speech.min_speech_ms,
            end_silence_ms=speech.endpoint_silence_ms,
            pre_roll_ms=PRE_ROLL_MS,
            max_speech_ms=MAX_TURN_S * 1000,
            window_ms=1000 * WINDOW_SAMPLES[16000] / 16000,
            max_backdate_ms=min(MAX_BACKDATE_MS, speech.min_speech_ms),
        )
        self.sound = SoundOnset(16000, max_gap_ms=ONSET_GAP_MS)
        self.speech = speech
        self.recognizer: Any = None
        """``speech.stt.Recognizer`` or ``speech.pooled.WhisperRecognizer`` (``STT``)."""
        self.recent: deque[tuple[float, np.ndarray]] = deque(maxlen=_KEEP_MS // FRAME_MS)
        self.turn: _Turn | None = None

    def listen_for(self, vocabulary: Vocabulary | None) -> None:
        """What the caller is expected to say (the agent's vocabulary; None: any English).
        Call it before the first frame."""
        self.recognizer = recognizer_for(self.speech, vocabulary)

    def feed(self, pcm16k: np.ndarray, now: float) -> None:
        """One 20 ms frame, ``now`` its media time (the end of its audio)."""
        self.now = now
        if self.turn is None:
            self.recent.append((now, pcm16k))
        else:
            last = self.endpointer.last_speech
            self.turn.feed(pcm16k, pause=last is not None and (now - last) * 1000 > HOLD_AFTER_MS)
        self.sound.feed(pcm16k, now)
        sound_from = self.sound.since(now)
        events = [e for p in self.vad.process(pcm16k) for e in self.endpointer.update(p, now, sound_from)]
        events += self.endpointer.advance(now, sound_from is not None)
        for event in events:
            if isinstance(event, SpeechStart) and self.turn is None:
                self._start(event)
            elif isinstance(event, SpeechEnd) and self.turn is not None:
                self._end(event.at_last_speech, now)
        last = self.endpointer.last_speech
        if (
            self.judge is not None
            and self.turn is not None
            and last is not None
            and last != self.asked
            and now - last >= self.complete_s
        ):
            self.asked = last
            self.port.spawn(self.turn.judge(last), "turnend")

    def judged(self, turn: _Turn, last_speech: float, text: str) -> None:
        """The hypothesis of the pause after ``last_speech``: end the turn now, wait
        longer, or leave it to the silence; nothing if the caller spoke again since."""
        if turn is not self.turn or self.endpointer.last_speech != last_speech or self.judge is None:
            return
        verdict = self.judge(text)
        self.port.note("turn.judged", verdict=verdict, pause_ms=round((self.now - last_speech) * 1000))
        if verdict == "complete":
            end = self.endpointer.cut(self.now)
            if end is not None:
                self._end(end.at_last_speech, end.at_detected)
        elif verdict == "unfinished":
            self.endpointer.wait_longer(self.unfinished_ms)

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
        self.held: list[np.ndarray] = []
        """The pause in progress (``HOLD_AFTER_MS``), not yet given to the recogniser."""
        self.utterance: Any = None
        self.ended = asyncio.Event()
        self.last_speech = started
        self.detected_at = started
        self.cancelled = False

    def feed(self, pcm: np.ndarray, pause: bool = False) -> None:
        """One frame; in a ``pause``, held until speech resumes (then all of it goes on)."""
        if pause:
            if len(self.held) < MAX_TURN_S * 1000 / FRAME_MS:
                self.held.append(pcm)
            return
        held, self.held = self.held, []
        for frame in held:
            self._push(frame)
        self._push(pcm)

    def _push(self, pcm: np.ndarray) -> None:
        if self.utterance is not None:
            self.utterance.feed(pcm)
        elif self.buffered is not None and len(self.buffered) < MAX_TURN_S * 1000 / FRAME_MS:
            self.buffered.append(pcm)

    async def judge(self, last_speech: float) -> None:
        """Ask the decoder for its hypothesis over the turn so far, for the pause after
        ``last_speech``; tell the listener (``Listener.judged``)."""
        if self.utterance is None:  # the decoder is not ours yet: no opinion
            return
        try:
            timeout = self.listener.recognizer.hypothesis_timeout_s
            text = await asyncio.wait_for(self.utterance.hypothesis(), timeout)
        except TimeoutError:
            return
        self.listener.judged(self, last_speech, text)

    def end(self, last_speech: float, detected_at: float) -> None:
        for frame in self.held[: TAIL_MS // FRAME_MS]:
            self._push(frame)
        self.held = []
        self.last_speech = last_speech
        self.detected_at = detected_at
        self.ended.set()

    async def run(self) -> None:
        port = self.listener.port
        recognizer = self.listener.recognizer
        assert recognizer is not None, "Listener.listen_for() was not called"
        utterance = await recognizer.start(on_partial=lambda text: port.note("transcript.partial", text=text))
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
