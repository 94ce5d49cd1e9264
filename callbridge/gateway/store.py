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
  are remembered until they expire (``UsedTokens``);
- then it ``claim_stream``s the CallSid: one live stream per call, whichever process
  carries it. The claim is the carrying process's until its stream ``finish``es (a drop
  included: the resume that follows claims it again), it ``release_stream``s a stream
  that never became a call, or the process dies (``StoreBook.orphan``). The webhook
  asks ``streaming`` before it answers a resume (the old stream's process may not be
  known dead yet).

``LocalStore`` (dev mode) keeps them in this process; production mode's store lives in
the thespian control plane (``callbridge.prod``). Both are bounded: at most
``max_calls`` checkpoints (oldest dropped) and stream claims, and ``history`` ended
records; a checkpoint not refreshed for ``ttl_s`` is forgotten (its call can no longer
be resumed).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Literal, Protocol

State = Literal["live", "ended"]
CHECKPOINT_TIMELINE = 500
"""At most this many (latest) timeline events are kept with a checkpoint."""
SUMMARY_KEYS = (
    "callSid",
    "streamSid",
    "source",
    "state",
    "pid",
    "resumes",
    "started_at",
    "duration_ms",
    "stop_reason",
    "figures",
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
    async def claim_stream(self, call_sid: str) -> bool | None:
        """True: this process now carries the call's one live stream; False: another
        stream has it; None: nobody answered (production mode's control plane)."""
        ...

    def release_stream(self, call_sid: str) -> None: ...
    async def streaming(self, call_sid: str) -> bool | None:
        """Whether a stream holds the call's claim (None: nobody answered)."""
        ...


class UsedTokens:
    """Stream tokens already claimed, each remembered until it may be forgotten; at most
    ``limit`` (the oldest forgotten first: they are the nearest to expiry anyway). Pure,
    ``now`` passed in."""

    SLACK_S = 1.0
    """Kept this much past the token's expiry (clocks of different processes)."""

    def __init__(self, limit: int) -> None:
        self.until: OrderedDict[str, float] = OrderedDict()
        self.limit = limit

    def __len__(self) -> int:
        return len(self.until)

    def claim(self, key: str, keep_s: float, now: float) -> bool:
        """True the first time ``key`` is claimed while remembered; False after."""
        self._forget(now)
        if key in self.until:
            return False
        self.remember(key, keep_s + self.SLACK_S, now)
        return True

    def remember(self, key: str, keep_s: float, now: float) -> None:
        """``key`` is used for ``keep_s`` more seconds (a claim made elsewhere)."""
        self.until[key] = max(self.until.get(key, 0.0), now + keep_s)
        while len(self.until) > self.limit:
            self.until.popitem(last=False)

    def left(self, now: float) -> list[tuple[str, float]]:
        """Every remembered key with its seconds left (what another store must remember)."""
        return [(key, until - now) for key, until in self.until.items() if until > now]

    def _forget(self, now: float) -> None:
        until = self.until
        while until:
            first, at = next(iter(until.items()))
            if at > now:
                break
            del until[first]


class StoreBook:
    """The bounded bookkeeping shared by every store; pure, ``now`` passed in."""

    def __init__(
        self, history: int, max_calls: int = 10_000, ttl_s: float = 600.0, max_tokens: int = 100_000
    ) -> None:
        self.live: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()
        self.used_tokens = UsedTokens(max_tokens)
        self.streams: OrderedDict[str, int] = OrderedDict()
        """CallSids with a live stream -> the pid of the process carrying it."""
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
        return self.used_tokens.claim(key, keep_s, now)

    def claim_stream(self, call_sid: str, owner: int) -> bool:
        """True when no stream holds ``call_sid``: now ``owner`` (a pid) does. False while
        any holds it, ``owner`` included (one live stream per call)."""
        if call_sid in self.streams:
            return False
        self.streams[call_sid] = owner
        while len(self.streams) > self.max_calls:
            self.streams.popitem(last=False)
        return True

    def streaming(self, call_sid: str) -> bool:
        return call_sid in self.streams

    def release_stream(self, call_sid: str, owner: int | None) -> None:
        """``owner``'s stream of ``call_sid`` is gone (another's claim is kept)."""
        if owner is not None and self.streams.get(call_sid) == owner:
            del self.streams[call_sid]

    def finish_stream(
        self, call_sid: str, record: dict[str, Any], resumable: bool, owner: int | None, now: float
    ) -> None:
        """``finish`` as told by the process ``owner``: its stream claim goes too."""
        self.release_stream(call_sid, owner)
        self.finish(call_sid, record, resumable, now)

    def replay(
        self,
        owner: int,
        tokens: list[tuple[str, float]],
        streams: list[str],
        ended: list[tuple[str, dict[str, Any]]],
        now: float,
    ) -> None:
        """Take again what the process ``owner`` told a store that is gone: the tokens
        it claimed (seconds left each), the streams it carries, the calls it ended."""
        for key, keep_s in tokens:
            self.used_tokens.remember(key, keep_s, now)
        for call_sid, record in ended:
            if call_sid not in self.ended:
                self.finish(call_sid, record, resumable=False, now=now)
        for call_sid in streams:
            if call_sid not in self.ended:
                self.claim_stream(call_sid, owner)

    def orphan(self, pid: int, now: float) -> list[str]:
        """The process ``pid`` died: its live calls await their redirect (their stream
        claims go: the resume takes them). Returns them."""
        for call_sid in [sid for sid, owner in self.streams.items() if owner == pid]:
            del self.streams[call_sid]
        sids = [sid for sid, (_, snap) in self.live.items() if snap.get("pid") == pid]
        for sid in sids:
            _, snap = self.live[sid]
            self.live[sid] = (now, {**snap, "orphaned": True})
        return sids


class LocalStore:
    """The dev-mode store: this process's memory."""

    def __init__(self, history: int, clock: Any) -> None:
        self.book = StoreBook(history)
        self.clock = clock
        self.pid = os.getpid()

    async def lookup(self, call_sid: str) -> Stored | None:
        return self.book.lookup(call_sid, self.clock())

    def checkpoint(self, call_sid: str, snapshot: dict[str, Any]) -> None:
        self.book.checkpoint(call_sid, snapshot, self.clock())

    async def finish(self, call_sid: str, record: dict[str, Any], resumable: bool) -> None:
        self.book.finish_stream(call_sid, record, resumable, self.pid, self.clock())

    async def record(self, call_sid: str) -> dict[str, Any] | None:
        return self.book.record(call_sid, self.clock())

    async def listing(self) -> dict[str, list[dict[str, Any]]] | None:
        return None  # this process's registry is the whole story in dev mode

    async def claim_token(self, key: str, keep_s: float) -> bool:
        return self.book.claim_token(key, keep_s, self.clock())

    async def claim_stream(self, call_sid: str) -> bool | None:
        return self.book.claim_stream(call_sid, self.pid)

    def release_stream(self, call_sid: str) -> None:
        self.book.release_stream(call_sid, self.pid)

    async def streaming(self, call_sid: str) -> bool | None:
        return self.book.streaming(call_sid)
