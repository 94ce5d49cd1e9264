"""Which recogniser and voice the embedded pipeline uses (``STT``, ``TTS``), one of each
per process, shared by its calls.

``recognizer_for(speech, vocabulary)``: ``STT=whisper`` (the default: any English) gives
a ``pooled.WhisperRecognizer`` hinted with the vocabulary's ``hint``; ``STT=sphinx`` the
pocketsphinx ``stt.Recognizer`` whose language model is built from the vocabulary (fast,
streaming, but deaf outside it). ``tts_for(speech)``: ``TTS=piper`` (the default) the
Piper voice, ``TTS=espeak`` espeak-ng (robotic, nearly free). The neural ones share the
process's ``workers.SpeechPool`` (``SPEECH_WORKERS`` processes of ``SPEECH_THREADS``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..options import ConfigError
from . import models
from .stt import get_recognizer
from .tts import EspeakTTS
from .vocabulary import Vocabulary
from .workers import SpeechPool, WorkerConfig

if TYPE_CHECKING:
    from ..config import SpeechOptions

_pools: dict[WorkerConfig, SpeechPool] = {}
_voices: dict[Any, Any] = {}
_recognizers: dict[Any, Any] = {}


def worker_config(speech: SpeechOptions, listening: bool = True) -> WorkerConfig:
    return WorkerConfig(
        workers=speech.speech_workers,
        threads=speech.speech_threads,
        stt_model=speech.stt_model if speech.stt == "whisper" and listening else None,
        piper=speech.tts == "piper",
    )


def pool_for(speech: SpeechOptions, listening: bool = True) -> SpeechPool | None:
    """The process's speech workers for these options (``listening``: with the recogniser);
    None when neither engine is neural."""
    config = worker_config(speech, listening)
    if config.stt_model is None and not config.piper:
        return None
    if config not in _pools:
        # The model files are checked here, with a clear message, not in each worker.
        for variable, check, wanted in (
            ("STT_MODEL", lambda: models.whisper_dir(str(config.stt_model)), config.stt_model is not None),
            ("TTS", models.piper_voice, config.piper),
        ):
            try:
                if wanted:
                    check()
            except models.ModelError as exc:
                raise ConfigError(f"{variable}: {exc}") from None
        _pools[config] = SpeechPool(config)
    return _pools[config]


def backlog() -> int | None:
    """The jobs in hand of this process's speech pools when one is ``saturated`` (more work
    than it keeps up with), else None."""
    if any(p.saturated for p in _pools.values()):
        return sum(p.jobs for p in _pools.values())
    return None


def recognizer_for(speech: SpeechOptions, vocabulary: Vocabulary | None) -> Any:
    if speech.stt == "sphinx":
        return get_recognizer(vocabulary, decoders=speech.stt_decoders)
    from .pooled import WhisperRecognizer

    pool = pool_for(speech)
    assert pool is not None
    hint = vocabulary.hint if vocabulary is not None else ""
    key = (pool.config, hint)
    if key not in _recognizers:
        _recognizers[key] = WhisperRecognizer(pool, hint)
    return _recognizers[key]


def tts_for(speech: SpeechOptions, listening: bool = True) -> Any:
    """The voice; ``listening=False``: a remote back end's (its workers load no recogniser)."""
    if speech.tts == "espeak":
        key: Any = (speech.tts_voice, speech.tts_rate_wpm)
        if key not in _voices:
            _voices[key] = EspeakTTS(voice=speech.tts_voice, rate_wpm=speech.tts_rate_wpm)
        return _voices[key]
    from .pooled import PiperTTS

    pool = pool_for(speech, listening)
    assert pool is not None
    if pool.config not in _voices:
        _voices[pool.config] = PiperTTS(pool)
    return _voices[pool.config]
