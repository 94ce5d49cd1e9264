"""``Vocabulary``: what callers are expected to say, for the speech recogniser.

An agent that knows its callers' words hands one to the recogniser (``Agent.vocabulary()``);
``speech.stt`` (pocketsphinx) builds a language model and a cut-down dictionary from its
sentences; ``speech.whisper`` is given its ``hint``. Without one: any English.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Vocabulary:
    """``sentences``: lowercase, space-separated, every word in the CMU dictionary; the
    more representative of what callers say, the better. ``name`` labels the model in
    logs and ``Recognizer.mode``. Equal vocabularies share one recogniser."""

    name: str
    sentences: tuple[str, ...]
    hint: str = ""
    """A sentence or two of what callers say, cased and punctuated as written ("Monday
    at 3 PM"): a general recogniser (Whisper) reads it before each turn, which steers
    its spelling and near-misses ("book it", not "work it"); it cannot hear only these."""

    def __post_init__(self) -> None:
        if not self.name or not self.sentences:
            raise ValueError("a Vocabulary needs a name and at least one sentence")

    @property
    def words(self) -> frozenset[str]:
        return frozenset(w for s in self.sentences for w in s.split())
