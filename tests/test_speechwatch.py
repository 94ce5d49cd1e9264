"""Our own detection of the caller starting to speak, for remote back ends (real VAD,
real synthesised speech)."""

from __future__ import annotations

import numpy as np

from callbridge.codecs.resample import StreamingResampler
from callbridge.config import Settings
from callbridge.upstreams.speechwatch import SpeechWatch

from .conftest import speech_8k


def feed(watch: SpeechWatch, pcm16k: np.ndarray, t0: float = 0.0) -> None:
    for i in range(0, len(pcm16k) - 319, 320):
        watch.feed(pcm16k[i : i + 320], t0 + (i + 320) / 16000)


def test_speech_start_reported_with_its_onset_quiet_frames_skip_the_model():
    starts: list[float] = []
    watch = SpeechWatch(Settings(min_speech_ms=200).speech, starts.append)
    quiet = np.zeros(16000, np.int16)
    feed(watch, quiet)
    assert watch.vad.windows == 0 and starts == []  # silence never reaches the model
    speech = StreamingResampler(8000, 16000).process(speech_8k("Wait, I want to cancel my appointment."))
    feed(watch, speech, t0=1.0)
    assert len(starts) == 1
    loud = np.nonzero(np.abs(speech.astype(np.int32)) > 1000)[0][0] / 16000 + 1.0
    assert loud - 0.1 <= starts[0] <= loud + 0.3
    watch.close()
