"""Operator authentication at the HTTP edge, over real sockets: credentials of any bytes
get 401 (never 500), failed authentication is rate-limited per source, and the console's
static files are behind the token except what the sign-in page needs."""

from __future__ import annotations

import asyncio
import logging
import time

import aiohttp
import pytest

from callbridge.gateway.access import FAILED_AUTH_BURST, FAILED_AUTH_RATE, ConsoleAccess, same_secret
from callbridge.gateway.console import PUBLIC_STATIC, STATIC_FILES
from callbridge.gateway.limits import SourceRates

TOKEN = "console-token-0123456789"


async def _raw(port: int, request: bytes, source: str = "127.0.0.1") -> tuple[int, bytes]:
    """Send one raw HTTP/1.1 request (any bytes) and return (status, whole response)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    writer.write(request)
    await writer.drain()
    response = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return int(response.split(b" ", 2)[1]), response


def _get(path: str, *headers: bytes) -> bytes:
    lines = [b"GET " + path.encode() + b" HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close", *headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def _login(body: bytes) -> bytes:
    return (
        b"POST /console/login HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n" % len(body)
    ) + body


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def _server_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """What the server logged at WARNING or above (tracebacks included)."""
    return [
        r
        for r in caplog.records
        if r.levelno >= logging.WARNING and r.name.startswith(("callbridge", "aiohttp"))
    ]


# --- pure -----------------------------------------------------------------------------------


def test_credentials_of_any_text_compare_without_raising():
    access = ConsoleAccess(TOKEN, "dev")
    for odd in ("é", "\udcff\udcfe", "token\u2028", "\x00", "€" * 50):
        assert not same_secret(odd, TOKEN)
        assert access.refusal("10.0.0.5", {"Authorization": f"Bearer {odd}"}, odd) == "console token required"
        assert not access.sign_in(odd)
    assert same_secret("é", "é") and ConsoleAccess("tökén-0123456789abc", "dev").sign_in(
        "tökén-0123456789abc"
    )


def test_failed_auth_budget_is_charged_only_on_failure():
    rates = SourceRates(1.0, 3)
    assert not rates.exhausted("a", 0.0) and not rates.buckets  # never charged: nothing kept
    for _ in range(3):
        assert rates.allow("a", 0.0)
    assert rates.exhausted("a", 0.0) and rates.exhausted("a", 0.5)
    assert not rates.exhausted("a", 1.0)  # refilled
    assert not rates.exhausted("b", 0.0)
    assert rates.refused == 2


# --- over real sockets ----------------------------------------------------------------------


async def test_non_ascii_credentials_get_401_not_500(start_server, caplog):
    url = await start_server(console_token=TOKEN)
    port = _port(url)
    caplog.set_level(logging.WARNING)
    odd = ["é".encode(), b"\xff\xfe\x80", "токен-0123456789".encode()]
    for value in odd:
        assert (await _raw(port, _get("/metrics", b"Authorization: Bearer " + value)))[0] == 401
        assert (await _raw(port, _get("/calls", b"Cookie: callbridge_console=" + value), "127.0.0.2"))[
            0
        ] == 401
    status, body = await _raw(port, _login(b"token=%C3%A9%E2%82%AC"), "127.0.0.3")
    assert status == 401 and b'name="token"' in body  # the sign-in form again
    status, _ = await _raw(port, _login(b"token=%FF%FE"), "127.0.0.3")  # not UTF-8 at all
    assert status in (400, 401)
    lines = _server_lines(caplog)
    assert not [r for r in lines if r.exc_info or "Error handling request" in r.getMessage()]
    assert len(lines) <= 3  # one "failed" line per source at most (one per 100 failures)
    assert (await _raw(port, _get("/metrics", b"Authorization: Bearer " + TOKEN.encode()), "127.0.0.4"))[
        0
    ] == 200


@pytest.mark.slow
async def test_failed_authentication_is_rate_limited_per_source(start_server, caplog):
    url = await start_server(console_token=TOKEN)
    port = _port(url)
    caplog.set_level(logging.WARNING)
    wrong = b"Authorization: Bearer wrong-token-0123456789"
    started = time.monotonic()
    statuses = [(await _raw(port, _get("/metrics", wrong)))[0] for _ in range(FAILED_AUTH_BURST + 190)]
    refilled = int((time.monotonic() - started) * FAILED_AUTH_RATE) + 1  # tries earned meanwhile
    assert statuses[:FAILED_AUTH_BURST] == [401] * FAILED_AUTH_BURST
    assert statuses.count(429) >= 190 - refilled
    assert statuses.count(401) <= FAILED_AUTH_BURST + refilled
    status, response = await _raw(port, _get("/calls", wrong))
    assert status == 429 and b"Retry-After: 1" in response
    # The right token from the attacking source waits its turn too (nothing is checked
    # while its budget is spent); from another source it works at once.
    good = b"Authorization: Bearer " + TOKEN.encode()
    assert (await _raw(port, _get("/metrics", good)))[0] == 429
    assert (await _raw(port, _get("/metrics", good), "127.0.0.2"))[0] == 200
    # The login form draws on the same budget.
    assert (await _raw(port, _login(b"token=" + TOKEN.encode())))[0] == 429
    assert len(_server_lines(caplog)) <= 5  # ~200 refusals: once per 100 of each kind
    # Successful authentication costs nothing: many good requests, then a bad one is 401.
    for _ in range(3 * FAILED_AUTH_BURST):
        assert (await _raw(port, _get("/calls", good), "127.0.0.3"))[0] == 200
    assert (await _raw(port, _get("/calls", wrong), "127.0.0.3"))[0] == 401
    # The budget refills: a second later the attacking source may try again.
    await asyncio.sleep(1.1)
    assert (await _raw(port, _get("/metrics", good)))[0] == 200


async def test_console_static_files_need_the_token_except_the_sign_in_stylesheet(start_server):
    url = await start_server(console_token=TOKEN)
    assert PUBLIC_STATIC <= STATIC_FILES and "console.js" in STATIC_FILES
    async with aiohttp.ClientSession() as http:
        async with http.get(url + "/console") as resp:  # the sign-in page ...
            assert resp.status == 401 and 'href="console/static/console.css"' in await resp.text()
        async with http.get(url + "/console/static/console.css") as resp:  # ... and its style
            assert resp.status == 200 and resp.content_type == "text/css"
        for name in sorted(STATIC_FILES - PUBLIC_STATIC):
            async with http.get(f"{url}/console/static/{name}") as resp:
                assert resp.status == 401, name
            async with http.get(
                f"{url}/console/static/{name}", headers={"Authorization": f"Bearer {TOKEN}"}
            ) as resp:
                assert resp.status == 200, name
        for path in (
            "/console/static/index.html",
            "/console/static/../../config.py",
            "/console/static/nope.js",
        ):
            async with http.get(url + path, headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
                assert resp.status == 404, path
