"""Work an agent starts once a reply has been handed over: a transfer after its handover
line, the webhook's actions after its text.

They run as background tasks of the call's event loop, so that the reply (and the
``AGENT_TIMEOUT_S`` that bounds each of its pieces) is not held up by a transfer that takes
a minute; the next turn may start meanwhile. ``aclose`` cancels what is still running
(the agent's own ``aclose``, at the end of the call). A ``FollowUps`` is not carried by a
checkpoint: a resumed agent gets an empty one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger("callbridge.agent")


class FollowUps:
    """The background tasks of one agent."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def __reduce__(self) -> tuple[type[FollowUps], tuple[()]]:
        return (FollowUps, ())

    def start(self, work: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("agent follow-up %s failed", task.get_name(), exc_info=task.exception())

    @property
    def running(self) -> int:
        return len(self._tasks)

    async def wait(self) -> None:
        """Until every follow-up has finished (tests, and an agent that must not overlap)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def aclose(self) -> None:
        tasks, self._tasks = list(self._tasks), set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
