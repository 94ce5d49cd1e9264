"""``run.py serve --mode prod``: start this node's thespian actor system and serve.

Leader (no ``LEADER`` set): starts a ``multiprocTCPBase`` actor system on
``ADMIN_PORT``, creates the PoolSupervisor, which creates ``WORKERS`` gateway shards
here and more on every member node that joins; prints one line once every local shard
is serving; on SIGTERM or SIGINT drains (``DRAIN_S``) and exits 0.

Member (``LEADER=host:port``): starts its own actor system that joins the leader's
convention with capabilities ``callbridge.gateway``, ``callbridge.node`` and
``callbridge.workers``; the leader's pool places shards here by those capabilities. On
SIGTERM it shuts its actor system down: its calls drop and resume on other nodes
through Twilio's redirect.

Thespian's sockets accept pickled objects: ``THESPIAN_BASE_IPADDR`` (``actor_bind``)
must be an address on a private network (loopback for one machine).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from functools import partial
from typing import Any

from .. import eventloop
from ..config import Settings
from ..logs import json_line, resolve_format, say, thespian_log_defs
from . import control as c

log = logging.getLogger("callbridge.prod")

START_TIMEOUT_S = 120.0
POOL_CHECK_S = 1.0
POOL_MISSES = 2
PORT_GRACE_S = 1.0
"""How long a start waits for a listener on its ports to go (the processes of a node that
has just ended exit within milliseconds) before it reports a conflict."""


def capabilities(settings: Settings) -> dict[str, Any]:
    caps: dict[str, Any] = {
        "Admin Port": settings.prod.admin_port,
        "callbridge.gateway": True,
        "callbridge.node": settings.prod.node_name,
        "callbridge.workers": settings.prod.workers,
    }
    if settings.prod.leader:
        host, _, port = settings.prod.leader.rpartition(":")
        caps["Convention Address.IPv4"] = (host, int(port))
    else:
        caps["callbridge.leader"] = True
        caps["Convention Address.IPv4"] = (settings.prod.actor_bind, settings.prod.admin_port)
    return caps


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class _Signals:
    def __init__(self) -> None:
        self.received: int | None = None
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = signum


def listener_on(host: str, port: int) -> OSError | None:
    """The error binding ``host:port`` meets if a socket listens there, else ``None``.

    Binds as the real listeners do (``SO_REUSEADDR``, as thespian's admin and aiohttp do),
    so connections left in TIME-WAIT by a node that just stopped are no conflict; without
    ``SO_REUSEPORT``, so a live listener is one even if it shares the port (a shard)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            return exc
    return None


def serve_prod(settings: Settings) -> int:
    from thespian.actors import ActorSystem

    from .bind import restrict_binding
    from .lifetime import tie_to_owner

    signals = _Signals()
    settings = settings.replace(
        workers=settings.prod.workers or os.cpu_count() or 1,
        node_name=settings.prod.node_name or socket.gethostname(),
        port=settings.server.port or free_port(settings.server.host),
    )
    # Shard processes are forked from this one's actor system: they read the same settings.
    os.environ.update(settings.to_env())
    for host, port, what, conflict in (
        (settings.prod.actor_bind, settings.prod.admin_port, "admin port", "callbridge node or actor system"),
        (settings.server.host, settings.server.port, "port", "server (shards share it through SO_REUSEPORT)"),
    ):  # thespian would silently join a system already there; shards would share the port
        deadline = time.monotonic() + PORT_GRACE_S
        while (exc := listener_on(host, port)) is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        if exc is not None:
            say(
                f"{what} {host}:{port} is in use ({exc.strerror}): another {conflict} listens there; "
                f"stop it or pick another {what.upper().replace(' ', '_')}",
                error=True,
            )
            return 2
    restrict_binding()  # thespian's sockets on THESPIAN_BASE_IPADDR only, not every interface
    log_format = resolve_format(settings.server.log_format, settings.server.mode)
    # Every process of the node exits when this one does, however it ends, saying so in one line.
    tie_to_owner(partial(json_line, level="ERROR") if log_format == "json" else str)
    log_defs = thespian_log_defs(settings.server.log_level, log_format)
    asys = ActorSystem("multiprocTCPBase", capabilities(settings), logDefs=log_defs)
    try:
        if settings.prod.leader:
            say(
                f"callbridge prod member node {settings.prod.node_name} joined leader {settings.prod.leader} "
                f"(admin port {settings.prod.admin_port}, {settings.prod.workers} worker(s) on port {settings.server.port})"
            )
            while signals.received is None:
                time.sleep(0.2)
            say("shutting down (member): calls here resume on other nodes")
            return 0
        pool = _start_pool(asys, settings)
        status = _wait_until_up(asys, pool, settings, signals)
        if status is None:
            if signals.received is None:
                say("shards did not come up in time", error=True)
                return 1
            say(f"interrupted ({signal.Signals(signals.received).name}) during start-up: stopping")
            return 0
        url = f"http://{settings.server.host}:{settings.server.port}"
        say(
            f"callbridge prod mode listening on {url} ({len(status.shards)} shard(s), "
            f"pids {' '.join(str(s['pid']) for s in status.shards)}; admin port {settings.prod.admin_port}; "
            f"{eventloop.resolve(settings.server.event_loop)} event loop)"
        )
        say(f"  voice webhook: {settings.server.public_url or url}/voice/inbound")
        pool = _watch_pool(asys, pool, settings, signals, status.adoptable)
        say(f"draining: up to {settings.prod.drain_s:.0f} s for running calls")
        answer = asys.ask(pool, c.Drain(settings.prod.drain_s), settings.prod.drain_s + 15)
        say("drained" if isinstance(answer, c.Answer) else "drain timed out")
        return 0
    finally:
        asys.shutdown()  # stops the admin and every actor; what outlives it exits with us


def _start_pool(asys: Any, settings: Settings, adopt: list[c.Adoptee] | None = None) -> Any:
    from .pool import PoolSupervisor

    pool = asys.createActor(PoolSupervisor)
    asys.ask(
        pool,
        c.StartPool(
            settings.prod.workers, adopt or [], settings.prod.node_name, settings.server.call_history
        ),
        10,
    )
    return pool


def _watch_pool(asys: Any, pool: Any, settings: Settings, signals: _Signals, known: list[c.Adoptee]) -> Any:
    """Until a signal: ask the pool for its health every ``POOL_CHECK_S``; after
    ``POOL_MISSES`` unanswered asks it is dead: start a new pool that adopts its shards
    (they go on serving, calls and all, and checkpoint their calls to the new pool; a
    shard that is not adopted within ``ORPHAN_AFTER_S`` drains and exits). ``known``: the
    shards up at start, so a pool lost before its first health check is adopted too.
    Returns the pool alive at the end."""
    misses = 0
    next_check = time.monotonic() + POOL_CHECK_S
    while signals.received is None:
        time.sleep(0.2)
        if time.monotonic() < next_check:
            continue
        next_check = time.monotonic() + POOL_CHECK_S
        answer = asys.ask(pool, c.Health(0), POOL_CHECK_S)
        if isinstance(answer, c.Answer):
            misses, known = 0, answer.value.adoptable
            continue
        misses += 1
        if misses >= POOL_MISSES:
            log.error("the pool supervisor is not answering; a new one adopts its %d shard(s)", len(known))
            say(f"pool supervisor lost: a new pool adopts {len(known)} shard(s)")
            pool = _start_pool(asys, settings, known)
            misses = 0
    return pool


def _wait_until_up(asys: Any, pool: Any, settings: Settings, signals: _Signals) -> c.PoolStatus | None:
    """The pool's status once every local shard serves; ``None`` on a signal or after
    ``START_TIMEOUT_S``."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and signals.received is None:
        answer = asys.ask(pool, c.Health(0), 5)
        if isinstance(answer, c.Answer):
            status: c.PoolStatus = answer.value
            local = [s for s in status.shards if s["node"] == settings.prod.node_name]
            if len(local) >= settings.prod.workers and all(s["up"] for s in local):
                return status
        time.sleep(0.2)
    return None
