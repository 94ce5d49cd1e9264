"""The caller starting to talk, detected here, for a remote back end: what our BargeIn
needs to cut the agent even when the remote does not say so (or says it late).

Silero VAD (16 or 8 kHz) and the endpointer with ``MIN_SPEECH_MS``, as in the embedded
listener, but nothing is transcribed: each start of speech is reported with its onset
(``on_start(onset)``), and BargeIn judges it (agent audible? the agent's own echo?).
Per call: ~3 KB of VAD state; ``close()`` releases it.

Cost: the VAD is ~65 us per 20 ms frame, so it runs only where it can matter: the caller
asks ``feed`` only while the agent may be audible, and frames quieter than
``QUIET_RMS`` (line noise, silence) skip the model and count as silence (~2 us).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from ..speech.endpoint import Endpointer, SpeechStart
from ..speech.vad import WINDOW_SAMPLES, Vad

if TYPE_CHECKING:
    from ..config import SpeechOptions

QUIET_RMS = 150.0
"""Frames below this RMS (int16; about -47 dBFS) are not speech for this purpose."""


class SpeechWatch:
    def __init__(self, speech: SpeechOptions, on_start: Callable[[float], None], rate: int = 16000) -> None:
        self.on_start = on_start
        self.vad = Vad(rate)
        self.endpointer = Endpointer(
            min_speech_ms=speech.min_speech_ms,
            end_silence_ms=speech.endpoint_silence_ms,
            pre_roll_ms=0,
            window_ms=1000 * WINDOW_SAMPLES[rate] / rate,
        )

    def feed(self, pcm: np.ndarray, now: float) -> None:
        """One frame of the caller (int16 at the watch's rate), received at ``now``."""
        x = pcm.astype(np.float32)
        if float(np.dot(x, x)) < QUIET_RMS * QUIET_RMS * len(x):
            self._events(0.0, now)
            return
        for probability in self.vad.process(pcm):
            self._events(probability, now)

    def _events(self, probability: float, now: float) -> None:
        for event in self.endpointer.update(probability, now):
            if isinstance(event, SpeechStart):
                self.on_start(event.at)

    def reset(self) -> None:
        """Start afresh (the speech in progress was the agent's echo, or the agent went
        quiet and nothing was watched for a while)."""
        self.endpointer.reset()
        self.vad.reset()

    def close(self) -> None:
        self.vad.close()
