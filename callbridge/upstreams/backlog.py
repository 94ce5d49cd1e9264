"""A bounded FIFO of caller audio waiting for a remote back end. Pure: no I/O, no clock.

Chunks keep the time they arrived (``at``, monotonic s, passed in). Past ``cap_bytes``
the oldest chunks are dropped and counted (``dropped_bytes``, ``dropped_chunks``): a
remote that is slow or away never grows memory without bound, and what it gets when it
is back is the most recent audio, in order.
"""

from __future__ import annotations

from collections import deque

DEFAULT_CAP_BYTES = 5_000_000


class Backlog:
    __slots__ = ("_chunks", "cap_bytes", "dropped_bytes", "dropped_chunks", "size")

    def __init__(self, cap_bytes: int = DEFAULT_CAP_BYTES) -> None:
        if cap_bytes <= 0:
            raise ValueError("cap_bytes must be positive")
        self.cap_bytes = cap_bytes
        self._chunks: deque[tuple[bytes, float]] = deque()
        self.size = 0
        self.dropped_bytes = 0
        self.dropped_chunks = 0

    def __len__(self) -> int:
        return len(self._chunks)

    def push(self, data: bytes, at: float) -> int:
        """Queue ``data``; returns how many chunks were dropped to make room."""
        self._chunks.append((data, at))
        self.size += len(data)
        dropped = 0
        while self.size > self.cap_bytes and self._chunks:
            old, _ = self._chunks.popleft()
            self.size -= len(old)
            self.dropped_bytes += len(old)
            dropped += 1
        self.dropped_chunks += dropped
        return dropped

    def pop(self) -> tuple[bytes, float]:
        """The oldest chunk and its arrival time (``IndexError`` if empty)."""
        data, at = self._chunks.popleft()
        self.size -= len(data)
        return data, at

    def push_front(self, data: bytes, at: float) -> None:
        """Put back a chunk that could not be sent (it stays first in line)."""
        self._chunks.appendleft((data, at))
        self.size += len(data)

    def clear(self) -> None:
        self._chunks.clear()
        self.size = 0
