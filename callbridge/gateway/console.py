"""The operator console and the observability endpoints.

Routes (all behind ``ConsoleAccess``, see ``gateway/access.py``; a source that presented
wrong credentials ``FAILED_AUTH_BURST`` times gets 429 with ``Retry-After`` until its
budget refills):

- ``GET /console``: the console page (``callbridge/console/``; plain HTML/JS/CSS, no build
  step, nothing from a CDN); without access, a sign-in form when ``CONSOLE_TOKEN`` is set.
  ``POST /console/login`` (form field ``token``) sets the sign-in cookie.
- ``GET /console/static/{name}``: the page's scripts and styles; only ``PUBLIC_STATIC``
  (the sign-in form's stylesheet) is served without access.
- ``GET /console/events``: Server-Sent Events: ``snapshot`` (live calls and the ended ones
  kept, ``CALL_HISTORY``), then ``call`` (a call started or ended: its summary), ``note``
  (``{callSid, i, e}``: timeline event number ``i`` of a call) and, every ``TICK_S`` while
  anyone watches, ``tick`` (level meters and counts of each live call, at most
  ``MAX_TICK_CALLS``). Bounded per client (``gateway/hub.py``): a slow client is dropped
  and reconnects. A comment line every ``KEEPALIVE_S`` keeps proxies from timing out.
- ``POST /console/call``: the softphone's call: a fresh CallSid and StreamSid and a stream
  token minted by the console (JSON body not needed; the request must be same-origin and
  ``Content-Type: application/json``, which a cross-site form cannot send). At most
  ``MAX_CONSOLE_CALLS`` softphone calls at once (429 past it).
- ``GET /console/media``: the softphone's Media Streams socket (same ``StreamSession`` as
  Twilio's ``/media``; see ``gateway/media.py``), same-origin only.
- ``GET /metrics``: Prometheus text format (``callbridge/metrics.py``).

``operator_only`` also guards ``GET /calls``, ``GET /calls/{callSid}`` and the
fault-injection endpoint.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from html import escape
from pathlib import Path

from aiohttp import web

from ..metrics import CONTENT_TYPE
from .access import COOKIE, FAILED_AUTH_BURST, same_origin
from .context import GATEWAY
from .hub import sse
from .media import serve_stream
from .security import split_base

log = logging.getLogger("callbridge.console")

STATIC = Path(__file__).resolve().parent.parent / "console"
TICK_S = 0.2
KEEPALIVE_S = 15.0
MAX_TICK_CALLS = 200
MAX_CONSOLE_CALLS = 8
MAX_LOGIN_BYTES = 4096
LOG_EVERY = 100
"""Failed authentications (and 429s) are logged once per this many."""
STATIC_FILES = frozenset(p.name for p in STATIC.iterdir() if p.is_file() and p.suffix != ".html")
PUBLIC_STATIC = frozenset({"console.css"})
"""What the sign-in page loads; every other console file needs operator access."""
PAGES = {name: (STATIC / name).read_text() for name in ("index.html", "login.html")}


def new_sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def refusal(request: web.Request, sign_in: str | None = None) -> str | None:
    """None when the request may use an operator endpoint (or ``sign_in``, the login
    form's token, is right), else why not. A source past its budget of refused
    credentials gets 429 (raised) before its credentials are even looked at; while
    ``CONSOLE_TOKEN`` is set, each refusal is charged to its source."""
    gw = request.app[GATEWAY]
    source, now = gw.source(request), time.monotonic()
    failures = gw.auth_failures
    if gw.access.token and failures.exhausted(source, now):
        if failures.refused % LOG_EVERY == 1:
            log.warning(
                "operator request from %s refused: over %d failed authentications (%d refused so far)",
                source,
                FAILED_AUTH_BURST,
                failures.refused,
            )
        retry = str(max(1, math.ceil(failures.retry_after(source))))
        raise web.HTTPTooManyRequests(
            text="too many failed authentications\n", headers={"Retry-After": retry}
        )
    if sign_in is None:
        reason = gw.access.refusal(request.remote, request.headers, request.cookies.get(COOKIE))
    else:
        reason = None if gw.access.sign_in(sign_in) else "wrong console token"
    if reason is not None and gw.access.token:
        failures.allow(source, now)
        if failures.spent % LOG_EVERY == 1:
            log.warning("operator authentication from %s failed (%d failures so far)", source, failures.spent)
    return reason


def _refuse(request: web.Request, reason: str) -> web.HTTPException:
    if request.app[GATEWAY].access.token:
        return web.HTTPUnauthorized(text=reason + "\n", headers={"WWW-Authenticate": "Bearer"})
    return web.HTTPForbidden(text=reason + "\n")


def operator_only(handler: Handler) -> Handler:
    async def guarded(request: web.Request) -> web.StreamResponse:
        reason = refusal(request)
        if reason is not None:
            raise _refuse(request, reason)
        return await handler(request)

    guarded.__doc__ = handler.__doc__
    return guarded


def check_origin(request: web.Request) -> None:
    gw = request.app[GATEWAY]
    base_host = split_base(gw.public_base(request))[0]
    if not same_origin(request.headers.get("Origin"), (request.host, base_host)):
        raise web.HTTPForbidden(text="cross-origin request refused\n")


def _page(request: web.Request, name: str, status: int = 200) -> web.Response:
    """A console page, its links relative to ``<base href>``: the public path prefix
    (``PUBLIC_URL``'s path, behind a proxy that strips it), else ``/``."""
    prefix = split_base(request.app[GATEWAY].public_base(request))[1]
    html = PAGES[name].replace('<base href="/">', f'<base href="{escape(prefix)}/">', 1)
    return web.Response(
        text=html, status=status, content_type="text/html", headers={"Cache-Control": "no-store"}
    )


async def console_page(request: web.Request) -> web.StreamResponse:
    reason = refusal(request)
    if reason is None:
        return _page(request, "index.html")
    if request.app[GATEWAY].access.token:
        return _page(request, "login.html", 401)
    raise web.HTTPForbidden(text=reason + "\n")


async def console_login(request: web.Request) -> web.StreamResponse:
    gw = request.app[GATEWAY]
    if request.content_length is not None and request.content_length > MAX_LOGIN_BYTES:
        raise web.HTTPRequestEntityTooLarge(MAX_LOGIN_BYTES, request.content_length)
    check_origin(request)
    form = await request.post()
    token = form.get("token")
    offered = token if isinstance(token, str) else ""
    if refusal(request, offered) is not None:
        return _page(request, "login.html", 401)
    base = gw.public_base(request)
    response = web.HTTPSeeOther(split_base(base)[1] + "/console")
    response.set_cookie(
        COOKIE,
        gw.access.cookie_value,
        httponly=True,
        samesite="Strict",
        secure=base.startswith("https://"),
        path="/",
    )
    raise response


@operator_only
async def console_events(request: web.Request) -> web.StreamResponse:
    gw = request.app[GATEWAY]
    sub = gw.hub.subscribe()
    if sub is None:
        raise web.HTTPServiceUnavailable(text="too many console clients\n")
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    )
    try:
        await response.prepare(request)
        snapshot = {"live": gw.registry.listing(), "ended": gw.registry.ended_listing(), "now": time.time()}
        await response.write(b"retry: 1000\n" + sse("snapshot", snapshot))
        while not sub.overflowed:
            try:
                await asyncio.wait_for(sub.ready.wait(), KEEPALIVE_S)
            except TimeoutError:
                await response.write(b": keepalive\n\n")
                continue
            batch = sub.take()
            if batch:
                await response.write(b"".join(batch))
    except (ConnectionError, RuntimeError):  # the browser went away
        pass
    finally:
        gw.hub.unsubscribe(sub)
    return response


@operator_only
async def console_call(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    check_origin(request)
    if request.content_type != "application/json":
        raise web.HTTPUnsupportedMediaType(text="POST with Content-Type: application/json\n")
    live = sum(1 for c in gw.registry.live.values() if c.source == "console")
    if live >= MAX_CONSOLE_CALLS:
        raise web.HTTPTooManyRequests(text=f"at most {MAX_CONSOLE_CALLS} softphone calls at once\n")
    call_sid = new_sid("CA")
    log.info("call %s: softphone call minted for %s", call_sid, request.remote)
    return web.json_response(
        {
            "callSid": call_sid,
            "streamSid": new_sid("MZ"),
            "accountSid": "AC" + "0" * 32,
            "path": split_base(gw.public_base(request))[1] + "/console/media",
            "customParameters": {
                "token": gw.console_tokens.issue(call_sid, time.time()),
                "source": "console",
            },
        }
    )


@operator_only
async def console_media(request: web.Request) -> web.StreamResponse:
    check_origin(request)
    return await serve_stream(request, request.app[GATEWAY].console_tokens, None, "console")


async def console_static(request: web.Request) -> web.StreamResponse:
    """The console's own files: ``PUBLIC_STATIC`` to anyone (the sign-in page needs
    them), the rest to operators only."""
    name = request.match_info["name"]
    if name not in STATIC_FILES:
        raise web.HTTPNotFound()
    if name not in PUBLIC_STATIC:
        reason = refusal(request)
        if reason is not None:
            raise _refuse(request, reason)
    return web.FileResponse(STATIC / name)


@operator_only
async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=request.app[GATEWAY].metrics.render(), headers={"Content-Type": CONTENT_TYPE})


async def _ticker(app: web.Application) -> None:
    gw = app[GATEWAY]
    while True:
        await asyncio.sleep(TICK_S)
        if gw.hub.subscribers and gw.registry.live:
            calls = list(gw.registry.live.values())[:MAX_TICK_CALLS]
            gw.hub.publish("tick", {c.call_sid: c.live_figures() for c in calls if c.state == "live"})


async def console_ticker(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.get_running_loop().create_task(_ticker(app), name="console-ticker")
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def add_console_routes(app: web.Application) -> None:
    app.add_routes(
        [
            web.get("/console", console_page),
            web.post("/console/login", console_login),
            web.get("/console/events", console_events),
            web.post("/console/call", console_call),
            web.get("/console/media", console_media),
            web.get("/metrics", metrics),
            web.get("/console/static/{name}", console_static),
        ]
    )
    app.cleanup_ctx.append(console_ticker)
