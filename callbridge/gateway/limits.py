"""Abuse limits, as pure logic (time passed in as ``now``; no I/O).

- ``TokenBucket``: ``rate`` units per second, at most ``burst`` banked.
- ``SourceRates``: one ``TokenBucket`` per source address (the webhook's per-source
  rate limit; the operator endpoints' failed authentications, charged only on failure,
  ``exhausted`` checked first). At most ``max_sources`` buckets are kept (least recently used dropped; a
  dropped source starts again with a full bucket), so a spray of addresses cannot grow
  memory.
- ``SourceSlots``: open connections per source address (the media sockets' per-source
  cap); an address with no connection left is forgotten.
- ``InboundRate``: one call's inbound media budget in seconds of audio: real time times
  ``factor``, with ``burst_s`` banked, so a mobile line that catches up after a stall
  (a burst of queued frames) passes and a client sending far faster than real time,
  sustained, does not. Every message costs at least one 20 ms frame (tiny or empty
  payloads cannot flood for free).
- ``source_address``: the address a limit is keyed by: the peer, or with
  ``TRUST_PROXY`` the address the proxy saw (the last ``X-Forwarded-For`` entry: the
  proxy appends it; entries before it are the client's own claims, so not trusted).
- ``LogTally``: bounded logging of repeated bad input: counts by kind (at most
  ``max_kinds`` kinds) and says to log only the 1st, 2nd, 4th, 8th ... of each.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

from ..codecs.framing import FRAME_S

ULAW_BYTES_PER_S = 8000


class TokenBucket:
    __slots__ = ("at", "burst", "rate", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.at = now

    def _refill(self, now: float) -> None:
        elapsed = now - self.at
        if elapsed > 0:
            self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
            self.at = now

    def take(self, now: float, cost: float = 1.0) -> bool:
        """Spend ``cost`` if the bucket holds it; False (nothing spent) if not."""
        self._refill(now)
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        return False

    def empty(self, now: float, cost: float = 1.0) -> bool:
        """True when ``cost`` is not available now (nothing spent)."""
        self._refill(now)
        return self.tokens < cost

    def spend(self, now: float, cost: float = 1.0) -> None:
        """Spend ``cost`` whether or not the bucket holds it all (it never goes below 0)."""
        self._refill(now)
        self.tokens = max(0.0, self.tokens - cost)

    def retry_after(self, cost: float = 1.0) -> float:
        """Seconds until ``cost`` will be available."""
        return max(0.0, (cost - self.tokens) / self.rate) if self.rate > 0 else float("inf")


class SourceRates:
    """Per-source token buckets; ``rate <= 0`` means no limit."""

    def __init__(self, rate: float, burst: float, max_sources: int = 10_000) -> None:
        self.rate = rate
        self.burst = max(burst, 1.0)
        self.max_sources = max_sources
        self.buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self.spent = 0
        self.refused = 0

    def allow(self, source: str, now: float) -> bool:
        if self.rate <= 0:
            return True
        bucket = self.buckets.get(source)
        if bucket is None:
            bucket = self.buckets[source] = TokenBucket(self.rate, self.burst, now)
            while len(self.buckets) > self.max_sources:
                self.buckets.popitem(last=False)
        else:
            self.buckets.move_to_end(source)
        if bucket.take(now):
            self.spent += 1
            return True
        self.refused += 1
        return False

    def exhausted(self, source: str, now: float) -> bool:
        """True when ``source`` has nothing left (nothing spent, no bucket created: a
        source never charged is never exhausted). Counted in ``refused``."""
        bucket = self.buckets.get(source)
        if self.rate <= 0 or bucket is None or not bucket.empty(now):
            return False
        self.refused += 1
        return True

    def retry_after(self, source: str) -> float:
        bucket = self.buckets.get(source)
        return bucket.retry_after() if bucket is not None else 0.0


class SourceSlots:
    """Open connections per source; ``limit <= 0`` means no limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open: dict[str, int] = {}

    def acquire(self, source: str) -> bool:
        n = self.open.get(source, 0)
        if 0 < self.limit <= n:
            return False
        self.open[source] = n + 1
        return True

    def release(self, source: str) -> None:
        n = self.open.get(source, 0) - 1
        if n > 0:
            self.open[source] = n
        else:
            self.open.pop(source, None)


PAUSE_GRACE_S = 1.0
"""Audio banked beyond ``burst_s`` for this server's own pauses: while its event loop is
busy, real-time frames queue in the socket and are read at once, like a line's burst."""


class InboundRate:
    """One call's inbound budget: ``factor`` x real time sustained, ``burst_s`` banked
    (plus ``PAUSE_GRACE_S`` and a frame's slack). ``factor <= 0`` means no limit."""

    __slots__ = ("bucket", "factor")

    def __init__(self, factor: float, burst_s: float, now: float) -> None:
        self.factor = factor
        self.bucket = TokenBucket(factor, burst_s + PAUSE_GRACE_S + FRAME_S, now)

    def allow(self, payload_bytes: int, now: float) -> bool:
        if self.factor <= 0:
            return True
        return self.bucket.take(now, max(payload_bytes / ULAW_BYTES_PER_S, FRAME_S))


def source_address(peer: str | None, headers: Mapping[str, str], trust_proxy: bool) -> str:
    if trust_proxy:
        forwarded = headers.get("X-Forwarded-For", "")
        last = forwarded.rsplit(",", 1)[-1].strip()
        if last:
            return last[:64]
    return peer or "?"


class LogTally:
    """Counts events by kind and says which to log: the 1st, 2nd, 4th, ... of each, for at
    most ``max_kinds`` kinds (later kinds count under ``"(other)"``)."""

    def __init__(self, max_kinds: int = 64) -> None:
        self.max_kinds = max_kinds
        self.counts: dict[str, int] = {}

    def count(self, kind: str) -> int:
        """Count one ``kind``; return its count if this one should be logged, else 0."""
        if kind not in self.counts and len(self.counts) >= self.max_kinds:
            kind = "(other)"
        n = self.counts[kind] = self.counts.get(kind, 0) + 1
        return n if n & (n - 1) == 0 else 0
