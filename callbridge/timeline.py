"""A call's timeline: events with their ms offset from call start. No I/O, no clock of
its own: callers pass ``now`` (monotonic seconds).

Bounded: past ``max_events`` further events are counted in ``dropped`` and not stored,
so a chatty call cannot grow memory without limit.
"""

from __future__ import annotations

from typing import Any

MAX_EVENTS = 5000


class Timeline:
    __slots__ = ("t0", "events", "max_events", "dropped")

    def __init__(self, t0: float, max_events: int = MAX_EVENTS) -> None:
        self.t0 = t0
        self.events: list[dict[str, Any]] = []
        self.max_events = max_events
        self.dropped = 0

    def add(self, now: float, event: str, **data: Any) -> dict[str, Any] | None:
        """Record ``event``; returns the stored entry (None when past ``max_events``)."""
        if len(self.events) >= self.max_events:
            self.dropped += 1
            return None
        entry = {"t_ms": round((now - self.t0) * 1000.0, 1), "event": event, **data}
        self.events.append(entry)
        return entry

    def first(self, event: str) -> dict[str, Any] | None:
        return next((e for e in self.events if e["event"] == event), None)

    def to_list(self) -> list[dict[str, Any]]:
        return list(self.events)
