"""A call's timeline: events with their ms offset from call start. No I/O, no clock of
its own: callers pass ``now`` (monotonic seconds).

Bounded: past ``max_events`` further events are counted in ``dropped`` and not stored,
so a chatty call cannot grow memory without limit; and each event's data is cut to
``MAX_EVENT_TEXT`` characters of text in all (``bounded``), at most ``MAX_ITEMS`` items per
list or mapping, ``MAX_DEPTH`` levels deep, so no string a peer sent is kept whole.
"""

from __future__ import annotations

from typing import Any

MAX_EVENTS = 5000
MAX_EVENT_TEXT = 4000
MAX_ITEMS = 32
MAX_DEPTH = 6
_PLAIN = (int, float, bool, type(None))


def bounded(value: Any, budget: list[int], depth: int = 0) -> Any:
    """``value`` as plain JSON data within ``budget[0]`` characters of text (spent as it
    goes): longer strings are cut, extra items and deeper levels dropped."""
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, str):
        keep = max(0, budget[0])
        budget[0] -= min(len(value), keep)
        return value if len(value) <= keep else value[:keep]
    if depth >= MAX_DEPTH:
        return None
    if isinstance(value, dict):
        out = {}
        for i, (key, item) in enumerate(value.items()):
            if i >= MAX_ITEMS or budget[0] <= 0:
                break
            out[bounded(str(key), budget)] = bounded(item, budget, depth + 1)
        return out
    if isinstance(value, (list, tuple)):
        return [bounded(item, budget, depth + 1) for item in value[:MAX_ITEMS]]
    return bounded(str(value), budget)


def bounded_data(data: dict[str, Any]) -> dict[str, Any]:
    """An event's data within ``MAX_EVENT_TEXT`` (plain numbers pass untouched)."""
    if all(isinstance(v, _PLAIN) for v in data.values()) and len(data) <= MAX_ITEMS:
        return data
    budget = [MAX_EVENT_TEXT]
    return {
        k[:64]: v if isinstance(v, _PLAIN) else bounded(v, budget, 1)
        for k, v in list(data.items())[:MAX_ITEMS]
    }


class Timeline:
    __slots__ = ("dropped", "events", "max_events", "t0")

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
        entry = {"t_ms": round((now - self.t0) * 1000.0, 1), "event": event[:64], **bounded_data(data)}
        self.events.append(entry)
        return entry

    def first(self, event: str) -> dict[str, Any] | None:
        return next((e for e in self.events if e["event"] == event), None)

    def to_list(self) -> list[dict[str, Any]]:
        return list(self.events)
