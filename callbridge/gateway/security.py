"""Webhook signatures, the public URL, and stream tokens. No I/O.

Twilio signs each request with HMAC-SHA1 over the URL it requested plus the sorted POST
parameters (``X-Twilio-Signature``), and the Media Streams handshake over the exact
``wss://`` Stream URL with no parameters. 
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
from typing import Mapping
from urllib.parse import urlsplit

from twilio.request_validator import RequestValidator

MAX_TOKEN_CHARS = 256


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


def stream_url(base: str, path: str = "/media") -> str:
    """The Stream URL to advertise: ``wss://`` for an https base (Twilio requires it),
    ``ws://`` for a plain-http dev base (the simulator only)."""
    scheme, _, rest = base.partition("://")
    return f"{'wss' if scheme == 'https' else 'ws'}://{rest}{path}"


class SignatureChecker:
    """Validates ``X-Twilio-Signature``; with no auth token every request passes."""

    def __init__(self, auth_token: str) -> None:
        self.enabled = bool(auth_token)
        self._validator = RequestValidator(auth_token) if auth_token else None

    def valid(self, url: str, params: Mapping[str, str], signature: str | None) -> bool:
        if self._validator is None:
            return True
        if not signature:
            return False
        return self._validator.validate(url, dict(params), signature)

    @staticmethod
    def sign(auth_token: str, url: str, params: Mapping[str, str]) -> str:
        """Twilio's side: the signature Twilio would send (simulator, tests)."""
        return RequestValidator(auth_token).compute_signature(url, dict(params))


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
