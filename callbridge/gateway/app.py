"""The aiohttp application: ``create_app(settings) -> web.Application``.

Routes: ``POST /voice/inbound`` (webhook), ``GET /media`` (Media Streams),
``POST /webhook/vapi`` (Vapi's server-URL messages),
``GET /healthz``, ``GET /calls`` (live calls, and summaries of the ended ones kept),
``GET /calls/{callSid}``, ``GET /calls/{callSid}/recording`` and Twilio's
``POST /twilio/recording-status`` (``gateway/recording_routes.py``), ``POST
/calls/{callSid}/transfer``, ``/dtmf`` and ``/hangup`` (telephony actions on a live call,
``gateway/telephony_routes.py``), ``POST /voice/transfer`` (Twilio's requests about a transfer),
``POST /calls`` (an outbound call) with Twilio's callbacks about it, ``POST /voice/amd`` and
``POST /voice/status`` (``gateway/dial.py``), and, only with ``FAULT_INJECTION``,
``POST /calls/{callSid}/fault?child=ROLE`` (``ROLE`` a child actor, or ``socket`` to drop
the stream without a close frame); the console and ``/metrics``
(``gateway/console.py``). ``/calls``, the console and ``/metrics`` are operator endpoints:
``CONSOLE_TOKEN`` (``gateway/access.py``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import WSCloseCode, web

from ..actors.supervisor import CHILDREN
from ..config import Settings
from ..upstreams import BACKENDS
from . import reaper
from .console import add_console_routes, operator_only
from .context import GATEWAY, Gateway
from .dial import add_dial_routes
from .media import media_socket
from .recording_routes import add_recording_routes
from .store import CallStore
from .telephony_routes import add_telephony_routes
from .twilio_rest import TwilioError
from .vapi_webhook import vapi_webhook
from .webhook import MAX_WEBHOOK_BYTES, voice_inbound

log = logging.getLogger("callbridge.gateway")


async def healthz(request: web.Request) -> web.Response:
    """This process's health (live calls, open media sockets, asyncio tasks: what the soak
    watches return to baseline); in production mode also its shard and the pool's view of
    every shard (the answering shard is whichever the kernel picked)."""
    gw = request.app[GATEWAY]
    body: dict[str, Any] = {
        "status": "ok" if gw.accepting else "draining",
        "calls": len(gw.registry.live),
        "sockets": len(gw.sockets),
        "tasks": len(asyncio.all_tasks()),
        "pid": os.getpid(),
    }
    if gw.shard is not None:
        body["shard"] = {k: v for k, v in gw.shard.items() if k != "store"}
        status = await gw.shard["store"].health()
        body["pool"] = (
            None
            if status is None
            else {
                "shards": status.shards,
                "shard_restarts": status.shard_restarts,
                "calls_live": status.calls_live,
                "calls_orphaned": status.calls_orphaned,
            }
        )
        if status is None:
            body["status"] = "degraded: control plane not answering"
    return web.json_response(body, status=200 if gw.accepting else 503)


@operator_only
async def list_calls(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    registry = gw.registry
    everywhere = await gw.store.listing()  # production mode: every shard's calls
    if everywhere is not None:
        return web.json_response({**everywhere, "total": len(everywhere["calls"]) + len(everywhere["ended"])})
    return web.json_response(
        {"calls": registry.listing(), "ended": registry.ended_listing(), "total": registry.total}
    )


@operator_only
async def get_call(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    call_sid = request.match_info["call_sid"]
    record = gw.registry.get(call_sid)
    if record is None:  # carried (or last carried) by another process
        record = await gw.store.record(call_sid)
    if record is None:
        raise web.HTTPNotFound(text="no such call\n")
    return web.json_response(record)


@operator_only
async def inject_fault(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    call = gw.registry.live.get(request.match_info["call_sid"])
    if call is None:
        raise web.HTTPNotFound(text="no such live call\n")
    role = request.query.get("child", "")
    roles = [c.role for c in CHILDREN]
    if role == "socket":  # the stream drops as if this process died (no close frame)
        call.abort()
        log.warning("call %s: fault injected: stream dropped", call.call_sid)
        return web.json_response({"injected": role})
    if role not in roles:
        raise web.HTTPBadRequest(text=f"child must be one of {', '.join(roles)}, or socket\n")
    call.inject_fault(role)
    log.warning("call %s: fault injected into %s", call.call_sid, role)
    return web.json_response({"injected": role})


async def _events_poster(app: web.Application) -> AsyncIterator[None]:
    events = app[GATEWAY].events
    if events is not None:
        events.start()
    yield
    if events is not None:
        await events.stop()


async def _reaper(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.get_running_loop().create_task(reaper.run(app[GATEWAY]), name="reaper")
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def _recordings(app: web.Application) -> AsyncIterator[None]:
    """``RECORDING=local``: the writer thread runs while the app does; at cleanup (the
    calls have stopped) it completes the files in progress."""
    recordings = app[GATEWAY].recordings
    if recordings is not None:
        await asyncio.to_thread(recordings.dir.mkdir, parents=True, exist_ok=True)
        recordings.start()
        log.info("recording calls into %s", recordings.dir)
    yield
    if recordings is not None:
        await recordings.stop()


async def _prewarm(app: web.Application) -> None:
    """Load, before calls arrive, what a back end's first call would load on the event
    loop: ``UPSTREAM``'s, and that of each other remote back end a call may ask for (its
    settings are complete; what they load is small: a TTS voice, the VAD model, the user's
    tools)."""
    settings = app[GATEWAY].settings
    default = BACKENDS[settings.backends.upstream]
    specs = [default] + [
        s for s in BACKENDS.values() if s is not default and s.remote and not s.problem(settings)
    ]
    for spec in specs:
        if spec.prewarm is None:
            continue
        started = time.monotonic()
        await spec.prewarm(settings)
        log.info("%s back end ready in %.0f ms", spec.name, (time.monotonic() - started) * 1000)


async def _close_sockets(app: web.Application) -> None:
    gw = app[GATEWAY]
    gw.hub.close()
    for ws in list(gw.sockets):
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")
    if gw.background:  # REST calls in flight: each is bounded by its own timeout
        await asyncio.gather(*gw.background, return_exceptions=True)


async def _close_twilio(app: web.Application) -> None:
    gw = app[GATEWAY]
    await gw.telephony.close()
    if gw.background:  # a call that ended during shutdown may still be completing
        await asyncio.gather(*gw.background, return_exceptions=True)
    if gw.twilio is not None:
        await gw.twilio.close()


async def _point_number(app: web.Application) -> None:
    """``TWILIO_NUMBER``: set its Voice URL to this gateway's webhook (failures are logged,
    the gateway still starts)."""
    gw = app[GATEWAY]
    s = gw.settings
    if not (s.twilio.number and gw.twilio is not None):
        return
    voice_url = s.server.public_url + "/voice/inbound"
    try:
        sid = await gw.twilio.point_number(s.twilio.number, voice_url)
    except TwilioError as exc:
        log.warning("could not point %s at %s: %s", s.twilio.number, voice_url, exc)
    else:
        log.info("%s (%s) now calls %s", s.twilio.number, sid, voice_url)


def create_app(settings: Settings | None = None, store: CallStore | None = None) -> web.Application:
    settings = settings or Settings.from_env()
    app = web.Application(client_max_size=MAX_WEBHOOK_BYTES)
    gw = Gateway.from_settings(settings, store)
    app[GATEWAY] = gw
    app.add_routes(
        [
            web.post("/voice/inbound", voice_inbound),
            web.get("/media", media_socket),
            web.post("/webhook/vapi", vapi_webhook),
            web.get("/healthz", healthz),
            web.get("/calls", list_calls),
            web.get("/calls/{call_sid}", get_call),
        ]
    )
    add_console_routes(app)
    add_telephony_routes(app)
    add_recording_routes(app)
    add_dial_routes(app)
    if settings.server.fault_injection:
        app.add_routes([web.post("/calls/{call_sid}/fault", inject_fault)])
        log.warning("FAULT_INJECTION is on: POST /calls/{callSid}/fault can crash call actors")
    if not gw.signatures.enabled:
        log.warning(
            "TWILIO_AUTH_TOKEN is not set: X-Twilio-Signature is NOT checked (dev mode only; "
            "anyone who can reach this port can place calls)"
        )
    if settings.server.mode == "prod" and not settings.server.console_token:
        log.warning("CONSOLE_TOKEN is not set: the console, /calls and /metrics answer 403")
    elif not settings.server.console_token:
        log.info("console at /console (open to loopback peers: CONSOLE_TOKEN is not set)")
    app.on_startup.append(_prewarm)
    app.on_startup.append(_point_number)
    app.on_shutdown.append(_close_sockets)
    app.cleanup_ctx.append(_events_poster)
    app.cleanup_ctx.append(_reaper)
    app.cleanup_ctx.append(_recordings)
    app.on_cleanup.append(_close_twilio)
    return app
