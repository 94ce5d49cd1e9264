"""Authentication of Vapi's server-URL webhooks. Pure: no I/O; ``now`` is passed in.

Two modes (``VAPI_WEBHOOK_AUTH``), as Vapi's server credentials allow:

- ``secret``: the header ``X-Vapi-Secret`` carries ``VAPI_WEBHOOK_SECRET`` itself. A
  message whose own ``timestamp`` (ms since the epoch, in the body) is outside the window
  is stale.
- ``hmac``: ``X-Signature`` is the hex HMAC-SHA256, keyed by the secret, of
  ``f"{X-Timestamp}.{raw body}"`` (an optional ``sha256=`` prefix is accepted);
  ``X-Timestamp`` is unix seconds (or milliseconds) within ``WINDOW_S`` of now.

Both: every comparison is constant-time (``hmac.compare_digest``), and a request seen
before within the window (same timestamp and body) is a replay and refused
(``ReplayGuard``, at most ``MAX_SEEN`` remembered; the oldest are forgotten first).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections import OrderedDict
from collections.abc import Mapping

WINDOW_S = 300.0
MAX_SEEN = 20_000
SECRET_HEADER = "X-Vapi-Secret"
SIGNATURE_HEADER = "X-Signature"
TIMESTAMP_HEADER = "X-Timestamp"
_DIGITS = re.compile(r"\d{1,16}")


class ReplayGuard:
    """Digests of accepted requests, each remembered for ``window_s``."""

    def __init__(self, window_s: float = WINDOW_S, max_seen: int = MAX_SEEN) -> None:
        self.window_s = window_s
        self.max_seen = max_seen
        self._seen: OrderedDict[bytes, float] = OrderedDict()

    def first_time(self, digest: bytes, now: float) -> bool:
        """True the first time ``digest`` is offered within the window (and remembers it)."""
        seen = self._seen
        while seen and (next(iter(seen.values())) < now - self.window_s or len(seen) >= self.max_seen):
            seen.popitem(last=False)
        if digest in seen:
            return False
        seen[digest] = now
        return True


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Signature`` value for ``body`` at ``timestamp`` (the sender's side)."""
    return hmac.new(secret.encode(), timestamp.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()


def _seconds(stamp: str) -> float | None:
    stamp = stamp.strip()
    if not _DIGITS.fullmatch(stamp):
        return None
    value = int(stamp)
    return value / 1000.0 if value > 100_000_000_000 else float(value)


def check(
    mode: str,
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    now: float,
    guard: ReplayGuard,
    body_timestamp_ms: float | None = None,
) -> str:
    """Why the request is refused ("" if it is accepted). ``body_timestamp_ms``: the
    message's own ``timestamp``, if it has one (``secret`` mode checks its age)."""
    if not secret:
        return "VAPI_WEBHOOK_SECRET is not set"
    window = guard.window_s
    if mode == "hmac":
        stamp = headers.get(TIMESTAMP_HEADER, "")
        signature = headers.get(SIGNATURE_HEADER, "").strip()
        if signature.startswith("sha256="):
            signature = signature[len("sha256=") :]
        at = _seconds(stamp)
        if at is None or not signature:
            return f"missing or malformed {TIMESTAMP_HEADER}/{SIGNATURE_HEADER}"
        expected = sign(secret, stamp.strip(), body)
        if not hmac.compare_digest(expected.encode(), signature.lower().encode("utf-8", "replace")):
            return "bad signature"
        if abs(now - at) > window:
            return "stale timestamp"
        key = stamp.strip().encode() + b"." + body
    else:
        given = headers.get(SECRET_HEADER)
        if not given or not hmac.compare_digest(given.encode("utf-8", "replace"), secret.encode()):
            return f"bad or missing {SECRET_HEADER}"
        if body_timestamp_ms is not None and abs(now - body_timestamp_ms / 1000.0) > window:
            return "stale message timestamp"
        key = body
    if not guard.first_time(hashlib.sha256(key).digest(), now):
        return "replayed"
    return ""
