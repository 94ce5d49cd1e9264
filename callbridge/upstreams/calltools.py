"""The embedded back end's ``ToolContext``: what an agent's tools may do in their call.

- ``act(kind, **args)``: a telephony action. ``transfer`` and ``send_dtmf`` go to the
  gateway's ``Call.act`` (``Port.act`` -> ``CallAction`` -> the supervisor); ``hang_up``
  is kept here: the call ends once the reply being spoken (the goodbye) has played, the
  way an agent's ``ended`` ends it (``Conversation.hang_up_after``), never mid-sentence.
- ``note``: a timeline event of the call (``tool.called``).
- ``say(text)``: speak now, through the back end's speaker (a slow tool's filler).
- ``busy()``: entered by ``Agent.use_tool`` while a tool runs; the reply's per-piece
  deadline (``AGENT_TIMEOUT_S``) is off meanwhile and starts afresh when the tool is done,
  so a tool's own time (bounded by its ``timeout_s``) is not taken for a stuck agent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from .. import actions
from .base import Port


class CallTools:
    """One call's tool context (one per embedded back end; bound to its agent each turn)."""

    def __init__(
        self, port: Port, call_sid: str, say: Callable[[str], None], timeout_s: float | None
    ) -> None:
        self.port = port
        self._call_sid = call_sid
        self._say = say
        self.timeout_s = timeout_s
        self.hang_up_reason: str | None = None
        """Set when a tool asked to hang up during the current reply (the back end ends the
        call after that reply has played)."""
        self.deadline: asyncio.Timeout | None = None
        """The per-piece deadline of the reply being read, if any."""
        self.running = 0

    @property
    def call_sid(self) -> str:
        return self._call_sid

    async def act(self, kind: str, **args: Any) -> dict[str, Any]:
        if kind != "hang_up":
            return await self.port.act(kind, args)
        try:
            checked = actions.check(kind, args)
        except actions.ActionError as exc:
            return {"ok": False, "error": str(exc)}
        self.hang_up_reason = checked["reason"]
        return {"ok": True, "ends": "after what you are saying now has played"}

    def note(self, event: str, **data: Any) -> None:
        self.port.note(event, **data)

    def say(self, text: str) -> None:
        self._say(text)

    @contextmanager
    def busy(self) -> Iterator[None]:
        """A tool is running: the reply is waiting on it, not stuck."""
        self.running += 1
        if self.deadline is not None:
            self.deadline.reschedule(None)
        try:
            yield
        finally:
            self.running -= 1
            if self.running == 0 and self.deadline is not None and self.timeout_s is not None:
                self.deadline.reschedule(asyncio.get_running_loop().time() + self.timeout_s)
