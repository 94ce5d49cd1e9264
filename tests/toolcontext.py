"""A ``ToolContext`` for unit tests of agents' tools: a real object that keeps what the
agent asked of its call (actions, timeline notes, fillers) and answers each action with the
outcome the test chose (the telephony side is another module's, tested there)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class RecordingContext:
    call_sid: str = "CAtest"
    outcomes: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per action kind, what ``act`` answers (default ``{"ok": True}``)."""
    acted: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    notes: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    said: list[str] = field(default_factory=list)

    async def act(self, kind: str, **args: Any) -> dict[str, Any]:
        self.acted.append((kind, args))
        return self.outcomes.get(kind, {"ok": True})

    def note(self, event: str, **data: Any) -> None:
        self.notes.append((event, data))

    def say(self, text: str) -> None:
        self.said.append(text)

    def events(self, name: str) -> list[dict[str, Any]]:
        return [data for event, data in self.notes if event == name]
