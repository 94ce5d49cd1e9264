"""The aiohttp application: ``create_app(settings) -> web.Application``.

Routes: ``POST /voice/inbound`` (webhook), ``GET /media`` (Media Streams),
``POST /webhook/vapi`` (Vapi's server-URL messages),
``GET /healthz``, ``GET /calls``, ``GET /calls/{callSid}``, and, only with
``FAULT_INJECTION``, ``POST /calls/{callSid}/fault?child=ROLE``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from aiohttp import WSCloseCode, web

from ..actors.supervisor import CHILDREN
from ..config import Settings
from ..upstreams.embedded import prewarm
from .context import GATEWAY, Gateway
from .media import media_socket
from .twilio_rest import TwilioError
from .vapi_webhook import vapi_webhook
from .webhook import MAX_WEBHOOK_BYTES, voice_inbound

log = logging.getLogger("callbridge.gateway")


async def healthz(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    return web.json_response({"status": "ok", "calls": len(gw.registry.live)})


async def list_calls(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    return web.json_response({"calls": gw.registry.listing(), "total": gw.registry.total})


async def get_call(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    record = gw.registry.get(request.match_info["call_sid"])
    if record is None:
        raise web.HTTPNotFound(text="no such call\n")
    return web.json_response(record)


async def inject_fault(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    call = gw.registry.live.get(request.match_info["call_sid"])
    if call is None:
        raise web.HTTPNotFound(text="no such live call\n")
    role = request.query.get("child", "")
    roles = [c.role for c in CHILDREN]
    if role not in roles:
        raise web.HTTPBadRequest(text=f"child must be one of {', '.join(roles)}\n")
    call.inject_fault(role)
    log.warning("call %s: fault injected into %s", call.call_sid, role)
    return web.json_response({"injected": role})


async def _events_poster(app: web.Application):  # type: ignore[no-untyped-def]
    events = app[GATEWAY].events
    if events is not None:
        events.start()
    yield
    if events is not None:
        await events.stop()


async def _prewarm(app: web.Application) -> None:
    started = time.monotonic()
    await prewarm(app[GATEWAY].settings)
    log.info("embedded agent ready in %.0f ms", (time.monotonic() - started) * 1000)


async def _close_sockets(app: web.Application) -> None:
    gw = app[GATEWAY]
    for ws in list(gw.sockets):
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")
    if gw.background:  # REST calls in flight: each is bounded by its own timeout
        await asyncio.gather(*gw.background, return_exceptions=True)


async def _point_number(app: web.Application) -> None:
    """``TWILIO_NUMBER``: set its Voice URL to this gateway's webhook (failures are logged,
    the gateway still starts)."""
    gw = app[GATEWAY]
    s = gw.settings
    if not (s.twilio_number and gw.twilio is not None):
        return
    voice_url = s.public_url.rstrip("/") + "/voice/inbound"
    try:
        sid = await gw.twilio.point_number(s.twilio_number, voice_url)
    except TwilioError as exc:
        log.warning("could not point %s at %s: %s", s.twilio_number, voice_url, exc)
    else:
        log.info("%s (%s) now calls %s", s.twilio_number, sid, voice_url)


def create_app(settings: Settings | None = None) -> web.Application:
    settings = settings or Settings.from_env()
    app = web.Application(client_max_size=MAX_WEBHOOK_BYTES)
    gw = Gateway.from_settings(settings)
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
    if settings.fault_injection:
        app.add_routes([web.post("/calls/{call_sid}/fault", inject_fault)])
        log.warning("FAULT_INJECTION is on: POST /calls/{callSid}/fault can crash call actors")
    if not gw.signatures.enabled:
        log.warning(
            "TWILIO_AUTH_TOKEN is not set: X-Twilio-Signature is NOT checked (dev mode only; "
            "anyone who can reach this port can place calls)"
        )
    app.on_startup.append(_prewarm)
    app.on_startup.append(_point_number)
    app.on_shutdown.append(_close_sockets)
    app.cleanup_ctx.append(_events_poster)
    return app
