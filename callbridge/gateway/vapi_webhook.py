"""``POST /webhook/vapi``: Vapi's server-URL messages, into the matching call's timeline.

Each message (``vapi_messages.SERVER_MESSAGE_TYPES``) that names its Vapi call
(``message.call.id``) lands in that call's timeline as ``vapi.<type>`` with its main fields
(the Vapi back end bound that id to our CallSid when it created the call), also after the
call has ended (end-of-call reports come late) while the call is kept in ``CALL_HISTORY``.
Messages about no call (``chat.*``, ``session.*``, ...) and types Vapi may add later are
acknowledged (200) and counted; the answer to each type is ``vapi_messages.reply``, except
the telephony requests (``transfer-destination-request``, ``phone-call-control``, the
bridge's own tools in ``tool-calls``), which ``vapi_actions`` carries out on the call.

Limits: body at most ``MAX_BODY_BYTES`` (413); authentication per ``vapi_auth`` (401,
also when no secret is configured); not a JSON object with a well-formed ``message.type``
(400); a call id we do not know (404). Log lines are bounded (``LogTally``): a refusal,
an unknown type or an unknown call is logged the 1st, 2nd, 4th, 8th ... time of its kind.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
from aiohttp import web

from .context import GATEWAY
from .vapi_actions import answer
from .vapi_auth import check
from .vapi_messages import TYPE, known, reply, summarise, timeline_name

log = logging.getLogger("callbridge.gateway")

MAX_BODY_BYTES = 1 << 20


async def _read_body(request: web.Request) -> bytes:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise web.HTTPRequestEntityTooLarge(MAX_BODY_BYTES, request.content_length)
    body = bytearray()
    while chunk := await request.content.read(65536):
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise web.HTTPRequestEntityTooLarge(MAX_BODY_BYTES, len(body))
    return bytes(body)


def _timestamp_ms(message: Any) -> float | None:
    stamp = message.get("timestamp") if isinstance(message, dict) else None
    return stamp if isinstance(stamp, (int, float)) and not isinstance(stamp, bool) else None


async def vapi_webhook(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    tally = gw.vapi_log
    body = await _read_body(request)
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        payload = None
    message = payload.get("message") if isinstance(payload, dict) else None
    url = gw.public_base(request) + request.rel_url.path_qs
    refused = check(
        gw.vapi_auth,
        request.headers,
        body,
        time.time(),
        gw.vapi_replays,
        _timestamp_ms(message),
        request.method,
        url,
    )
    if refused:
        if n := tally.count(f"refused: {refused}"):
            log.warning("vapi webhook from %s refused: %s (%d so far)", request.remote, refused, n)
        raise web.HTTPUnauthorized(text=f"{refused}\n")
    kind = message.get("type") if isinstance(message, dict) else None
    if not isinstance(kind, str) or not TYPE.fullmatch(kind):
        raise web.HTTPBadRequest(text="expected a JSON object with message.type\n")
    assert isinstance(message, dict)
    if not known(kind):
        if n := tally.count(f"type {kind}"):
            log.info("vapi webhook: undocumented message type %r acknowledged (%d so far)", kind, n)
        return web.json_response({})
    call = message.get("call")
    vapi_id = call.get("id") if isinstance(call, dict) else None
    if not isinstance(vapi_id, str):
        return web.json_response(reply(message))  # about no call of ours (chat.*, session.*, ...)
    call_sid = gw.registry.by_alias("vapi", vapi_id)
    if call_sid is None or not gw.registry.note(call_sid, timeline_name(kind), **summarise(message)):
        if n := tally.count("unknown call"):
            log.info("vapi webhook %s for unknown call %r (%d so far)", kind, vapi_id[:80], n)
        raise web.HTTPNotFound(text="unknown call\n")
    answered = await answer(gw, call_sid, message)
    return web.json_response(answered if answered is not None else reply(message))
