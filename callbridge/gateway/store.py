"""Where a call's state lives so that it outlives the process carrying the call.

A ``CallStore`` keeps, per CallSid, the latest *checkpoint* of a live call (its
conversation, what was played, its timeline, the pid carrying it) and the final record
of an ended one. The gateway uses it so:

- the voice webhook asks ``lookup``: an unknown call gets a fresh stream; a known live
  call whose stream dropped (Twilio followed our ``<Redirect>``) gets a stream that
  resumes it; an ended call gets ``<Hangup/>`` (an intentional hang-up never loops);
- a ``Call`` posts ``checkpoint`` after events that change what matters (coalesced and
  rate-limited, fire and forget; each carries the timeline events new since the call's previous one, which
  ``StoreBook.checkpoint`` appends to the view it keeps) and ``finish`` when it ends (awaited before the socket closes, so a
  redirect can never overtake it);
- ``GET /calls/{callSid}`` falls back to ``record`` for calls this process does not carry,
  and ``GET /calls`` lists every process's calls from ``listing`` (production mode);
- the media socket ``claim_token``s each stream token at ``start``: the first claim wins,
  any later one (a replayed token, on this process or another) is refused. Used tokens
  are remembered until they expire, at most ``max_tokens`` (the oldest forgotten first:
  they are the nearest to expiry anyway).

``LocalStore`` (dev mode) keeps them in this process; production mode's store lives in
the thespian control plane (``callbridge.prod``). Both are bounded: at most
``max_calls`` checkpoints (oldest dropped) and ``history`` ended records; a checkpoint
not refreshed for ``ttl_s`` is forgotten (its call can no longer be resumed).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Literal, Protocol

State = Literal["live", "ended"]
CHECKPOINT_TIMELINE = 500
"""At most this many (latest) timeline events are kept with a checkpoint."""
SUMMARY_KEYS = (
    "callSid", "streamSid", "source", "state", "pid", "resumes", "started_at", "duration_ms", "stop_reason", "figures",
)


def awaiting_redirect(snapshot: dict[str, Any]) -> bool:
    """A live checkpoint whose stream is gone (dropped, or its process died): the call
    waits for Twilio's redirect to resume it."""
    return bool(snapshot.get("orphaned")) or "record" in snapshot


def summary_of(record: dict[str, Any]) -> dict[str, Any]:
    """A call's summary (for listings) from its full record."""
    return {k: record.get(k) for k in SUMMARY_KEYS}


@dataclass(frozen=True)
class Stored:
    state: State
    data: dict[str, Any]
    """A checkpoint (live) or the final record (ended)."""


class CallStore(Protocol):
    async def lookup(self, call_sid: str) -> Stored | None: ...
    def checkpoint(self, call_sid: str, snapshot: dict[str, Any]) -> None: ...
    async def finish(self, call_sid: str, record: dict[str, Any], resumable: bool) -> None: ...
    async def record(self, call_sid: str) -> dict[str, Any] | None: ...
    async def listing(self) -> dict[str, list[dict[str, Any]]] | None: ...
    async def claim_token(self, key: str, keep_s: float) -> bool: ...


