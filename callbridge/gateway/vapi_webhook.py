"""``POST /webhook/vapi``: Vapi's server-URL messages, into the matching call's timeline.

Each message (``status-update``, ``transcript``, ``end-of-call-report``, ``tool-calls``,
``speech-update``, ...) names its Vapi call (``message.call.id``); the Vapi back end bound
that id to our CallSid when it created the call, so the message lands in that call's
timeline as ``vapi.<type>`` with its main fields (``summarise``), also after the call has
ended (end-of-call reports come late) while the call is kept in ``CALL_HISTORY``.

Limits: body at most ``MAX_BODY_BYTES`` (413); authentication per ``vapi_auth`` (401,
also when no secret is configured); not a JSON object with ``message.type`` (400); a call
we do not know (404). Tool calls are answered with an error result for each (this bridge
runs no tools: give the assistant tools with their own server URL).
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

import orjson
from aiohttp import web

from .context import GATEWAY
from .vapi_auth import check

log = logging.getLogger("callbridge.gateway")

MAX_BODY_BYTES = 1 << 20
TEXT_CHARS = 1000
_TYPE = re.compile(r"[a-z][a-z0-9-]{0,39}")


def summarise(message: dict[str, Any]) -> dict[str, Any]:
    """The fields of a Vapi message worth a timeline entry (bounded in size)."""
    kind = message.get("type")
    fields: tuple[str, ...] = ()
    if kind == "status-update":
        fields = ("status", "endedReason")
    elif kind == "transcript":
        fields = ("role", "transcriptType", "transcript")
    elif kind == "speech-update":
        fields = ("role", "status")
    elif kind == "end-of-call-report":
        fields = ("endedReason", "summary", "durationSeconds", "cost")
    out: dict[str, Any] = {}
    for name in fields:
        value = message.get(name)
        if isinstance(value, str):
            out[name] = value[:TEXT_CHARS]
        elif isinstance(value, (int, float, bool)):
            out[name] = value
    if kind == "end-of-call-report":
        artifact = message.get("artifact")
        transcript = artifact.get("transcript") if isinstance(artifact, dict) else message.get("transcript")
        if isinstance(transcript, str):
            out["transcript"] = transcript[:TEXT_CHARS]
    if kind == "tool-calls":
        out["tools"] = [_tool_name(c) for c in _tool_calls(message)][:20]
    return out


def _tool_calls(message: dict[str, Any]) -> list[dict[str, Any]]:
    calls = message.get("toolCallList") or message.get("toolCalls") or []
    return [c for c in calls if isinstance(c, dict)] if isinstance(calls, list) else []


def _tool_name(call: dict[str, Any]) -> str:
    function = call.get("function")
    name = function.get("name") if isinstance(function, dict) else call.get("name")
    return str(name)[:100]


async def _read_body(request: web.Request) -> bytes:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise web.HTTPRequestEntityTooLarge(MAX_BODY_BYTES, request.content_length)
    body = bytearray()
    while chunk := await request.content.read(65536):
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise web.HTTPRequestEntityTooLarge(MAX_BODY_BYTES, len(body))
    return bytes(body)


async def vapi_webhook(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    settings = gw.settings
    body = await _read_body(request)
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        payload = None
    message = payload.get("message") if isinstance(payload, dict) else None
    stamp = message.get("timestamp") if isinstance(message, dict) else None
    refused = check(
        settings.vapi_webhook_auth, settings.vapi_webhook_secret, request.headers, body, time.time(),
        gw.vapi_replays, stamp if isinstance(stamp, (int, float)) and not isinstance(stamp, bool) else None,
    )
    if refused:
        log.warning("vapi webhook from %s refused: %s", request.remote, refused)
        raise web.HTTPUnauthorized(text=f"{refused}\n")
    kind = message.get("type") if isinstance(message, dict) else None
    if not isinstance(kind, str) or not _TYPE.fullmatch(kind):
        raise web.HTTPBadRequest(text="expected a JSON object with message.type\n")
    call = message.get("call")
    vapi_id = call.get("id") if isinstance(call, dict) else None
    call_sid = gw.registry.by_alias("vapi", vapi_id) if isinstance(vapi_id, str) else None
    if call_sid is None or not gw.registry.note(call_sid, f"vapi.{kind}", **summarise(message)):
        log.info("vapi webhook %s for unknown call %r", kind, str(vapi_id)[:80])
        raise web.HTTPNotFound(text="unknown call\n")
    if kind == "tool-calls":
        results = [
            {"toolCallId": str(c.get("id", "")), "error": "callbridge runs no tools; give this tool its own server URL"}
            for c in _tool_calls(message)
        ]
        return web.json_response({"results": results})
    return web.json_response({})
