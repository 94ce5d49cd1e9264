"""Input a Media Streams peer sends that is ignored rather than refused, counted.

Twilio may add events, and echoes marks: an unknown event name, or a mark echo the
stream is not waiting for (``codecs.marks.MarksInFlight``), is no reason to drop a call.
``IgnoredInput`` counts them per socket by kind (``KINDS``): the first of each kind is
logged, further ones only counted (``callbridge_ignored_input_total{kind}`` and the
call's ``stats.ignored``), and the totals are logged once when the socket closes. A peer
repeating bad input at the allowed message rate thus costs at most one log line per
kind plus one, for the life of the socket, and no memory per distinct value.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("callbridge.gateway")

KINDS = {
    "unknown_event": "an unknown event",
    "unknown_mark": "the echo of a mark this stream did not send or already had back",
}
"""Kind -> what it is, for the log line."""


class IgnoredInput:
    __slots__ = ("_metrics", "counts")

    def __init__(self, metrics: Any = None) -> None:
        self.counts = dict.fromkeys(KINDS, 0)
        self._metrics = metrics
        """A ``metrics.Metrics`` (its ``ignored_input`` counter), or None."""

    def add(self, kind: str, who: str, value: str) -> None:
        """One more of ``kind`` from ``who`` (``value``: what it was, for the first log line)."""
        n = self.counts[kind] = self.counts[kind] + 1
        if self._metrics is not None:
            self._metrics.ignored_input.labels(kind).inc()
        if n == 1:
            log.info(
                "media socket %s: ignoring %s (%s); more are counted, not logged",
                who,
                KINDS[kind],
                ascii(value[:64]),
            )

    def to_json(self) -> dict[str, int]:
        return {kind: n for kind, n in self.counts.items() if n}

    def log_totals(self, who: str) -> None:
        """Once, when the socket closes: the totals, if anything went unlogged."""
        if any(n > 1 for n in self.counts.values()):
            log.info(
                "media socket %s ignored %s",
                who,
                ", ".join(f"{n} x {kind}" for kind, n in self.counts.items() if n),
            )
