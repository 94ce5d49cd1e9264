"""The bridge between a shard's asyncio loop (its gateway) and its thespian actor.

Thespian's ``send`` is not thread-safe and blocks, so the loop never calls it: it puts
messages in an outbox and writes one byte to a pipe; the shard actor watches the pipe
(``ThespianWatch``), drains the outbox and sends. Answers come back the other way with
``call_soon_threadsafe``. Every request has a timeout: a control plane that does not
answer degrades the call (no resume, no shared record), it never blocks it.

``ControlStore`` is the ``CallStore`` of production mode on top of this bridge.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import queue
import time
from collections.abc import Callable
from typing import Any

from ..gateway.store import Stored
from . import control as c
from .journal import StoreJournal

log = logging.getLogger("callbridge.prod")

ASK_TIMEOUT_S = 2.0


class ControlBridge:
    def __init__(self) -> None:
        self.outbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        os.set_blocking(self.write_fd, False)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.pending: dict[int, asyncio.Future[Any]] = {}
        self._req = itertools.count(1)

    # -- loop side ---------------------------------------------------------------------

    def post(self, msg: Any) -> None:
        self.outbox.put(msg)
        try:
            os.write(self.write_fd, b"!")
        except BlockingIOError:  # the pipe is full of wake-ups already: the actor will drain
            pass

    async def ask(self, make: Callable[[int], Any], timeout_s: float = ASK_TIMEOUT_S) -> Any:
        req = next(self._req)
        fut = asyncio.get_running_loop().create_future()
        self.pending[req] = fut
        self.post(make(req))
        try:
            return await asyncio.wait_for(fut, timeout_s)
        finally:
            self.pending.pop(req, None)

    def _resolve(self, req: int, value: Any) -> None:
        fut = self.pending.get(req)
        if fut is not None and not fut.done():
            fut.set_result(value)

    # -- actor side --------------------------------------------------------------------

    def take(self) -> list[Any]:
        """Everything posted so far (called by the actor when the pipe is readable)."""
        try:
            while os.read(self.read_fd, 4096):
                pass
        except BlockingIOError:
            pass
        out = []
        while True:
            try:
                out.append(self.outbox.get_nowait())
            except queue.Empty:
                return out

    def answer(self, req: int, value: Any) -> None:
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._resolve, req, value)


class ControlStore:
    """``CallStore`` kept by the pool supervisor, reached through the bridge.

    What it tells the pool besides checkpoints (claimed tokens and streams, ended calls)
    it also notes in its ``journal``, for a new pool to learn again (``replay``).
    A control plane that does not answer a claim in ``ASK_TIMEOUT_S``: the stream is
    let through, checked against this shard's journal only (a token or a call seen here
    is still refused), and the journal tells the next pool of it; a claim of the call's
    stream that got no answer never resumes stored state (``media.start_call``). So a
    pool outage never turns a call away, and what it lets through is bounded by the outage.
    """

    def __init__(self, bridge: ControlBridge, journal: StoreJournal) -> None:
        self.bridge = bridge
        self.journal = journal
        self.pid = journal.pid

    async def lookup(self, call_sid: str) -> Stored | None:
        try:
            return await self.bridge.ask(lambda req: c.Lookup(req, call_sid))
        except TimeoutError:
            log.error("call %s: control plane did not answer a lookup; treating as new", call_sid)
            return None

    def checkpoint(self, call_sid: str, snapshot: dict[str, Any]) -> None:
        self.bridge.post(c.Checkpoint(call_sid, snapshot))

    async def finish(self, call_sid: str, record: dict[str, Any], resumable: bool) -> None:
        self.journal.finish(call_sid, record, resumable, time.monotonic())
        try:
            await self.bridge.ask(lambda req: c.Finish(req, call_sid, record, resumable, self.pid))
        except TimeoutError:
            log.error("call %s: control plane did not acknowledge the end of the call", call_sid)

    async def record(self, call_sid: str) -> dict[str, Any] | None:
        try:
            return await self.bridge.ask(lambda req: c.Record(req, call_sid))
        except TimeoutError:
            return None

    async def listing(self) -> dict[str, list[dict[str, Any]]] | None:
        try:
            return await self.bridge.ask(c.Listing)
        except TimeoutError:
            return None

    async def claim_token(self, key: str, keep_s: float) -> bool:
        if not self.journal.claim_token(key, keep_s, time.monotonic()):
            return False  # used on this shard
        try:
            return bool(await self.bridge.ask(lambda req: c.ClaimToken(req, key, keep_s)))
        except TimeoutError:
            log.error(
                "control plane did not answer a token claim; allowing the stream (unused on this shard)"
            )
            return True

    async def claim_stream(self, call_sid: str) -> bool | None:
        if not self.journal.claim_stream(call_sid):
            return False  # carried on this shard
        try:
            granted = bool(await self.bridge.ask(lambda req: c.ClaimStream(req, call_sid, self.pid)))
        except TimeoutError:
            log.error("call %s: control plane did not answer the stream claim; taken as a new call", call_sid)
            return None
        if not granted:
            self.release_stream(call_sid)  # a replay to a new pool may have claimed it meanwhile
        return granted

    async def streaming(self, call_sid: str) -> bool | None:
        try:
            return bool(await self.bridge.ask(lambda req: c.Streaming(req, call_sid)))
        except TimeoutError:
            return None

    def release_stream(self, call_sid: str) -> None:
        self.journal.release_stream(call_sid)
        self.bridge.post(c.ReleaseStream(call_sid, self.pid))

    def replay(self, index: int) -> None:
        """Tell a new pool what this shard told the one that died (``StoreJournal``)."""
        self.bridge.post(self.journal.replay(index, time.monotonic()))

    async def health(self) -> c.PoolStatus | None:
        try:
            return await self.bridge.ask(c.Health)
        except TimeoutError:
            return None
