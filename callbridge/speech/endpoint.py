"""Turn endpointing from VAD probabilities (pure logic: no I/O, no model, no clock).

Feed one VAD window at a time: ``events = ep.update(probability, now, sound_from)``, ``now``
in seconds from the caller's monotonic clock; events are returned, never raised.
``SpeechStart`` comes once speech has lasted ``min_speech_ms`` (a cough never starts a turn),
its ``audio_from`` saying how far back to take buffered audio for the recogniser;
``SpeechEnd`` after ``end_silence_ms`` of VAD silence, forced at ``max_speech_ms`` or by
``finish(now)`` when the call hangs up; the caller may end the turn sooner (``cut``: the
transcript says it is complete) or let it run longer (``wait_longer``: it is clearly
unfinished), for the silence in progress. ``sound_from``
(``speech.onset.SoundOnset``) back-dates a run to the first audible sample, by at most
``max_backdate_ms``. Bad parameters, a probability outside 0..1 and a ``now`` that goes
backwards raise ``ValueError``.

States, hysteresis, back-dating and every limit: docs/speech.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Endpointer", "SpeechEnd", "SpeechStart"]


@dataclass(frozen=True)
class SpeechStart:
    """A turn began: sustained speech since ``at`` (seconds, caller's clock).
    ``audio_from = at - pre_roll``: where the recogniser's audio should start."""

    at: float
    audio_from: float


@dataclass(frozen=True)
class SpeechEnd:
    """A turn ended: last speech window at ``at_last_speech``, detected at
    ``at_detected`` (``end_silence_ms`` later, or earlier if ``forced``).
    ``forced``: cut by ``max_speech_ms`` or :meth:`Endpointer.finish`."""

    at_last_speech: float
    at_detected: float
    forced: bool = False


Event = SpeechStart | SpeechEnd


def _check(name: str, value: float, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise ValueError(f"{name} must be a number in {lo:g}..{hi:g}, got {value!r}")
    return float(value)


class Endpointer:
    """Per-stream turn detector; see the module docstring."""

    def __init__(
        self,
        threshold: float = 0.5,
        min_speech_ms: float = 200.0,
        end_silence_ms: float = 500.0,
        pre_roll_ms: float = 300.0,
        *,
        neg_threshold: float | None = None,
        max_speech_ms: float = 30000.0,
        window_ms: float = 0.0,
        max_backdate_ms: float = 0.0,
    ) -> None:
        self.threshold = _check("threshold", threshold, 0.0, 1.0)
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be strictly between 0 and 1, got {threshold!r}")
        if neg_threshold is None:
            neg_threshold = max(self.threshold - 0.15, self.threshold / 2)
        self.neg_threshold = _check("neg_threshold", neg_threshold, 0.0, self.threshold)
        if self.neg_threshold <= 0.0:
            raise ValueError("neg_threshold must be > 0")
        self.min_speech = _check("min_speech_ms", min_speech_ms, 0.0, 2000.0) / 1000.0
        self.end_silence = _check("end_silence_ms", end_silence_ms, 100.0, 3000.0) / 1000.0
        self.pre_roll = _check("pre_roll_ms", pre_roll_ms, 0.0, 2000.0) / 1000.0
        self.max_speech = _check("max_speech_ms", max_speech_ms, 1000.0, 600000.0) / 1000.0
        self.window = _check("window_ms", window_ms, 0.0, 100.0) / 1000.0
        self.max_backdate = _check("max_backdate_ms", max_backdate_ms, 0.0, min_speech_ms) / 1000.0
        self.reset()

    def reset(self) -> None:
        """Back to silence, forgetting any candidate run and the last ``now``."""
        self._in_speech = False
        self._run_start: float | None = None  # candidate run (in silence)
        self._turn_start = 0.0
        self._last_speech = 0.0
        self._last_now = -math.inf
        self._silence = self.end_silence  # of the silence in progress

    @property
    def in_speech(self) -> bool:
        """True between a SpeechStart and its SpeechEnd."""
        return self._in_speech

    @property
    def last_speech(self) -> float | None:
        """In a turn: its latest speech window (s); None outside one."""
        return self._last_speech if self._in_speech else None

    def cut(self, now: float) -> SpeechEnd | None:
        """End the turn in progress now (its words say it is complete); None outside one."""
        if not self._in_speech:
            return None
        self._in_speech = False
        return SpeechEnd(self._last_speech, max(now, self._last_speech))

    def wait_longer(self, silence_ms: float) -> None:
        """For the silence in progress only, end the turn after ``silence_ms`` (100..3000)
        instead of ``end_silence_ms`` (its words say it is unfinished); speech resets it."""
        silence = _check("silence_ms", silence_ms, 100.0, 3000.0) / 1000.0
        if self._in_speech:
            self._silence = silence

    def update(self, probability: float, now: float, sound_from: float | None = None) -> list[Event]:
        """Feed one VAD window; returns the events it caused (none or one).
        ``sound_from``: where the sound this window belongs to began, if known."""
        if not 0.0 <= probability <= 1.0:  # NaN fails too
            raise ValueError(f"probability must be in 0..1, got {probability!r}")
        if not now >= self._last_now:
            raise ValueError(f"time went backwards: {now!r} < {self._last_now!r}")
        self._last_now = now
        events: list[Event] = []
        if self._in_speech:
            if probability >= self.neg_threshold:
                self._last_speech = now
                self._silence = self.end_silence
                if now - self._turn_start >= self.max_speech:
                    self._in_speech = False
                    events.append(SpeechEnd(now, now, forced=True))
                return events
            if now - self._last_speech >= self._silence:
                self._in_speech = False
                events.append(SpeechEnd(self._last_speech, now))
            return events
        # Silence: track a candidate run.
        if self._run_start is None:
            if probability >= self.threshold:
                self._run_start = run_start(now - self.window, sound_from, self.max_backdate)
        elif probability < self.neg_threshold:
            self._run_start = None
        if self._run_start is not None and now - self._run_start >= self.min_speech:
            events.append(self._start_turn(now))
        return events

    def advance(self, now: float, sounding: bool) -> list[Event]:
        """Between VAD windows (every 20 ms frame, say): a candidate run that has lasted
        ``min_speech_ms`` by ``now`` starts a turn now, instead of at the next window (up to
        one window later), if its sound is still going on (``sounding``: audible audio in the
        latest frame). The audio since the last window is judged by its level alone; every
        window of the run before it was speech to the VAD. Same errors as :meth:`update`."""
        if not now >= self._last_now:
            raise ValueError(f"time went backwards: {now!r} < {self._last_now!r}")
        self._last_now = now
        if self._in_speech or self._run_start is None or not sounding:
            return []
        if now - self._run_start < self.min_speech:
            return []
        return [self._start_turn(now)]

    def _start_turn(self, now: float) -> SpeechStart:
        at = self._run_start
        assert at is not None
        self._run_start = None
        self._in_speech = True
        self._turn_start = at
        self._last_speech = now
        self._silence = self.end_silence
        return SpeechStart(at, at - self.pre_roll)

    def finish(self, now: float) -> list[Event]:
        """End of stream: close a turn in progress (``forced``); then reset."""
        events: list[Event] = []
        if self._in_speech:
            events.append(SpeechEnd(self._last_speech, max(now, self._last_speech), forced=True))
        self.reset()
        return events


def run_start(window_start: float, sound_from: float | None, max_backdate: float) -> float:
    """Where a run opened by a window whose audio began at ``window_start`` begins: at the
    start of its sound if that is earlier, but no more than ``max_backdate`` (s) earlier."""
    if sound_from is None or sound_from >= window_start:
        return window_start
    return max(sound_from, window_start - max_backdate)
