"""ShardWorker: one thespian actor process that runs a whole gateway.

The actor's own thread handles control messages; a second thread runs the asyncio loop
with the aiohttp gateway on the shared port (``SO_REUSEPORT``: the kernel spreads new
connections over the shards) and every call's actor tree in-process, so audio never
crosses a process boundary. The two threads talk through ``ControlBridge``.

The loop sends a heartbeat every ``HEARTBEAT_S``; the pool treats silence as death.
On ``Drain`` the shard turns new calls away (``/healthz`` answers 503, so a load
balancer's health check takes it out of rotation), lets its calls finish until the
deadline, then closes the rest as "going away" (each stays resumable: Twilio's redirect brings it back
on a live shard), reports ``Drained`` and exits.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from thespian.actors import (
    ActorExitRequest,
    ActorTypeDispatcher,
    ThespianWatch,
    WatchMessage,
)

from . import control as c

log = logging.getLogger("callbridge.prod")

HEARTBEAT_S = 0.5
ORPHAN_AFTER_S = 15.0
"""A shard whose heartbeats go unacknowledged this long has lost its pool and was not
adopted by a new one (``NewPool``): it stops listening, lets its calls finish
(``DRAIN_S``) and exits."""
LINGER_S = 1.0
"""After its last call ended, a draining shard keeps serving this long (trailing redirects)."""


class ShardWorker(ActorTypeDispatcher):
    @staticmethod
    def actorSystemCapabilityCheck(capabilities: dict[str, Any], requirements: dict[str, Any]) -> bool:
        """Runs on systems that offer gateways; ``requirements['node']`` pins a node."""
        if not capabilities.get("callbridge.gateway"):
            return False
        node = (requirements or {}).get("node")
        return node is None or capabilities.get("callbridge.node") == node

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.bridge: Any = None
        self.pool: Any = None
        self.thread: threading.Thread | None = None
        self.runtime: ShardRuntime | None = None
        self.last_ack = 0.0
        self.orphaned = False

    def _watch(self) -> ThespianWatch | None:
        # Must be returned from every handler, or thespian stops watching the pipe.
        return ThespianWatch([self.bridge.read_fd]) if self.bridge is not None else None

    def receiveMsg_StartShard(self, msg: c.StartShard, sender: Any) -> ThespianWatch | None:
        from .bridge import ControlBridge

        if self.thread is None:
            self.pool = sender
            self.bridge = ControlBridge()
            self.runtime = ShardRuntime(msg.index, msg.node, self.bridge)
            self.thread = threading.Thread(target=self.runtime.run, name=f"shard-{msg.index}", daemon=True)
            self.thread.start()
            self.last_ack = time.monotonic()
            self.wakeupAfter(1.0)
        return self._watch()

    def receiveMsg_NewPool(self, msg: c.NewPool, sender: Any) -> ThespianWatch | None:
        """Our pool died and its successor adopted us: report there, replay what we told
        the old one (the new pool waits for it), checkpoint again."""
        self.pool = sender
        self.last_ack = time.monotonic()
        if self.runtime is not None:
            self.runtime.replay()
            if not self.orphaned:
                self.runtime.checkpoint_all()
        return self._watch()

    def receiveMsg_HeartbeatAck(self, msg: c.HeartbeatAck, sender: Any) -> ThespianWatch | None:
        self.last_ack = time.monotonic()
        if self.runtime is not None:
            self.runtime.shard_restarts(msg.shard_restarts)
        return self._watch()

    def receiveMsg_WakeupMessage(self, msg: Any, sender: Any) -> ThespianWatch | None:
        if self.runtime is not None and not self.orphaned:
            if time.monotonic() - self.last_ack > ORPHAN_AFTER_S:
                self.orphaned = True
                self.runtime.orphaned()
            else:
                self.wakeupAfter(1.0)
        return self._watch()

    def receiveMsg_WatchMessage(self, msg: WatchMessage, sender: Any) -> ThespianWatch | None:
        for out in self.bridge.take():
            self.send(self.pool, out)
            if isinstance(out, c.Drained):
                self.send(self.myAddress, ActorExitRequest())
        return self._watch()

    def receiveMsg_Answer(self, msg: c.Answer, sender: Any) -> ThespianWatch | None:
        self.bridge.answer(msg.req, msg.value)
        return self._watch()

    def receiveMsg_Drain(self, msg: c.Drain, sender: Any) -> ThespianWatch | None:
        if self.runtime is not None:
            self.runtime.drain(msg.deadline_s)
        return self._watch()

    def receiveMsg_ActorExitRequest(self, msg: ActorExitRequest, sender: Any) -> None:
        if self.runtime is not None:
            self.runtime.stop()

    def receiveUnrecognizedMessage(self, msg: Any, sender: Any) -> ThespianWatch | None:
        return self._watch()


class ShardRuntime:
    """The loop thread's side of a shard: the gateway and its heartbeat."""

    def __init__(self, index: int, node: str, bridge: Any) -> None:
        self.index = index
        self.node = node
        self.bridge = bridge
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stopping: asyncio.Event | None = None
        self.server: Any = None
        self.settings: Any = None
        self.gw: Any = None
        """The shard's gateway, once it serves."""
        self.store: Any = None

    def run(self) -> None:
        try:  # logging goes through thespian's log director (``log_defs``): stderr
            from .. import eventloop
            from ..config import Settings

            self.settings = Settings.from_env()
            eventloop.run(self._main(), self.settings.server.event_loop)
        except Exception:
            log.exception("shard %d failed", self.index)
            os._exit(3)

    async def _main(self) -> None:
        from ..cli import Server
        from ..gateway.context import GATEWAY
        from .bridge import ControlStore
        from .journal import StoreJournal

        self.loop = asyncio.get_running_loop()
        self.bridge.loop = self.loop
        self.stopping = asyncio.Event()
        self.store = store = ControlStore(
            self.bridge, StoreJournal(self.settings.server.call_history, os.getpid())
        )
        self.server = Server(self.settings, store, reuse_port=True)
        url = await self.server.start()
        gw = self.server.app[GATEWAY]
        gw.shard = {"index": self.index, "pid": os.getpid(), "node": self.node, "store": store}
        self.gw = gw
        self.bridge.post(c.ShardUp(self.index, os.getpid(), self.node, url))
        log.info("shard %d (pid %d) serving on %s", self.index, os.getpid(), url)
        beat = asyncio.create_task(self._heartbeat(gw))
        await self.stopping.wait()
        beat.cancel()
        await self.server.stop()

    async def _heartbeat(self, gw: Any) -> None:
        lag = 0.0
        while True:
            self.bridge.post(
                c.Heartbeat(self.index, os.getpid(), len(gw.registry.live), gw.accepting, lag * 1000)
            )
            t = time.monotonic()
            await asyncio.sleep(HEARTBEAT_S)
            lag = max(0.0, time.monotonic() - t - HEARTBEAT_S)

    # -- from the actor thread: each runs on the loop, once the gateway is serving ---------

    def _on_loop(self, fn: Callable[[], Any]) -> None:
        if self.loop is not None and self.gw is not None:
            self.loop.call_soon_threadsafe(fn)

    def drain(self, deadline_s: float) -> None:
        self._on_loop(lambda: asyncio.ensure_future(self._drain(deadline_s)))

    def replay(self) -> None:
        self._on_loop(lambda: self.store.replay(self.index))

    def checkpoint_all(self) -> None:
        def run() -> None:
            for call in list(self.gw.registry.live.values()):
                call.checkpoint(full=True)

        self._on_loop(run)

    def shard_restarts(self, total: int) -> None:
        self._on_loop(lambda: self.gw.metrics.shard_restarts_seen(total))

    def orphaned(self) -> None:
        self._on_loop(lambda: asyncio.ensure_future(self._orphaned()))

    async def _orphaned(self) -> None:
        """Our pool is gone and a new one has its own shards on this port: stop taking
        connections (the kernel sends them to the new shards), finish our calls, exit."""
        log.warning("shard %d (pid %d): pool lost; no new calls here, draining", self.index, os.getpid())
        await self.server.stop_listening()
        await self._drain(self.settings.prod.drain_s)

    async def _drain(self, deadline_s: float) -> None:
        gw = self.gw
        gw.accepting = False  # /healthz answers 503; new calls are turned away
        log.info("shard %d draining: %d calls, up to %.0f s", self.index, len(gw.registry.live), deadline_s)
        end = time.monotonic() + deadline_s
        while gw.registry.live and time.monotonic() < end:  # noqa: ASYNC110 - polled: no event says "the last call ended"
            await asyncio.sleep(0.1)
        handed_over = len(gw.registry.live)
        if not handed_over:  # Twilio's redirect after a hang-up comes just after: answer it
            await asyncio.sleep(LINGER_S)
        await self.server.stop()  # closes what is left as "going away": resumable
        self.bridge.post(c.Drained(self.index, os.getpid(), handed_over))
        assert self.stopping is not None
        self.stopping.set()

    def stop(self) -> None:
        if self.loop is not None and self.stopping is not None:
            self.loop.call_soon_threadsafe(self.stopping.set)