class StoreBook:
    """The bounded bookkeeping shared by every store; pure, ``now`` passed in."""

    def __init__(self, history: int, max_calls: int = 10_000, ttl_s: float = 600.0, max_tokens: int = 100_000) -> None:
        self.live: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()
        self.used_tokens: OrderedDict[str, float] = OrderedDict()
        """Claimed stream tokens -> when they may be forgotten (``now`` + seconds left)."""
        self.max_tokens = max_tokens
        self.ended: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.history = max(0, history)
        self.max_calls = max_calls
        self.ttl_s = ttl_s

    def checkpoint(self, call_sid: str, snapshot: dict[str, Any], now: float) -> None:
        """Keep ``snapshot`` as the call's latest. Its ``timeline_add`` (events new since
        the call's previous checkpoint; ``timeline_reset``: from scratch) is appended to
        the timeline kept in its ``view``, at most ``CHECKPOINT_TIMELINE`` (the latest)."""
        if call_sid in self.ended:  # a late checkpoint after the end: ignore
            return
        if "timeline_add" in snapshot:
            snapshot = dict(snapshot)
            added = snapshot.pop("timeline_add") or []
            previous = self.live.get(call_sid)
            kept: list[Any] = []
            if not snapshot.pop("timeline_reset", True) and previous is not None:
                kept = (previous[1].get("view") or {}).get("timeline") or []
            kept.extend(added)
            del kept[:-CHECKPOINT_TIMELINE]
            snapshot["view"] = {**(snapshot.get("view") or {}), "timeline": kept}
        self.live[call_sid] = (now, snapshot)
        self.live.move_to_end(call_sid)
        while len(self.live) > self.max_calls:
            self.live.popitem(last=False)

    def finish(self, call_sid: str, record: dict[str, Any], resumable: bool, now: float) -> None:
        """The call's stream ended. ``resumable``: it dropped without a hang-up, so its
        checkpoint is kept for a redirect; otherwise the call is over for good."""
        if resumable:
            snapshot = self.live.get(call_sid, (now, {}))[1]
            self.live[call_sid] = (now, {**snapshot, "record": record})
            return
        self.live.pop(call_sid, None)
        self.ended[call_sid] = record
        self.ended.move_to_end(call_sid)
        while len(self.ended) > self.history:
            self.ended.popitem(last=False)

    def lookup(self, call_sid: str, now: float) -> Stored | None:
        self.expire(now)
        if call_sid in self.live:
            return Stored("live", self.live[call_sid][1])
        if call_sid in self.ended:
            return Stored("ended", self.ended[call_sid])
        return None

    def record(self, call_sid: str, now: float) -> dict[str, Any] | None:
        found = self.lookup(call_sid, now)
        if found is None:
            return None
        if found.state == "ended":
            return found.data
        return found.data.get("record") or found.data.get("view")

    def expire(self, now: float) -> None:
        while self.live:
            sid, (at, _) = next(iter(self.live.items()))
            if now - at <= self.ttl_s:
                break
            del self.live[sid]

    def listing(self, now: float) -> dict[str, list[dict[str, Any]]]:
        """Summaries of every call known here: live ones (from their checkpoints; an
        orphaned one awaits its redirect) and the ended ones kept, most recent first."""
        self.expire(now)
        live = []
        for _, snap in self.live.values():
            summary = summary_of(snap.get("record") or snap.get("view") or {})
            summary["state"] = "awaiting redirect" if awaiting_redirect(snap) else "live"
            live.append(summary)
        return {"calls": live, "ended": [summary_of(r) for r in reversed(self.ended.values())]}

    def claim_token(self, key: str, keep_s: float, now: float) -> bool:
        """True the first time ``key`` is claimed while remembered; False after."""
        used = self.used_tokens
        while used:
            first, until = next(iter(used.items()))
            if until > now and len(used) < self.max_tokens:
                break
            del used[first]
        if key in used:
            return False
        used[key] = now + keep_s + 1.0
        return True

    def orphan(self, pid: int, now: float) -> list[str]:
        """The process ``pid`` died: its live calls await their redirect. Returns them."""
        sids = [sid for sid, (_, snap) in self.live.items() if snap.get("pid") == pid]
        for sid in sids:
            at, snap = self.live[sid]
            self.live[sid] = (now, {**snap, "orphaned": True})
        return sids


class LocalStore:
    """The dev-mode store: this process's memory."""

    def __init__(self, history: int, clock: Any) -> None:
        self.book = StoreBook(history)
        self.clock = clock

    async def lookup(self, call_sid: str) -> Stored | None:
        return self.book.lookup(call_sid, self.clock())

    def checkpoint(self, call_sid: str, snapshot: dict[str, Any]) -> None:
        self.book.checkpoint(call_sid, snapshot, self.clock())

    async def finish(self, call_sid: str, record: dict[str, Any], resumable: bool) -> None:
        self.book.finish(call_sid, record, resumable, self.clock())

    async def record(self, call_sid: str) -> dict[str, Any] | None:
        return self.book.record(call_sid, self.clock())

    async def listing(self) -> dict[str, list[dict[str, Any]]] | None:
        return None  # this process's registry is the whole story in dev mode

    async def claim_token(self, key: str, keep_s: float) -> bool:
        return self.book.claim_token(key, keep_s, self.clock())
