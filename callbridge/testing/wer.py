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


_ONES = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
_TENS = {2: "twenty", 3: "thirty", 4: "forty", 5: "fifty"}
_SPOKEN = [
    (r"\b([ap])\.\s?m\b\.?", r"\1m"),
    (r"\b(\d{1,2}):00\b", r"\1"),
    (r"\b(\d{1,2}):(\d{2})\b", r"\1 \2"),
    (r"\b(\d{1,2})([ap]m)\b", r"\1 \2"),
    (r"\bmr\.", "mister"),
    (r"\bmrs\.", "missus"),
    (r"\bdr\.", "doctor"),
    (r"(\w)-(\w)", r"\1 \2"),
    (r"\b(i|you|we|they|he|she)'d\b", r"\1 would"),
    (r"\b(i|you|we|they)'ll\b", r"\1 will"),
    (r"\bi'm\b", "i am"),
    (r"\b(you|we|they)'re\b", r"\1 are"),
    (r"\b(that|it|what|there|he|she)'s\b", r"\1 is"),
]


def _number(n: int) -> str:
    if n < 20:
        return _ONES[n]
    if n < 60:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    return str(n)


def spoken_words(text: str) -> list[str]:
    """``words`` as they were said: "3 PM" -> three pm, "3:30" -> three thirty, "p.m." ->
    pm, "Mr." -> mister, "ill-disposed" -> ill disposed, "I'd" -> i would, "that's" -> that
    is (to score a recogniser that writes
    digits and punctuation against a script that spells them)."""
    text = text.lower()
    for pattern, repl in _SPOKEN:
        text = re.sub(pattern, repl, text)
    text = re.sub(r"\b\d{1,2}\b", lambda m: _number(int(m.group())), text)
    return words(text)
