"""Small HTTP helpers shared by the network agents (aiohttp)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import aiohttp

USER_AGENT = "callbridge-agent/0.1"
EXCERPT_CHARS = 300


def redact(url: str) -> str:
    """``scheme://host[:port]/path``: no credentials, no query (it may hold a key)."""
    try:
        u = urlsplit(url)
        host = u.hostname or ""
        if u.port:
            host = f"{host}:{u.port}"
        return f"{u.scheme}://{host}{u.path}"
    except ValueError:
        return "<invalid url>"


def check_url(url: str, what: str) -> str:
    u = urlsplit(str(url))
    if u.scheme not in ("http", "https") or not u.hostname:
        raise ValueError(f"{what} must be an http:// or https:// URL, not {redact(str(url))!r}")
    return str(url)


async def excerpt(resp: aiohttp.ClientResponse, limit: int = EXCERPT_CHARS) -> str:
    """The start of an error response's body, one line, for an error message."""
    try:
        raw = await resp.content.read(limit * 4)
    except (aiohttp.ClientError, OSError):
        return ""
    text = " ".join(raw.decode("utf-8", "replace").split())
    return text[:limit] + ("..." if len(text) > limit else "")


@contextlib.asynccontextmanager
async def session_scope(session: aiohttp.ClientSession | None) -> AsyncIterator[aiohttp.ClientSession]:
    """The shared ``session`` if given (left open), else a short-lived one (closed after)."""
    if session is not None:
        yield session
        return
    own = aiohttp.ClientSession(headers={"User-Agent": USER_AGENT})
    try:
        yield own
    finally:
        await own.close()
