"""Word errors of a transcript against what was said (the benchmarks' WER)."""

from __future__ import annotations

import re


def words(text: str) -> list[str]:
    """Lower-case words of ``text``, punctuation dropped."""
    return re.sub(r"[^a-z' ]", " ", text.lower()).split()


def word_errors(ref: list[str], hyp: list[str]) -> int:
    """Levenshtein distance over words."""
    d = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, d[0] = d[0], i
        for j, h in enumerate(hyp, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (r != h))
    return d[len(hyp)]
