"""Whisper speech-to-text (faster-whisper on CTranslate2, int8, CPU): one utterance in,
its text out. Runs inside a speech worker process (``speech.workers``), never on the
serving loop.

``WhisperEngine(name, threads).transcribe(pcm16k, hint)`` takes a whole utterance (int16
at 16 kHz, at most ``MAX_AUDIO_S``; longer is cut) and returns its text as Whisper writes
it: cased and punctuated ("I'd like to book for Monday at 3 PM."), ``""`` for no speech;
``transcribe_batch`` does several at once (a worker batches the turns queued together).

The encoder's context is the utterance plus ``CONTEXT_PAD_S``, not Whisper's fixed 30 s
window: CTranslate2 accepts the shorter input, which cuts the cost per utterance
~2.5x (base: 0.13-0.29 s rather than 0.48-0.66 s for 3-8 s clips; the same words on the
read-speech bench: docs/stt.md). Greedy decoding (beam 1: on the bench base made the
same errors as with beam 5, in less time). ``hint`` (the agent's vocabulary as a
sentence or two) is given to the decoder as previous text: it steers spelling, not what
can be heard. An utterance Whisper itself scores as no speech (``NO_SPEECH``) gives
``""``: a door slam that got past the VAD is not "Thank you."
"""

from __future__ import annotations

import re

import numpy as np

from .models import whisper_dir

SAMPLE_RATE = 16000
MAX_AUDIO_S = 30.0
CONTEXT_PAD_S = 1.0
"""Silence after the audio in the encoder's window (Whisper expects some)."""
MIN_CONTEXT_S = 8.0
"""The shortest window: in 3 s, short phrases came out looped ("Ten of clubs Ten of clubs
..."); from 8 s nearly never, at the same cost (docs/stt.md)."""
NO_SPEECH = 0.6
"""Whisper's own rule: no speech when its no-speech probability is over this *and* the
text's mean log-probability is under ``NO_SPEECH_LOGPROB``."""
NO_SPEECH_LOGPROB = -1.0
MAX_TOKENS = 200
_FRAMES_PER_S = 100  # mel frames


class WhisperEngine:
    """A loaded Whisper model; see the module doc. Not thread-safe: one per worker."""

    def __init__(self, name: str = "base", threads: int = 1) -> None:
        from faster_whisper import WhisperModel
        from faster_whisper.tokenizer import Tokenizer

        self.name = name
        self.model = WhisperModel(
            str(whisper_dir(name)), device="cpu", compute_type="int8", cpu_threads=threads
        )
        self.tokenizer = Tokenizer(
            self.model.hf_tokenizer, self.model.model.is_multilingual, task="transcribe", language="en"
        )
        self._hints: dict[str, list[int]] = {}

    def _prompt(self, hint: str) -> list[int]:
        tok = self.tokenizer
        prompt = []
        if hint:
            if hint not in self._hints:
                self._hints[hint] = tok.encode(" " + hint.strip())[-(MAX_TOKENS // 2) :]
            prompt = [tok.sot_prev, *self._hints[hint]]
        return [*prompt, *tok.sot_sequence, tok.no_timestamps]

    def transcribe(self, pcm16k: np.ndarray, hint: str = "") -> str:
        return self.transcribe_batch([pcm16k], hint)[0]

    def transcribe_batch(self, utterances: list[np.ndarray], hint: str = "") -> list[str]:
        """Several utterances with the same hint, decoded together: the windows padded to
        the longest, one ``generate`` (4 turns of 2-3 s: 0.44 s rather than 0.58 s in turn)."""
        import ctranslate2

        audios = [u[: int(MAX_AUDIO_S * SAMPLE_RATE)].astype(np.float32) / 32768.0 for u in utterances]
        texts = [""] * len(audios)
        todo = [i for i, a in enumerate(audios) if len(a) >= SAMPLE_RATE // 10]
        if not todo:
            return texts
        # The window is the audio and silence after it (padded as audio: the log-mel of
        # silence, not zeros, is what Whisper saw in training).
        longest = max(len(audios[i]) for i in todo) / SAMPLE_RATE
        seconds = min(MAX_AUDIO_S, max(longest + CONTEXT_PAD_S, MIN_CONTEXT_S))
        windows = []
        for i in todo:
            padded = np.zeros(int(seconds * SAMPLE_RATE), np.float32)
            padded[: len(audios[i])] = audios[i]
            windows.append(self.model.feature_extractor(padded, padding=0)[:, : int(seconds * _FRAMES_PER_S)])
        prompt = self._prompt(hint)
        results = self.model.model.generate(
            ctranslate2.StorageView.from_array(np.ascontiguousarray(np.stack(windows))),
            [prompt] * len(todo),
            beam_size=1,
            max_length=len(prompt) + min(MAX_TOKENS, 10 + int(8 * longest)),
            return_no_speech_prob=True,
            return_scores=True,
            suppress_blank=True,
        )
        for i, result in zip(todo, results, strict=True):
            if result.no_speech_prob > NO_SPEECH and result.scores[0] < NO_SPEECH_LOGPROB:
                continue
            texts[i] = undouble(unloop(" ".join(self.tokenizer.decode(result.sequences_ids[0]).split())))
        return texts


def unloop(text: str) -> str:
    """A transcript with Whisper's loop cut: its words end in one group of 1-8 words
    repeated to at least 8 words and 4 times (the last maybe cut short), kept once
    ("5 5 5 5 5 5 5 5" -> "5", "Ten of clubs Ten of clubs Ten of clubs Ten of" -> "Ten of
    clubs"); "no no no" and a digit said four times stay."""
    w = text.split()
    for n in range(1, 9):
        for start in range(len(w) - 2 * n + 1):
            unit = [x.strip(".,!?").lower() for x in w[start : start + n]]
            rest = [x.strip(".,!?").lower() for x in w[start:]]
            *whole, last = rest
            if (
                len(rest) >= max(4 * n, 8)
                and all(x == unit[i % n] for i, x in enumerate(whole))
                and unit[len(whole) % n].startswith(last)
            ):
                return " ".join(w[: start + n])
    return text


def undouble(text: str) -> str:
    """``text`` without Whisper's loops: a sentence of three words or more said again
    right after itself, and an unfinished start of the sentence before at the end ("He
    might go. He might go. He mi"). "Five. Five." stays."""
    sentences = re.findall(r"[^.!?]+[.!?]*", text)
    out: list[str] = []
    for i, sentence in enumerate(sentences):
        key = _key(sentence)
        if out and key:
            before = _key(out[-1])
            if key == before and len(key.split()) >= 3:
                continue
            if i == len(sentences) - 1 and sentence.rstrip()[-1:] not in ".!?" and before.startswith(key):
                continue
        out.append(sentence)
    return "".join(out).strip()


def _key(sentence: str) -> str:
    return " ".join(re.sub(r"[^\w' ]", " ", sentence.lower()).split())
