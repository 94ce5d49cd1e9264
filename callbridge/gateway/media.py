"""``GET /media``: the bidirectional Media Streams WebSocket.

One socket is one call. The handshake's ``X-Twilio-Signature`` (over the advertised
``wss://`` Stream URL, no parameters) and the ``start`` event's stream token must check
out; then media, marks and DTMF flow into the call's actor tree and its outbound writer
sends agent audio back.

Bad input closes that socket only, with one log line and a close code:
1003 binary frame; 1007 malformed JSON, bad fields or bad base64; 1008 bad signature,
bad token, a second stream for a live call, or an event out of order (media before
start); 1009 a message over ``MAX_MESSAGE_BYTES``. Unknown events are logged once per
name and ignored (Twilio may add events). A ``stop`` ends the call and closes with 1000.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import WSCloseCode, WSMsgType, web

from ..codecs.mediastreams import (
    CLOSE_POLICY,
    CLOSE_UNSUPPORTED,
    MAX_MESSAGE_BYTES,
    Dtmf,
    Mark,
    Media,
    ProtocolError,
    Start,
    Stop,
    Unknown,
    parse_inbound,
)
from .calls import Call
from .context import GATEWAY, Gateway
from .security import TokenError, stream_url
from .streamstate import StreamState, step

log = logging.getLogger("callbridge.gateway")


class _Refused(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


async def media_socket(request: web.Request) -> web.WebSocketResponse:
    gw = request.app[GATEWAY]
    ws = web.WebSocketResponse(max_msg_size=MAX_MESSAGE_BYTES, autoping=True)
    await ws.prepare(request)
    gw.sockets.add(ws)
    call: Call | None = None
    peer = request.remote
    try:
        signed_url = stream_url(gw.public_base(request))
        if not gw.signatures.valid(signed_url, {}, request.headers.get("X-Twilio-Signature")):
            raise _Refused(CLOSE_POLICY, f"bad or missing X-Twilio-Signature for {signed_url}")
        call = await _serve(gw, ws, request)
    except _Refused as exc:
        who = call.call_sid if call is not None else f"peer {peer}"
        log.warning("media socket %s closed with %d: %s", who, exc.code, exc)
        await ws.close(code=exc.code, message=str(exc)[:120].encode())
    finally:
        gw.sockets.discard(ws)
        if call is not None:
            call.stop(call.stop_reason or "socket closed")
            gw.registry.finish(call)
            log.info("call %s: ended (%s)", call.call_sid, call.stop_reason)
    return ws


async def _serve(gw: Gateway, ws: web.WebSocketResponse, request: web.Request) -> Call | None:
    """Read the socket until it closes. Returns the call, if one started."""
    state = StreamState.AWAIT_START
    call: Call | None = None
    unknown_seen: set[str] = set()
    try:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                event = parse_inbound(msg.data)
            elif msg.type == WSMsgType.BINARY:
                raise _Refused(CLOSE_UNSUPPORTED, "binary frames are not part of Media Streams")
            else:  # ERROR: aiohttp has already closed with the matching code (e.g. 1009)
                log.warning("media socket from %s: %s", request.remote, ws.exception())
                break
            state = step(state, event)
            if isinstance(event, Media):
                call.media(event)  # type: ignore[union-attr]
            elif isinstance(event, Mark):
                call.mark_played(event.name)  # type: ignore[union-attr]
            elif isinstance(event, Dtmf):
                call.dtmf(event.digit)  # type: ignore[union-attr]
            elif isinstance(event, Start):
                call = _start_call(gw, ws, event)
            elif isinstance(event, Stop):
                call.stop_reason = "twilio stop"  # type: ignore[union-attr]
                await ws.close(code=WSCloseCode.OK)
                break
            elif isinstance(event, Unknown) and event.event not in unknown_seen:
                unknown_seen.add(event.event)
                log.info("media socket from %s: ignoring unknown event %r", request.remote, event.event)
    except ProtocolError as exc:
        if call is not None:
            call.stop_reason = f"protocol error: {exc}"
        raise _Refused(exc.close_code, str(exc)) from None
    except _Refused as exc:
        if call is not None:
            call.stop_reason = str(exc)
        raise
    return call


def _start_call(gw: Gateway, ws: web.WebSocketResponse, start: Start) -> Call:
    try:
        gw.tokens.verify(start.custom_parameters.get("token"), start.call_sid, time.time())
    except TokenError as exc:
        raise _Refused(CLOSE_POLICY, f"call {start.call_sid}: {exc}") from None
    if start.call_sid in gw.registry.live:
        raise _Refused(CLOSE_POLICY, f"call {start.call_sid} already has a live stream")

    def hang_up(reason: str) -> None:
        call.stop_reason = reason
        call.closing = asyncio.get_running_loop().create_task(
            ws.close(code=WSCloseCode.OK, message=b"call ended")
        )

    call = Call(gw.settings, start, ws.send_str, hang_up)
    gw.registry.add(call)
    log.info("call %s: stream %s started", call.call_sid, call.stream_sid)
    return call
