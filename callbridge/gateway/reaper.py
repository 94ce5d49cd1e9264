"""The reaper: media sockets that stopped being a call are cleaned up.

Every ``SWEEP_S`` one task per gateway looks at every open media socket (one pass over a
set: nothing runs per frame) and drops

- a socket that sent no ``start`` within ``START_TIMEOUT_S`` of its handshake (close 1008);
- a live stream with no message for ``STREAM_IDLE_S`` (Twilio sends one every 20 ms for
  the whole call: its socket vanished without a close, e.g. a half-open TCP connection);
  the connection is aborted and the call stays resumable, as any drop;
- a peer that took no data for ``SEND_STALL_S``: an outbound send waited that long, or
  the connection's transport kept a backlog (the kernel's send buffer full, so the peer
  stopped reading) that long; aborted, resumable.

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

    __slots__ = ("backlog_since", "opened_at", "quiet_since", "seen")

    def __init__(self, now: float) -> None:
        self.opened_at = now
        self.seen = -1
        self.quiet_since = now
        self.backlog_since: float | None = None

    def verdict(
        self,
        now: float,
        messages: int,
        started: bool,
        send_blocked_since: float | None,
        limits: Limits,
        backlog: int = 0,
    ) -> tuple[str, str] | None:
        """``("close" | "abort", reason)`` when the socket must go, else None.
        ``backlog``: bytes the transport holds that the kernel would not take."""
        if messages != self.seen:
            self.seen, self.quiet_since = messages, now
        if backlog <= 0:
            self.backlog_since = None
        elif self.backlog_since is None:
            self.backlog_since = now
        if self.backlog_since is not None and (
            send_blocked_since is None or self.backlog_since < send_blocked_since
        ):
            send_blocked_since = self.backlog_since
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
    limits = Limits(s.limits.start_timeout_s, s.limits.stream_idle_s, s.limits.send_stall_s)
    while True:
        await asyncio.sleep(SWEEP_S)
        now = time.monotonic()
        for session in list(gw.sessions):
            try:
                sweep_one(session, now, limits)
            except Exception:
                log.exception("reaper: sweeping %s failed", session.who)


def sweep_one(session: Any, now: float, limits: Limits) -> None:
    call = session.call
    blocked = call.writer.blocked_since if call is not None else None
    transport = session.transport
    backlog = transport.get_write_buffer_size() if transport is not None and not transport.is_closing() else 0
    verdict = session.liveness.verdict(now, session.messages, call is not None, blocked, limits, backlog)
    if verdict is not None:
        session.expel(*verdict)
