"""The telephony actions' routes (``gateway/telephony.py`` carries them out):

- ``POST /calls/{callSid}/transfer``, ``/dtmf``, ``/hangup``: an operator's action on a
  live call (operator access, same origin, JSON at most ``MAX_ACTION_BYTES``);
- ``POST /voice/transfer``: Twilio's requests about a transfer (``webhook.voice_transfer``,
  signed like the voice webhook).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from .. import actions
from .calls import Call
from .console import check_origin, operator_only
from .context import GATEWAY
from .webhook import voice_transfer

ACTION_WAIT_S = 30.0
"""The operator routes answer within this (the handover wait and Twilio's answer)."""
MAX_ACTION_BYTES = 4096


async def _live_call(request: web.Request) -> Call:
    """The live call the route names: 404 if no call by that CallSid is known, 409 if it
    is not live on this process (ended, between streams, or carried by another shard)."""
    gw = request.app[GATEWAY]
    call_sid = request.match_info["call_sid"]
    call = gw.registry.live.get(call_sid)
    if call is not None and call.state == "live" and not call.redirected:
        return call
    if call is None and call_sid not in gw.registry.ended and await gw.store.lookup(call_sid) is None:
        raise web.HTTPNotFound(text="no such call\n")
    raise web.HTTPConflict(text="the call is not live on this bridge process\n")


async def _action(request: web.Request, kind: str) -> web.Response:
    """Run telephony action ``kind`` on the route's call with the JSON body's arguments
    (same-origin, ``Content-Type: application/json``, at most ``MAX_ACTION_BYTES``): 200
    and the outcome; 400 bad arguments or one this bridge cannot carry out; 403 another
    origin; 415 not JSON; 502 Twilio refused or failed; 504 no outcome in ``ACTION_WAIT_S``."""
    gw = request.app[GATEWAY]
    check_origin(request)  # and JSON, which a cross-site form cannot send
    if request.content_type != "application/json":
        raise web.HTTPUnsupportedMediaType(text="POST with Content-Type: application/json\n")
    if request.content_length is not None and request.content_length > MAX_ACTION_BYTES:
        raise web.HTTPRequestEntityTooLarge(MAX_ACTION_BYTES, request.content_length)
    call = await _live_call(request)
    raw = await request.content.read(MAX_ACTION_BYTES + 1)
    if len(raw) > MAX_ACTION_BYTES:
        raise web.HTTPRequestEntityTooLarge(MAX_ACTION_BYTES, len(raw))
    try:
        args = json.loads(raw or b"{}")
    except ValueError:
        raise web.HTTPBadRequest(text="malformed JSON\n") from None
    if not isinstance(args, dict):
        raise web.HTTPBadRequest(text="expected a JSON object\n")
    try:
        args = actions.check(kind, args)
    except actions.ActionError as exc:
        raise web.HTTPBadRequest(text=f"{exc}\n") from None
    why = gw.telephony.refusal(kind, args, call)
    if why is not None:
        raise web.HTTPBadRequest(text=f"{why}\n")
    outcome: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
    call.note("operator.action", kind=kind)

    def done(result: dict[str, Any]) -> None:
        if not outcome.done():
            outcome.set_result(result)

    call.act(kind, args, done)
    try:
        result = await asyncio.wait_for(outcome, ACTION_WAIT_S)
    except TimeoutError:
        raise web.HTTPGatewayTimeout(text=f"{kind}: no outcome in {ACTION_WAIT_S:g} s\n") from None
    if not result.get("ok"):
        return web.json_response(result, status=502)
    return web.json_response(result)


@operator_only
async def transfer_route(request: web.Request) -> web.Response:
    """``POST /calls/{callSid}/transfer`` with JSON ``{to?, mode?, summary?}``."""
    return await _action(request, "transfer")


@operator_only
async def dtmf_route(request: web.Request) -> web.Response:
    """``POST /calls/{callSid}/dtmf`` with JSON ``{digits}`` (an IVR, navigated by hand)."""
    return await _action(request, "send_dtmf")


@operator_only
async def hangup_route(request: web.Request) -> web.Response:
    """``POST /calls/{callSid}/hangup`` (JSON ``{reason?}`` optional)."""
    return await _action(request, "hang_up")


def add_telephony_routes(app: web.Application) -> None:
    app.add_routes(
        [
            web.post("/calls/{call_sid}/transfer", transfer_route),
            web.post("/calls/{call_sid}/hangup", hangup_route),
            web.post("/calls/{call_sid}/dtmf", dtmf_route),
            web.post("/voice/transfer", voice_transfer),
        ]
    )
