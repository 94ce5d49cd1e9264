"""Turn endpointing from VAD probabilities (pure logic: no I/O, no model, no clock).

Feed one VAD window at a time: ``events = ep.update(probability, now)``,
``now`` in seconds from any monotonic clock (the caller's: ``time.monotonic()``
in a call, made-up numbers in tests); events are returned, never raised.

States and events
    * Silence -> speech: a window with ``probability >= threshold`` opens a
      *candidate* run at its ``now``.  The run continues while windows stay at
      or above ``neg_threshold`` (hysteresis; default ``threshold - 0.15`` as
      in Silero's own iterator, but at least ``threshold / 2``) and is dropped on the first window below it.
      Once the run has lasted ``min_speech_ms`` (``now - run_start``),
      ``SpeechStart(at=run_start, audio_from=run_start - pre_roll_ms)`` is
      emitted.  So a cough or a door slam shorter than ``min_speech_ms`` never
      starts a turn.  ``audio_from`` tells the caller how far back to take
      buffered audio for the recogniser (word onsets are quieter than the
      VAD's trigger point); the endpointer keeps no audio itself.
    * Speech -> silence: every window at or above ``neg_threshold`` is speech
      and moves ``last_speech`` to its ``now``.  When ``now - last_speech >=
      end_silence_ms``, ``SpeechEnd(at_last_speech, at_detected=now)`` is
      emitted and the endpointer is back in silence.  Short pauses inside the
      turn (between words) are therefore bridged.
    * Only VAD silence ends a turn.  Transcripts are not an input: a partial
      hypothesis that "looks finished" never ends a turn, and the caller
      should not end one on it either.
    * A turn that lasts ``max_speech_ms`` is cut:
      ``SpeechEnd(..., forced=True)`` at that window; if speech goes on, a new
      turn starts after ``min_speech_ms`` as usual.  (The recogniser keeps at
      most 30 s per utterance by default; keep the two consistent.)
    * ``finish(now)`` ends a turn in progress (the call hung up): it returns
      ``[SpeechEnd(last_speech, now, forced=True)]`` or ``[]``.

Times are reported as given: ``at`` is the ``now`` of the run's first window.
With Silero's 32 ms windows stamped at their end, speech began up to one
window before ``at``; the default ``pre_roll_ms`` covers that with margin.

``window_ms``: the audio each probability covers (Silero at 16 kHz: 32 ms), with ``now``
stamped at its end. A run then counts its first window whole: it began at
``now - window_ms``, so ``min_speech_ms`` is measured on the audio, not from the end of
the first window (32 ms sooner). Default 0: the run begins at the window's ``now``.

``sound_from`` (optional, per ``update``): where the stretch of audible sound this window
belongs to began (``callbridge.speech.onset.SoundOnset``). The VAD's probability crosses
the threshold 1-3 windows after a word begins; a run opened by this window then begins at
``sound_from`` instead, but at most ``max_backdate_ms`` before the window's audio began
(default 0: never earlier). So ``min_speech_ms`` is counted from the first audible sample of
the speech, and the VAD must still have confirmed at least ``min_speech_ms -
max_backdate_ms`` of it, window by window, before a start is reported.

Limits (``ValueError`` past them): ``window_ms`` 0..100; ``max_backdate_ms``
0..``min_speech_ms`` (at least one window must confirm); ``0 < threshold < 1``;
``0 < neg_threshold <= threshold``; ``min_speech_ms`` 0..2000 (0: the first
speech window starts a turn); ``end_silence_ms`` 100..3000 (300..800 is the
usual range for a phone agent); ``pre_roll_ms`` 0..2000; ``max_speech_ms``
1000..600000.  ``update`` raises ``ValueError`` for a probability outside
0..1 (or NaN) and for ``now`` earlier than the previous ``now``.
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

    @property
    def in_speech(self) -> bool:
        """True between a SpeechStart and its SpeechEnd."""
        return self._in_speech

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
                if now - self._turn_start >= self.max_speech:
                    self._in_speech = False
                    events.append(SpeechEnd(now, now, forced=True))
                return events
            if now - self._last_speech >= self.end_silence:
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
