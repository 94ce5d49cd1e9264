"""Authentication of Vapi's server-URL webhooks. Pure: no I/O; ``now`` is passed in.

The three credentials Vapi can send (its webhook credential's ``authenticationPlan``),
chosen with ``VAPI_WEBHOOK_AUTH`` and described by ``WebhookAuth`` (``auth_from(settings.vapi_webhook)``
builds and validates it at start):

- ``bearer`` (Vapi's default): header ``headerName`` (default ``Authorization``) carries
  ``Bearer <token>``, or the bare token with ``bearerPrefixEnabled: false``.
- ``secret`` (legacy): header ``X-Vapi-Secret`` carries the token itself (a bearer
  credential with that header and no prefix, or the old inline ``server.secret``).
- ``hmac``: ``signatureHeader`` carries ``signaturePrefix`` + the ``algorithm`` HMAC
  (``signatureEncoding`` hex or base64) of ``payloadFormat`` filled in with ``{body}``,
  ``{timestamp}`` (header ``timestampHeader``), ``{method}``, ``{url}`` and ``{svix-id}``
  (header ``messageIdHeader``); the key is the secret, base64-decoded if ``secretIsBase64``.

Every comparison is constant-time over bytes (a header that is not ASCII is refused, never
an error); a signed timestamp (seconds or milliseconds) or, without one, the message's own
``timestamp`` must lie within ``WINDOW_S`` of now; a request seen before within the window
is a replay and refused (``ReplayGuard``, at most ``MAX_SEEN`` remembered).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

WINDOW_S = 300.0
MAX_SEEN = 20_000
MAX_HEADER_CHARS = 1024
MODES = ("bearer", "secret", "hmac")
ALGORITHMS = ("sha256", "sha512", "sha1")
ENCODINGS = ("hex", "base64")
SECRET_HEADER = "X-Vapi-Secret"
PLACEHOLDERS = ("body", "timestamp", "method", "url", "svix-id")
_PLACEHOLDER = re.compile(r"\{([a-z-]+)\}")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}")
_DIGITS = re.compile(r"\d{1,16}")


@dataclass(frozen=True)
class WebhookAuth:
    """How ``POST /webhook/vapi`` is authenticated (one of Vapi's credential types)."""

    mode: str = "bearer"
    secret: str = ""
    bearer_header: str = "Authorization"
    bearer_prefix: bool = True
    algorithm: str = "sha256"
    encoding: str = "hex"
    signature_header: str = "x-signature"
    signature_prefix: str = ""
    timestamp_header: str = "x-timestamp"
    include_timestamp: bool = True
    payload_format: str = ""
    """Empty: Vapi's default, ``{timestamp}.{body}`` (``{body}`` without a timestamp)."""
    message_id_header: str = ""
    secret_is_base64: bool = False

    def __post_init__(self) -> None:
        problem = self.problem()
        if problem:
            raise ValueError(problem)

    def problem(self) -> str:
        """Why this configuration cannot work ("" if it can)."""
        if self.mode not in MODES:
            return f"VAPI_WEBHOOK_AUTH must be one of {', '.join(MODES)}, not {self.mode!r}"
        if not self.secret:
            return ""  # the route then refuses everything (and says so)
        if self.mode == "bearer" and not _HEADER_NAME.fullmatch(self.bearer_header):
            return f"VAPI_WEBHOOK_BEARER_HEADER is not a header name: {self.bearer_header!r}"
        if self.mode != "hmac":
            return ""
        if self.algorithm not in ALGORITHMS:
            return (
                f"VAPI_WEBHOOK_HMAC_ALGORITHM must be one of {', '.join(ALGORITHMS)}, not {self.algorithm!r}"
            )
        if self.encoding not in ENCODINGS:
            return f"VAPI_WEBHOOK_HMAC_ENCODING must be hex or base64, not {self.encoding!r}"
        for name, value in (
            ("SIGNATURE_HEADER", self.signature_header),
            ("TIMESTAMP_HEADER", self.timestamp_header),
        ):
            if not _HEADER_NAME.fullmatch(value):
                return f"VAPI_WEBHOOK_HMAC_{name} is not a header name: {value!r}"
        if self.message_id_header and not _HEADER_NAME.fullmatch(self.message_id_header):
            return f"VAPI_WEBHOOK_HMAC_MESSAGE_ID_HEADER is not a header name: {self.message_id_header!r}"
        unknown = sorted({p for p in _PLACEHOLDER.findall(self.payload_format) if p not in PLACEHOLDERS})
        if unknown:
            return f"VAPI_WEBHOOK_HMAC_PAYLOAD has unknown placeholders {unknown} (known: {', '.join(PLACEHOLDERS)})"
        fmt = self.payload
        if "{body}" not in fmt:
            return "VAPI_WEBHOOK_HMAC_PAYLOAD must contain {body}"
        if "{timestamp}" in fmt and not self.include_timestamp:
            return (
                "VAPI_WEBHOOK_HMAC_PAYLOAD signs {timestamp} but VAPI_WEBHOOK_HMAC_INCLUDE_TIMESTAMP is off"
            )
        if "{svix-id}" in fmt and not self.message_id_header:
            return "VAPI_WEBHOOK_HMAC_PAYLOAD signs {svix-id}: set VAPI_WEBHOOK_HMAC_MESSAGE_ID_HEADER"
        if self.secret_is_base64:
            try:
                base64.b64decode(self.secret, validate=True)
            except (binascii.Error, ValueError):
                return "VAPI_WEBHOOK_SECRET is not base64 (VAPI_WEBHOOK_HMAC_SECRET_BASE64 is on)"
        return ""

    @property
    def payload(self) -> str:
        if self.payload_format:
            return self.payload_format
        return "{timestamp}.{body}" if self.include_timestamp else "{body}"

    @property
    def key(self) -> bytes:
        return base64.b64decode(self.secret) if self.secret_is_base64 else self.secret.encode()

    def sign(
        self, body: bytes, timestamp: str = "", method: str = "POST", url: str = "", message_id: str = ""
    ) -> str:
        """The signature header's value for this request (the sender's side; tests)."""
        values = {"body": body, "timestamp": timestamp, "method": method, "url": url, "svix-id": message_id}
        mac = hmac.new(self.key, _fill(self.payload, values), getattr(hashlib, self.algorithm)).digest()
        text = mac.hex() if self.encoding == "hex" else base64.b64encode(mac).decode()
        return self.signature_prefix + text


def auth_from(options: Any) -> WebhookAuth:
    """The ``WebhookAuth`` that ``config.VapiWebhookOptions`` describe (``ValueError``
    saying what is wrong)."""
    return WebhookAuth(
        mode=options.auth,
        secret=options.secret,
        bearer_header=options.bearer_header,
        bearer_prefix=options.bearer_prefix,
        algorithm=options.hmac_algorithm,
        encoding=options.hmac_encoding,
        signature_header=options.hmac_signature_header,
        signature_prefix=options.hmac_prefix,
        timestamp_header=options.hmac_timestamp_header,
        include_timestamp=options.hmac_include_timestamp,
        payload_format=options.hmac_payload,
        message_id_header=options.hmac_message_id_header,
        secret_is_base64=options.hmac_secret_base64,
    )


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


def _fill(fmt: str, values: Mapping[str, Any]) -> bytes:
    out = bytearray()
    at = 0
    for match in _PLACEHOLDER.finditer(fmt):
        out += fmt[at : match.start()].encode()
        value = values[match.group(1)]
        out += value if isinstance(value, bytes) else str(value).encode()
        at = match.end()
    out += fmt[at:].encode()
    return bytes(out)


def _ascii(value: str | None) -> bytes | None:
    """A header value as bytes, or None if absent, too long or not ASCII."""
    if value is None or len(value) > MAX_HEADER_CHARS or not value.isascii():
        return None
    return value.strip().encode()


def _seconds(stamp: bytes) -> float | None:
    if not _DIGITS.fullmatch(stamp.decode()):
        return None
    value = int(stamp)
    return value / 1000.0 if value > 100_000_000_000 else float(value)


def check(
    auth: WebhookAuth,
    headers: Mapping[str, str],
    body: bytes,
    now: float,
    guard: ReplayGuard,
    body_timestamp_ms: float | None = None,
    method: str = "POST",
    url: str = "",
) -> str:
    """Why the request is refused ("" if it is accepted). ``body_timestamp_ms``: the
    message's own ``timestamp``, if it has one (its age is checked when no signed
    timestamp is); ``method`` and ``url``: as Vapi sent them (``{method}``, ``{url}``)."""
    if not auth.secret:
        return "VAPI_WEBHOOK_SECRET is not set"
    window = guard.window_s
    signed_at: float | None = None
    if auth.mode == "hmac":
        given = _ascii(headers.get(auth.signature_header))
        prefix = auth.signature_prefix.encode()
        if not given or not given.startswith(prefix):
            return f"missing or malformed {auth.signature_header}"
        stamp = b""
        if auth.include_timestamp:
            stamp = _ascii(headers.get(auth.timestamp_header)) or b""
            signed_at = _seconds(stamp) if stamp else None
            if signed_at is None:
                return f"missing or malformed {auth.timestamp_header}"
        message_id = b""
        if auth.message_id_header:
            message_id = _ascii(headers.get(auth.message_id_header)) or b""
            if "{svix-id}" in auth.payload and not message_id:
                return f"missing or malformed {auth.message_id_header}"
        expected = auth.sign(body, stamp.decode(), method, url, message_id.decode()).encode()
        if auth.encoding == "hex":
            given = prefix + given[len(prefix) :].lower()
        if not hmac.compare_digest(expected, given):
            return "bad signature"
        key = stamp + b"." + message_id + b"." + body
    else:
        name = auth.bearer_header if auth.mode == "bearer" else SECRET_HEADER
        expected = auth.secret.encode()
        if auth.mode == "bearer" and auth.bearer_prefix:
            expected = b"Bearer " + expected
        given = _ascii(headers.get(name))
        if not given or not hmac.compare_digest(expected, given):
            return f"bad or missing {name}"
        key = body
    if signed_at is not None:
        if abs(now - signed_at) > window:
            return "stale timestamp"
    elif body_timestamp_ms is not None and abs(now - body_timestamp_ms / 1000.0) > window:
        return "stale message timestamp"
    if not guard.first_time(hashlib.sha256(key).digest(), now):
        return "replayed"
    return ""
