"""Who may use the operator endpoints (console, ``/calls``, ``/metrics``). No I/O.

- ``CONSOLE_TOKEN`` set: every request must carry it, as ``Authorization: Bearer <token>``
  (scripts, Prometheus) or as the console's sign-in cookie (browsers: ``POST
  /console/login`` sets it; HttpOnly, SameSite=Strict). The cookie holds an HMAC of the
  token, not the token.
- unset, dev mode: open to loopback peers only, and only to requests with no forwarding
  header (``Forwarded``, ``X-Forwarded-For``, ``X-Real-IP``): a tunnel or proxy on the
  same host forwards the internet, which must not get in.
- unset, prod mode: refused (the gateway warns at start).

State-changing browser requests (minting a softphone call, its media socket) must also
come from the gateway's own origin (``same_origin``), against cross-site requests.

Credentials are compared as bytes in constant time (``same_secret``): a header, cookie or
form field may hold any text. A source whose credentials were refused
``FAILED_AUTH_BURST`` times (refilled at ``FAILED_AUTH_RATE`` a second) is refused 429
until its budget refills (``Gateway.auth_failures``); good credentials cost nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Mapping
from urllib.parse import urlsplit

COOKIE = "callbridge_console"
FORWARDING_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Real-IP")
FAILED_AUTH_RATE = 1.0
"""Refused operator credentials a source may present per second, sustained."""
FAILED_AUTH_BURST = 10


def same_secret(offered: str, secret: str) -> bool:
    """Constant-time equality of two texts of any content (``hmac.compare_digest`` on
    ``str`` raises for non-ASCII; lone surrogates from undecodable header bytes encode
    too)."""
    return hmac.compare_digest(
        offered.encode("utf-8", "surrogatepass"), secret.encode("utf-8", "surrogatepass")
    )


def is_loopback(peer: str | None) -> bool:
    try:
        return peer is not None and ipaddress.ip_address(peer.split("%")[0]).is_loopback
    except ValueError:
        return False


class ConsoleAccess:
    def __init__(self, token: str, mode: str) -> None:
        self.token = token
        self.mode = mode
        self.cookie_value = (
            hmac.new(token.encode(), b"callbridge console cookie v1", hashlib.sha256).hexdigest()
            if token
            else ""
        )

    def refusal(self, peer: str | None, headers: Mapping[str, str], cookie: str | None) -> str | None:
        """None when the request may proceed, else why not (for the 401/403 body)."""
        if self.token:
            auth = headers.get("Authorization", "")
            if auth.startswith("Bearer ") and same_secret(auth[7:].strip(), self.token):
                return None
            if cookie and same_secret(cookie, self.cookie_value):
                return None
            return "console token required"
        if self.mode != "dev":
            return "the console is off: set CONSOLE_TOKEN"
        if not is_loopback(peer) or any(h in headers for h in FORWARDING_HEADERS):
            return "without CONSOLE_TOKEN the console is open to loopback only"
        return None

    def sign_in(self, token: str) -> bool:
        return bool(self.token) and same_secret(token.strip(), self.token)


def same_origin(origin: str | None, hosts: tuple[str, ...]) -> bool:
    """True when the request has no ``Origin`` (not a cross-site browser request) or it
    names one of ``hosts`` (``host[:port]``)."""
    if not origin:
        return True
    return urlsplit(origin).netloc.lower() in {h.lower() for h in hosts if h}
