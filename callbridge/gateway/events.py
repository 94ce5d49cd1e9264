"""Call events POSTed to ``EVENTS_URL``: ``call.started``, ``transcript.final``,
``agent.reply``, ``tool.called`` (``name``, ``ok``, ``duration_ms``, ``error`` when it
failed), ``call.transferred`` (``to``, ``mode``, ``outcome``), ``call.answered_by`` (an
outbound call's answering-machine detection: ``answered_by``, ``detection_ms``),
``recording.ready``, ``call.ended``.

Each event is one JSON object ``{"event", "callSid", "at" (unix s), "data"}`` sent as the
raw body, with ``X-Callbridge-Timestamp`` (unix s) and ``X-Callbridge-Signature:
v1=<hex HMAC-SHA256 of "<timestamp>.<body>" keyed by EVENTS_SECRET>``. A receiver should
recompute the HMAC over the raw body, compare with ``hmac.compare_digest`` (constant
time) and refuse timestamps more than 5 minutes old (``callbridge.agents.signing.verify``
does exactly that).

Posting never blocks a call: events go to a bounded queue (``MAX_PENDING``; past it the
oldest is dropped and counted) drained in order by one background task; each POST goes
through ``RETRY``: ``TIMEOUT_S`` per try, up to 3 tries with 0.5/1 s pauses, then the event
is dropped with a log line.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson

from ..agents.signing import sign
from ..retry import GaveUp, RetryPolicy, describe

log = logging.getLogger("callbridge.events")

MAX_PENDING = 1000
TIMEOUT_S = 5.0
PUBLISHED = {
    "started": "call.started",
    "transcript.final": "transcript.final",
    "agent.reply": "agent.reply",
    "tool.called": "tool.called",
    "stopped": "call.ended",
    "recording.ready": "recording.ready",
    "call.transferred": "call.transferred",
    "call.answered_by": "call.answered_by",
}
"""Timeline event -> published event name."""


class Refused(Exception):
    """The receiver answered a POST with something other than 2xx."""


RETRY = RetryPolicy(
    "posting a call event",
    pauses_s=(0.5, 1.0),
    timeout_s=TIMEOUT_S,
    errors=(Refused, TimeoutError, aiohttp.ClientError, OSError),
)


class EventPoster:
    def __init__(self, url: str, secret: str, clock: Callable[[], float] = time.time) -> None:
        self.url = url
        self.secret = secret
        self.clock = clock
        self._pending: deque[bytes] = deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._busy = False
        self.sent = 0
        self.dropped = 0

    def publish(self, timeline_event: str, call_sid: str, data: dict[str, Any]) -> None:
        name = PUBLISHED.get(timeline_event)
        if name is None:
            return
        body = orjson.dumps({"event": name, "callSid": call_sid, "at": self.clock(), "data": data})
        if len(self._pending) >= MAX_PENDING:
            self._pending.popleft()
            self.dropped += 1
            log.warning("events queue full: dropped the oldest event (%d so far)", self.dropped)
        self._pending.append(body)
        self._wakeup.set()

    def headers(self, body: bytes) -> dict[str, str]:
        timestamp = str(int(self.clock()))
        return {
            "Content-Type": "application/json",
            "X-Callbridge-Timestamp": timestamp,
            "X-Callbridge-Signature": sign(self.secret, timestamp, body),
        }

    async def run(self) -> None:
        async with aiohttp.ClientSession() as session:
            while True:
                if not self._pending:
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
                self._busy = True
                try:
                    await self._send(session, self._pending.popleft())
                finally:
                    self._busy = False

    async def _send(self, session: aiohttp.ClientSession, body: bytes) -> None:
        async def post(attempt: int) -> None:
            async with session.post(self.url, data=body, headers=self.headers(body)) as resp:
                if resp.status >= 300:
                    raise Refused(f"HTTP {resp.status}")

        try:
            await RETRY.run(post)
        except GaveUp as exc:
            self.dropped += 1
            problem = str(exc.last) if isinstance(exc.last, Refused) else describe(exc.last)
            log.warning("event not delivered to %s after %d tries: %s", self.url, exc.attempts, problem)
            return
        self.sent += 1

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.run(), name="events-poster")

    async def stop(self, drain_s: float = 2.0) -> None:
        """Give queued events ``drain_s`` to go out, then stop."""
        deadline = time.monotonic() + drain_s
        while (self._pending or self._busy) and time.monotonic() < deadline:  # noqa: ASYNC110 - once, at shutdown: two conditions and a deadline
            await asyncio.sleep(0.05)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
