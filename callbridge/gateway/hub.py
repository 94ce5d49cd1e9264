"""Fan-out of live console updates to browser clients. No I/O here.

``publish(kind, data)`` encodes the update once, as a Server-Sent Events message, and
appends it to every subscriber's queue; with no subscriber it costs one length check.
Bounds: at most ``MAX_CLIENTS`` subscribers (``subscribe`` returns None past it), and
``MAX_PENDING`` messages queued per subscriber: one that falls that far behind (a slow
client) is dropped (``overflowed``), its stream ends, and the browser reconnects and
starts again from a fresh snapshot. Messages larger than ``MAX_MESSAGE_BYTES`` are
replaced by a short ``{"truncated": true}`` form.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

import orjson

MAX_CLIENTS = 32
MAX_PENDING = 2000
MAX_MESSAGE_BYTES = 64 * 1024


def sse(kind: str, data: Any) -> bytes:
    body = orjson.dumps(data, default=str)
    if len(body) > MAX_MESSAGE_BYTES:
        body = orjson.dumps(
            {"truncated": True, "callSid": data.get("callSid") if isinstance(data, dict) else None}
        )
    return b"event: " + kind.encode() + b"\ndata: " + body + b"\n\n"


class Subscriber:
    def __init__(self) -> None:
        self.pending: deque[bytes] = deque()
        self.ready = asyncio.Event()
        self.overflowed = False

    def push(self, message: bytes, limit: int) -> bool:
        if len(self.pending) >= limit:
            self.overflowed = True
            self.ready.set()
            return False
        self.pending.append(message)
        self.ready.set()
        return True

    def take(self) -> list[bytes]:
        items = list(self.pending)
        self.pending.clear()
        self.ready.clear()
        return items


class Hub:
    def __init__(self, max_clients: int = MAX_CLIENTS, max_pending: int = MAX_PENDING) -> None:
        self.max_clients = max_clients
        self.max_pending = max_pending
        self.subscribers: list[Subscriber] = []
        self.dropped_clients = 0

    def subscribe(self) -> Subscriber | None:
        if len(self.subscribers) >= self.max_clients:
            return None
        sub = Subscriber()
        self.subscribers.append(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        if sub in self.subscribers:
            self.subscribers.remove(sub)

    def publish(self, kind: str, data: Any) -> None:
        if not self.subscribers:
            return
        message = sse(kind, data)
        for sub in list(self.subscribers):
            if not sub.push(message, self.max_pending):
                self.dropped_clients += 1
                self.unsubscribe(sub)

    def close(self) -> None:
        """End every subscriber's stream (server shutdown)."""
        for sub in self.subscribers:
            sub.overflowed = True
            sub.ready.set()
        self.subscribers.clear()
