"""Control-plane messages between the pool supervisor, the shards and ``run.py serve``.

Thespian pickles these between processes (and machines), so they are small plain
classes. Audio never travels here: a call's frames stay inside the shard that carries it.
Requests that want an answer carry ``req``; the answer is ``Answer(req, value)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class StartPool:
    workers: int
    """Shards on the leader's own node (members bring their own count)."""
    adopt: list[Adoptee] = field(default_factory=list)
    """Shards of a pool that died, still serving: the new pool takes them over."""
    node: str = ""
    """The leader's node name (``NODE_NAME``; unset: the host name)."""
    history: int = 200
    """Ended calls the store keeps (``CALL_HISTORY``)."""


@dataclass
class Adoptee:
    index: int
    node: str
    address: Any
    pid: int | None
    url: str


@dataclass
class NewPool:
    """From a pool adopting a shard: report here from now on (and checkpoint again)."""


@dataclass
class StartShard:
    index: int
    node: str


@dataclass
class ShardUp:
    index: int
    pid: int
    node: str
    url: str


@dataclass
class Heartbeat:
    """Sent by a shard's event loop every ``HEARTBEAT_S``: a loop that stops beating is
    treated as dead, whatever thespian says."""

    index: int
    pid: int
    calls: int
    accepting: bool
    loop_lag_ms: float


@dataclass
class HeartbeatAck:
    """The pool is alive: a shard that stops getting these has lost its pool."""

    shard_restarts: int = 0


@dataclass
class Checkpoint:
    call_sid: str
    snapshot: dict[str, Any]


@dataclass
class Lookup:
    req: int
    call_sid: str


@dataclass
class Finish:
    req: int
    call_sid: str
    record: dict[str, Any]
    resumable: bool
    owner: int | None = None
    """The pid of the shard whose stream ended: its stream claim is released."""


@dataclass
class Record:
    req: int
    call_sid: str


@dataclass
class Listing:
    req: int


@dataclass
class ClaimToken:
    """A stream token starts one stream: answered True for the first claim of ``key``."""

    req: int
    key: str
    keep_s: float


@dataclass
class ClaimStream:
    """A shard starts a stream for ``call_sid``: answered True unless another stream of
    the call holds it (one live stream per CallSid, cluster-wide)."""

    req: int
    call_sid: str
    owner: int


@dataclass
class Streaming:
    """Whether a stream holds ``call_sid``'s claim: answered True or False."""

    req: int
    call_sid: str


@dataclass
class ReleaseStream:
    """A claimed stream ended before it became a call (refused at ``start``)."""

    call_sid: str
    owner: int


@dataclass
class Replay:
    """From an adopted shard to its new pool, after ``NewPool``: what it told the pool
    that died (``StoreJournal``). Until every adopted shard's replay is in (or
    ``pool.REPLAY_WAIT_S``), the new pool holds the store's requests back."""

    index: int
    pid: int
    tokens: list[tuple[str, float]]
    """Stream tokens it claimed, with the seconds each is still to be remembered."""
    streams: list[str]
    """CallSids whose live stream it carries."""
    ended: list[tuple[str, dict[str, Any]]]
    """Its recent calls that ended for good, with their summaries."""


@dataclass
class Health:
    req: int


@dataclass
class Answer:
    req: int
    value: Any = None


@dataclass
class Drain:
    """Stop taking calls; let running calls finish within ``deadline_s``, then hand the
    rest over (their streams close; Twilio's redirect resumes them elsewhere)."""

    deadline_s: float


@dataclass
class Drained:
    index: int
    pid: int
    handed_over: int


@dataclass
class PoolStatus:
    """The pool's view, answered to ``Health`` and to ``run.py serve``."""

    shards: list[dict[str, Any]] = field(default_factory=list)
    adoptable: list[Adoptee] = field(default_factory=list)
    """The shards' addresses, for ``run.py serve`` to hand to a new pool."""
    shard_restarts: int = 0
    calls_live: int = 0
    calls_orphaned: int = 0
