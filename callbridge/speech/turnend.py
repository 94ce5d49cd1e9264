"""Is the caller's turn over? What its words say (pure: no I/O, no model, no clock).

``judge(text, agent_says)`` classifies the transcript of a turn so far, taken after a
short silence (``ENDPOINT_COMPLETE_MS``):

- ``"unfinished"``: it ends on a word that cannot end a request (a conjunction,
  preposition, article, possessive, auxiliary, hesitation: "...on", "...and the", "um"),
  or on a comma, dash or ellipsis (a recogniser that punctuates): the endpointer waits
  ``ENDPOINT_UNFINISHED_MS``;
- ``"complete"``: it ends with ``.``, ``?`` or ``!`` (a recogniser that punctuates), or the
  agent's own parser says the request is whole (``Agent.turn_complete``): the turn ends
  now;
- ``"unknown"`` otherwise: the configured ``ENDPOINT_SILENCE_MS`` decides, as before.

Cheap (a split and a set look-up, plus the agent's check): run once per pause in a turn.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

__all__ = ["TRAILING", "Verdict", "judge"]

Verdict = Literal["complete", "unfinished", "unknown"]

TRAILING = frozenset(
    [
        "a",
        "an",
        "the",
        "my",
        "your",
        "our",
        "his",
        "her",
        "their",
        "its",
        "this",
        "that",
        "these",
        "those",
        "some",
        "any",
        "and",
        "or",
        "but",
        "so",
        "because",
        "if",
        "then",
        "than",
        "nor",
        "plus",
        "to",
        "on",
        "at",
        "in",
        "for",
        "of",
        "with",
        "from",
        "about",
        "by",
        "into",
        "onto",
        "over",
        "under",
        "after",
        "before",
        "around",
        "between",
        "until",
        "till",
        "via",
        "per",
        "like",
        "as",
        "i",
        "i'd",
        "i'm",
        "i'll",
        "i've",
        "we",
        "we'd",
        "we're",
        "it's",
        "there's",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "shall",
        "want",
        "need",
        "wanna",
        "gonna",
        "gotta",
        "um",
        "uh",
        "er",
        "erm",
        "ah",
    ]
)
"""Words a finished request does not end on."""

_OPEN_PUNCTUATION = (",", ";", ":", "-", "—", "…", "...")


def judge(text: str, agent_says: Callable[[str], bool | None] | None = None) -> Verdict:
    """See the module docstring. ``agent_says(text)``: True (a complete request), False
    (unfinished) or None (no opinion)."""
    stripped = text.strip()
    if not stripped:
        return "unknown"
    if stripped.endswith(_OPEN_PUNCTUATION):
        return "unfinished"
    last = stripped.split()[-1].strip(".?!\"'").lower()
    if last in TRAILING:
        return "unfinished"
    if stripped[-1] in ".?!":
        return "complete"
    if agent_says is not None:
        opinion = agent_says(stripped)
        if opinion is not None:
            return "complete" if opinion else "unfinished"
    return "unknown"
