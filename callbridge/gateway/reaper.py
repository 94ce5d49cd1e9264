"""The reaper: media sockets that stopped being a call are cleaned up.

Every ``SWEEP_S`` one task per gateway looks at every open media socket (one pass over a
set: nothing runs per frame) and drops

- a socket that sent no ``start`` within ``START_TIMEOUT_S`` of its handshake (close 1008);
- a live stream with no message for ``STREAM_IDLE_S`` (Twilio sends one every 20 ms for
  the whole call: its socket vanished without a close, e.g. a half-open TCP connection);
  the connection is aborted and the call stays resumable, as any drop;
- a peer stuck for ``SEND_STALL_S`` in an outbound send (it stopped reading: its socket
  buffers are full); aborted, resumable.

``Liveness`` is the decision, pure (``now`` passed in); ``sweep`` applies it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("callbridge.gateway")

SWEEP_S = 0.5


@dataclass(frozen=True)
class Limits:
    start_timeout_s: float
    idle_s: float
    send_stall_s: float


class Liveness:
    """One socket's activity as seen at each sweep."""

    __slots__ = ("opened_at", "seen", "quiet_since")

    def __init__(self, now: float) -> None:
        self.opened_at = now
        self.seen = -1
        self.quiet_since = now

    def verdict(
        self, now: float, messages: int, started: bool, send_blocked_since: float | None, limits: Limits
    ) -> tuple[str, str] | None:
        """``("close" | "abort", reason)`` when the socket must go, else None."""
        if messages != self.seen:
            self.seen, self.quiet_since = messages, now
        if not started:
            if now - self.opened_at > limits.start_timeout_s:
                return "close", f"no start within {limits.start_timeout_s:g} s"
            return None
        if send_blocked_since is not None and now - send_blocked_since > limits.send_stall_s:
            return "abort", f"peer took no data for {now - send_blocked_since:.1f} s (not reading)"
        if now - self.quiet_since > limits.idle_s:
            return "abort", f"no message for {now - self.quiet_since:.1f} s (socket vanished)"
        return None


async def run(gw: Any) -> None:
    """Sweep ``gw.sessions`` until cancelled."""
    s = gw.settings
    limits = Limits(s.start_timeout_s, s.stream_idle_s, s.send_stall_s)
    while True:
        await asyncio.sleep(SWEEP_S)
        now = time.monotonic()
        for session in list(gw.sessions):
            call = session.call
            blocked = call.writer.blocked_since if call is not None else None
            verdict = session.liveness.verdict(now, session.messages, call is not None, blocked, limits)
            if verdict is not None:
                session.expel(*verdict)
