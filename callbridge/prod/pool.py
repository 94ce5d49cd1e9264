"""PoolSupervisor: the control plane of production mode (one per deployment, on the leader).

It keeps the shards running and the calls' state:

- creates ``workers`` ShardWorker processes on its own node, and, when a member node
  joins the convention (``ActorSystemConventionUpdate``), as many as that node offers
  (``callbridge.workers``), pinned there by capability;
- replaces a shard that exits (``ChildActorExited``: SIGKILL included, noticed in ms) or
  whose heartbeats stop for ``DEAD_AFTER_S`` (a hung loop, a lost machine: thespian
  itself would not say for minutes); its calls are marked orphaned and resume when
  Twilio's redirect comes back;
- holds the ``StoreBook`` (checkpoints, ended records, used stream tokens, live stream
  claims) and answers the shards' lookups and claims; answers ``Health`` with every
  shard's state. A pool that adopts the shards of one that died starts with an empty
  book: each adopted shard sends a ``Replay`` of what it had told the old one, and until
  every replay is in (or ``REPLAY_WAIT_S``) the store's requests are held, so no claim or
  lookup is answered from a book that is still filling;
- on ``Drain`` asks every shard to drain and answers ``run.py serve`` once all have.

Imports nothing heavy: shard processes are forked from this one.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from thespian.actors import (
    ActorExitRequest,
    ActorSystemConventionUpdate,
    ActorTypeDispatcher,
    ChildActorExited,
    WakeupMessage,
)

from ..gateway.store import StoreBook, awaiting_redirect
from . import control as c
from .shard import ShardWorker

log = logging.getLogger("callbridge.prod")

DEAD_AFTER_S = 3.0
"""Heartbeat silence after which a shard is dead (6 missed beats)."""
START_GRACE_S = 60.0
"""A new shard has this long to come up (it warms the speech models first)."""
TICK_S = 0.5
REPLAY_WAIT_S = 1.0
"""How long a new pool holds the store's requests for its adopted shards' replays (under
the shards' ``bridge.ASK_TIMEOUT_S``, with a tick to spare)."""
MAX_HELD = 10_000
"""Past this many held requests the new pool stops waiting for replays."""


@dataclass
class ShardInfo:
    index: int
    node: str
    address: Any
    created: float
    pid: int | None = None
    url: str = ""
    last_beat: float | None = None
    calls: int = 0
    accepting: bool = True
    loop_lag_ms: float = 0.0
    restarts: int = 0
    drained: bool = False

    def view(self, now: float) -> dict[str, Any]:
        return {
            "index": self.index,
            "node": self.node,
            "pid": self.pid,
            "url": self.url,
            "up": self.pid is not None,
            "calls": self.calls,
            "accepting": self.accepting,
            "last_beat_ms_ago": None if self.last_beat is None else round((now - self.last_beat) * 1000),
            "loop_lag_ms": round(self.loop_lag_ms, 1),
            "restarts": self.restarts,
        }


@dataclass
class PoolState:
    shards: list[ShardInfo] = field(default_factory=list)
    restarts: int = 0
    draining: bool = False
    drain_waiter: Any = None


class PoolSupervisor(ActorTypeDispatcher):
    @staticmethod
    def actorSystemCapabilityCheck(capabilities: dict[str, Any], requirements: dict[str, Any]) -> bool:
        return bool(capabilities.get("callbridge.leader"))

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.state = PoolState()
        self.book = StoreBook(history=0)  # StartPool brings CALL_HISTORY
        self.node = socket.gethostname()
        self.nodes: dict[str, int] = {}
        self.replays_due: set[int] = set()
        """Indexes of adopted shards whose ``Replay`` has not come yet."""
        self.replay_deadline = 0.0
        self.held: list[tuple[Any, Any]] = []
        """Store requests (message, sender) waiting for the replays, in arrival order."""

    # -- shards --------------------------------------------------------------------------

    def _spawn(self, index: int, node: str, restarts: int = 0) -> None:
        address = self.createActor(ShardWorker, targetActorRequirements={"node": node})
        info = ShardInfo(index, node, address, time.monotonic(), restarts=restarts)
        self.state.shards = [s for s in self.state.shards if s.index != index] + [info]
        self.send(address, c.StartShard(index, node))

    def _find(self, address: Any) -> ShardInfo | None:
        return next((s for s in self.state.shards if s.address == address), None)

    def _replace(self, shard: ShardInfo, why: str) -> None:
        now = time.monotonic()
        orphans = self.book.orphan(shard.pid, now) if shard.pid is not None else []
        self.state.restarts += 1
        log.warning(
            "shard %d (pid %s, node %s) %s; %d call(s) await their redirect; replacing",
            shard.index,
            shard.pid,
            shard.node,
            why,
            len(orphans),
        )
        if self.state.draining:
            self.state.shards.remove(shard)
            self._maybe_drained()
            return
        if shard.node != self.node and shard.node not in self.nodes:
            self.state.shards.remove(shard)  # its node left: nothing to replace it on
            return
        self._spawn(shard.index, shard.node, shard.restarts + 1)

    def receiveMsg_StartPool(self, msg: c.StartPool, sender: Any) -> None:
        if self.state.shards:
            self.send(sender, c.Answer(0, self._status()))
            return
        self.book.history = max(0, msg.history)
        self.node = msg.node or self.node
        self.notifyOnSystemRegistrationChanges(True)
        now = time.monotonic()
        self.replays_due = {a.index for a in msg.adopt}
        self.replay_deadline = now + REPLAY_WAIT_S
        for a in msg.adopt:  # not our children: only heartbeats tell us they died
            shard = ShardInfo(a.index, a.node, a.address, now, pid=a.pid, url=a.url, last_beat=now)
            self.state.shards.append(shard)
            self.send(a.address, c.NewPool())
            if a.node != self.node:
                self.nodes[a.node] = self.nodes.get(a.node, 0) + 1
        taken = {s.index for s in self.state.shards if s.node == self.node}
        for i in [i for i in range(msg.workers + len(msg.adopt)) if i not in taken][
            : msg.workers - len(taken)
        ]:
            self._spawn(i, self.node)
        self.wakeupAfter(TICK_S)
        self.send(sender, c.Answer(0, self._status()))

    def receiveMsg_ActorSystemConventionUpdate(self, msg: ActorSystemConventionUpdate, sender: Any) -> None:
        caps = msg.remoteCapabilities or {}
        node = caps.get("callbridge.node")
        if not node or not caps.get("callbridge.gateway"):
            return
        if msg.remoteAdded:
            workers = int(caps.get("callbridge.workers", 1))
            self.nodes[node] = workers
            base = max((s.index for s in self.state.shards), default=-1) + 1
            log.info("node %s joined with %d worker(s)", node, workers)
            for i in range(workers):
                self._spawn(base + i, node)
        else:
            self.nodes.pop(node, None)
            for shard in [s for s in self.state.shards if s.node == node]:
                self._replace(shard, "lost with its node")

    def receiveMsg_ShardUp(self, msg: c.ShardUp, sender: Any) -> None:
        shard = self._find(sender)
        if shard is not None:
            shard.pid, shard.url, shard.last_beat = msg.pid, msg.url, time.monotonic()
            log.info("shard %d up: pid %d on %s (%s)", msg.index, msg.pid, msg.node, msg.url)

    def receiveMsg_Heartbeat(self, msg: c.Heartbeat, sender: Any) -> None:
        shard = self._find(sender)
        if shard is not None:
            shard.pid = msg.pid
            shard.last_beat = time.monotonic()
            shard.calls, shard.accepting, shard.loop_lag_ms = msg.calls, msg.accepting, msg.loop_lag_ms
            self.send(sender, c.HeartbeatAck(self.state.restarts))

    def receiveMsg_ChildActorExited(self, msg: ChildActorExited, sender: Any) -> None:
        shard = self._find(msg.childAddress)
        if shard is not None and not shard.drained:
            self._replace(shard, "exited")

    def receiveMsg_WakeupMessage(self, msg: WakeupMessage, sender: Any) -> None:
        now = time.monotonic()
        for shard in list(self.state.shards):
            if shard.drained:
                continue
            silent = now - (shard.last_beat if shard.last_beat is not None else shard.created)
            limit = DEAD_AFTER_S if shard.last_beat is not None else START_GRACE_S
            if silent > limit:
                self._kill(shard)
                if shard.node != self.node:  # a lost machine, most likely: don't place there again
                    self.nodes.pop(shard.node, None)
                self._replace(shard, f"silent for {silent:.1f} s")
        if self.replays_due and now > self.replay_deadline:
            log.warning(
                "no store replay from adopted shard(s) %s in %.1f s; answering without",
                sorted(self.replays_due),
                REPLAY_WAIT_S,
            )
            self._replayed()
        self.book.expire(now)
        self.wakeupAfter(TICK_S)

    def _kill(self, shard: ShardInfo) -> None:
        self.send(shard.address, ActorExitRequest())
        if shard.pid is not None and shard.node == self.node:
            try:  # a hung process may never read the request
                os.kill(shard.pid, 9)
            except ProcessLookupError:
                pass

    # -- the call store -------------------------------------------------------------------

    def _held(self, msg: Any, sender: Any) -> bool:
        """True when ``msg`` waits for the adopted shards' replays (answered after them,
        in order)."""
        if not self.replays_due:
            return False
        if len(self.held) >= MAX_HELD:
            self._replayed()
            return False
        self.held.append((msg, sender))
        return True

    def _replayed(self) -> None:
        self.replays_due.clear()
        held, self.held = self.held, []
        for msg, sender in held:
            self.receiveMessage(msg, sender)

    def receiveMsg_Replay(self, msg: c.Replay, sender: Any) -> None:
        self.book.replay(msg.pid, msg.tokens, msg.streams, msg.ended, time.monotonic())
        log.info(
            "shard %d (pid %d) replayed %d token(s), %d stream(s), %d ended call(s)",
            msg.index,
            msg.pid,
            len(msg.tokens),
            len(msg.streams),
            len(msg.ended),
        )
        if msg.index in self.replays_due:
            self.replays_due.discard(msg.index)
            if not self.replays_due:
                self._replayed()

    def receiveMsg_Checkpoint(self, msg: c.Checkpoint, sender: Any) -> None:
        if not self._held(msg, sender):
            self.book.checkpoint(msg.call_sid, msg.snapshot, time.monotonic())

    def receiveMsg_Lookup(self, msg: c.Lookup, sender: Any) -> None:
        if not self._held(msg, sender):
            self.send(sender, c.Answer(msg.req, self.book.lookup(msg.call_sid, time.monotonic())))

    def receiveMsg_Finish(self, msg: c.Finish, sender: Any) -> None:
        if not self._held(msg, sender):
            self.book.finish_stream(msg.call_sid, msg.record, msg.resumable, msg.owner, time.monotonic())
            self.send(sender, c.Answer(msg.req, True))

    def receiveMsg_Record(self, msg: c.Record, sender: Any) -> None:
        if not self._held(msg, sender):
            self.send(sender, c.Answer(msg.req, self.book.record(msg.call_sid, time.monotonic())))

    def receiveMsg_Listing(self, msg: c.Listing, sender: Any) -> None:
        if not self._held(msg, sender):
            self.send(sender, c.Answer(msg.req, self.book.listing(time.monotonic())))

    def receiveMsg_ClaimToken(self, msg: c.ClaimToken, sender: Any) -> None:
        if not self._held(msg, sender):
            self.send(sender, c.Answer(msg.req, self.book.claim_token(msg.key, msg.keep_s, time.monotonic())))

    def receiveMsg_ClaimStream(self, msg: c.ClaimStream, sender: Any) -> None:
        if not self._held(msg, sender):
            self.send(sender, c.Answer(msg.req, self.book.claim_stream(msg.call_sid, msg.owner)))

    def receiveMsg_Streaming(self, msg: c.Streaming, sender: Any) -> None:
        if not self._held(msg, sender):
            self.send(sender, c.Answer(msg.req, self.book.streaming(msg.call_sid)))

    def receiveMsg_ReleaseStream(self, msg: c.ReleaseStream, sender: Any) -> None:
        if not self._held(msg, sender):
            self.book.release_stream(msg.call_sid, msg.owner)

    def receiveMsg_Health(self, msg: c.Health, sender: Any) -> None:
        self.send(sender, c.Answer(msg.req, self._status()))

    def _status(self) -> c.PoolStatus:
        now = time.monotonic()
        live = [snap for _, snap in self.book.live.values()]
        return c.PoolStatus(
            shards=[s.view(now) for s in sorted(self.state.shards, key=lambda s: s.index)],
            adoptable=[
                c.Adoptee(s.index, s.node, s.address, s.pid, s.url) for s in self.state.shards if s.pid
            ],
            shard_restarts=self.state.restarts,
            calls_live=sum(1 for s in live if not awaiting_redirect(s)),
            calls_orphaned=sum(1 for s in live if awaiting_redirect(s)),
        )

    # -- shutdown ---------------------------------------------------------------------------

    def receiveMsg_Drain(self, msg: c.Drain, sender: Any) -> None:
        self.state.draining = True
        self.state.drain_waiter = sender
        for shard in self.state.shards:
            self.send(shard.address, msg)
        self._maybe_drained()

    def receiveMsg_Drained(self, msg: c.Drained, sender: Any) -> None:
        shard = self._find(sender)
        if shard is not None:
            shard.drained = True
            log.info("shard %d drained (%d call(s) handed over)", msg.index, msg.handed_over)
        self._maybe_drained()

    def _maybe_drained(self) -> None:
        st = self.state
        if st.draining and st.drain_waiter is not None and all(s.drained for s in st.shards):
            self.send(st.drain_waiter, c.Answer(0, self._status()))
            st.drain_waiter = None
