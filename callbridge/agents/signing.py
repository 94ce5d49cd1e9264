"""HMAC-SHA256 signing of outgoing webhook bodies (and its check on the receiving side).

The signature covers the timestamp and the exact body bytes: ``HMAC(secret,
f"{timestamp}.{body}")``, sent as two headers::

    X-Callbridge-Timestamp: 1700000000
    X-Callbridge-Signature: v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd

A receiver recomputes it over the raw body it read (before any JSON parsing), compares in
constant time and rejects timestamps outside a window (replays). During a key rotation the
signature header may carry several comma- or space-separated ``v1=`` values; one matching
is enough.
"""

from __future__ import annotations

import hashlib
import hmac
import re

TIMESTAMP_HEADER = "X-Callbridge-Timestamp"
SIGNATURE_HEADER = "X-Callbridge-Signature"
SCHEME = "v1"
_TIMESTAMP_RE = re.compile(r"\d{1,15}")


def _bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8")


def sign(secret: str | bytes, timestamp: int | str, body: bytes | str) -> str:
    """The signature header value, ``v1=<hex HMAC-SHA256 of f"{timestamp}.{body}">``."""
    key = _bytes(secret)
    if not key:
        raise ValueError("signing secret is empty")
    message = str(timestamp).encode("ascii") + b"." + _bytes(body)
    return f"{SCHEME}=" + hmac.new(key, message, hashlib.sha256).hexdigest()


def verify(
    secret: str | bytes,
    timestamp: int | str | None,
    body: bytes | str,
    signature: str | None,
    now: float,
    window_s: float = 300,
) -> bool:
    """True if ``signature`` (the header value) signs ``body`` at ``timestamp`` (the header
    value, decimal seconds) with ``secret``, and ``timestamp`` is within ``window_s`` of
    ``now``. Never raises on bad input: anything malformed is False."""
    try:
        if not secret or timestamp is None or not signature:
            return False
        ts_text = str(timestamp).strip()
        if not _TIMESTAMP_RE.fullmatch(ts_text) or abs(now - int(ts_text)) > window_s:
            return False
        expected = sign(secret, ts_text, body).encode("ascii")
        ok = False
        for candidate in re.split(r"[,\s]+", signature.strip()):
            if candidate.startswith(f"{SCHEME}="):
                ok |= hmac.compare_digest(expected, candidate.encode("utf-8", "replace"))
        return ok
    except (TypeError, ValueError, UnicodeError):
        return False


def signed_headers(secret: str | bytes, body: bytes | str, now: float) -> dict[str, str]:
    """The two headers for ``body`` sent at ``now`` (seconds since the epoch)."""
    ts = str(int(now))
    return {TIMESTAMP_HEADER: ts, SIGNATURE_HEADER: sign(secret, ts, body)}
