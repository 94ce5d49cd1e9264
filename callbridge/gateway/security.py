"""Webhook signatures, the public URL, and stream tokens. No I/O.

Twilio signs each request with HMAC-SHA1 over the URL it requested plus the sorted POST
parameters (``X-Twilio-Signature``), and the Media Streams handshake over the exact
``wss://`` Stream URL with no parameters. With a SharedKey (Twilio's Webhook Settings,
public beta) the request also carries ``X-Twilio-Webhooks-Signature-Settings:
key=<id>,algorithm=HMAC_SHA256``: the same string, signed with that key's secret
(``TWILIO_SHARED_KEY``) and the named algorithm.

Behind a proxy the URL Twilio used is not the one this process sees: ``PUBLIC_URL``
names it (scheme, host and an optional path prefix, which the proxy strips: this
process serves at ``/``), and with ``TRUST_PROXY`` the ``X-Forwarded-Proto``
(``https``/``wss`` or ``http``/``ws``) and ``X-Forwarded-Host`` headers are honoured.

Stream tokens: Twilio forbids query strings in Stream URLs, so the webhook passes a
``<Parameter name="token">`` that binds the CallSid with an expiry and a random nonce:
``v1.<callSid>.<expiry unix s>.<nonce>.<base64url HMAC-SHA256>``; at most
``MAX_TOKEN_CHARS``. ``verify`` returns the token's MAC, the key under which the call
store remembers it as used (``CallStore.claim_token``): a token starts one stream only.
The nonce makes two tokens for one call (a resume after a drop) always differ.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

from twilio.request_validator import (
    HMAC_SHA1,
    HMAC_SHA256,
    SIGNATURE_SETTINGS_HEADER,
    RequestValidator,
    get_signature_algorithm,
)

SIGNATURE_SETTINGS = SIGNATURE_SETTINGS_HEADER
"""The header that names the SharedKey a request was signed with."""

MAX_TOKEN_CHARS = 256
ALGORITHMS = (HMAC_SHA1, HMAC_SHA256)
"""What Twilio signs with; anything else is refused before the library (which would log
a warning for each such request) sees it."""
MAX_SETTINGS_CHARS = 200
BAD_SIGNATURE = "bad or missing X-Twilio-Signature"


WEB_SCHEMES = {"https": "https", "wss": "https", "http": "http", "ws": "http"}
"""A forwarded scheme as the web scheme of the base: proxies such as Traefik send
``X-Forwarded-Proto: wss`` on WebSocket upgrades."""


def public_base(
    headers: Mapping[str, str], scheme: str, host: str, public_url: str, trust_proxy: bool
) -> str:
    """``http(s)://host[:port][/prefix]`` (no trailing slash) under which Twilio reaches
    this process's routes: every URL we advertise or check a signature over is this
    followed by the route's path."""
    if public_url:
        parts = urlsplit(public_url)
        return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
    if trust_proxy:
        forwarded = headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
        scheme = WEB_SCHEMES.get(forwarded, scheme)
        host = headers.get("X-Forwarded-Host", host).split(",")[0].strip() or host
    return f"{scheme}://{host}"


def split_base(base: str) -> tuple[str, str]:
    """``(host[:port], path prefix)`` of a ``public_base`` ("" when it has no prefix)."""
    host, slash, path = base.partition("://")[2].partition("/")
    return host, slash + path


def stream_url(base: str, path: str = "/media") -> str:
    """The Stream URL to advertise: ``wss://`` for an https base (Twilio requires it),
    ``ws://`` for a plain-http dev base (the simulator only)."""
    scheme, _, rest = base.partition("://")
    return f"{'wss' if scheme == 'https' else 'ws'}://{rest}{path}"


class SignatureChecker:
    """Validates ``X-Twilio-Signature``: with the auth token (HMAC-SHA1) or, when the
    request names a SharedKey (``SIGNATURE_SETTINGS``), with each of ``shared_keys`` and
    the algorithm it names. With neither secret every request passes."""

    def __init__(self, auth_token: str, shared_keys: Sequence[str] = ()) -> None:
        self.enabled = bool(auth_token or shared_keys)
        self._validator = RequestValidator(auth_token) if auth_token else None
        self._shared = [RequestValidator(key) for key in shared_keys]

    def refusal(
        self, url: str, params: Mapping[str, str], signature: str | None, settings: str | None = None
    ) -> str | None:
        """None when the request is signed as Twilio signs it, else why not (to log)."""
        if not self.enabled:
            return None
        if not signature:
            return BAD_SIGNATURE
        if not settings:  # absent: signed with the auth token (Twilio's default)
            if self._validator is None:
                return "signed with the auth token, and TWILIO_AUTH_TOKEN is not set"
            validators, algorithm = [self._validator], HMAC_SHA1
        else:
            algorithm = get_signature_algorithm(settings[:MAX_SETTINGS_CHARS]).upper()
            if algorithm not in ALGORITHMS:
                return f"unsupported signature algorithm {algorithm[:40]!r}"
            if not self._shared:
                return "signed with a SharedKey, and TWILIO_SHARED_KEY is not set"
            validators = self._shared
        try:
            if any(v.validate(url, dict(params), signature, algorithm) for v in validators):
                return None
        except ValueError:  # a URL no one signed: undecodable bytes, a port out of range
            pass
        return BAD_SIGNATURE

    def valid(
        self, url: str, params: Mapping[str, str], signature: str | None, settings: str | None = None
    ) -> bool:
        return self.refusal(url, params, signature, settings) is None

    @staticmethod
    def sign(secret: str, url: str, params: Mapping[str, str], algorithm: str = HMAC_SHA1) -> str:
        """Twilio's side: the signature Twilio would send (simulator, tests)."""
        return RequestValidator(secret).compute_signature(url, dict(params), algorithm)


class TokenError(ValueError):
    """A stream token that is malformed, forged, expired or for another call."""


class StreamTokens:
    def __init__(self, secret: bytes, ttl_s: float) -> None:
        self._secret = secret
        self.ttl_s = ttl_s

    def _mac(self, call_sid: str, expiry: int, nonce: str) -> str:
        digest = hmac.new(self._secret, f"v1.{call_sid}.{expiry}.{nonce}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def issue(self, call_sid: str, now: float) -> str:
        expiry = int(now + self.ttl_s)
        nonce = secrets.token_urlsafe(9)
        return f"v1.{call_sid}.{expiry}.{nonce}.{self._mac(call_sid, expiry, nonce)}"

    def verify(self, token: str | None, call_sid: str, now: float) -> tuple[str, float]:
        """Raise ``TokenError`` unless ``token`` was issued for ``call_sid`` and is live.
        Returns ``(key, seconds left)``: what ``CallStore.claim_token`` remembers."""
        if not token:
            raise TokenError("missing stream token")
        if not isinstance(token, str) or not token.isascii():
            raise TokenError("malformed stream token")
        if len(token) > MAX_TOKEN_CHARS:
            raise TokenError("stream token too long")
        parts = token.split(".")
        if len(parts) != 5 or parts[0] != "v1" or not parts[2].isdigit():
            raise TokenError("malformed stream token")
        _, sid, expiry_text, nonce, mac = parts
        expiry = int(expiry_text)
        if not hmac.compare_digest(mac, self._mac(sid, expiry, nonce)):
            raise TokenError("stream token signature mismatch")
        if not hmac.compare_digest(sid.encode(), call_sid.encode("utf-8", "surrogatepass")):
            raise TokenError("stream token is for another call")
        if now > expiry:
            raise TokenError("stream token expired")
        return mac, expiry - now
