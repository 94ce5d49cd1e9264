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
    Event,
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


class Refused(Exception):
    """Close the socket with ``code``; ``str(self)`` is the reason logged."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


async def media_socket(request: web.Request) -> web.WebSocketResponse:
    gw = request.app[GATEWAY]
    ws = web.WebSocketResponse(max_msg_size=MAX_MESSAGE_BYTES, autoping=True)
    await ws.prepare(request)
    gw.sockets.add(ws)
    session = StreamSession(gw, ws, request.remote or "?")
    try:
        signed_url = stream_url(gw.public_base(request))
        if not gw.signatures.valid(signed_url, {}, request.headers.get("X-Twilio-Signature")):
            raise Refused(CLOSE_POLICY, f"bad or missing X-Twilio-Signature for {signed_url}")
        await session.serve()
    except (Refused, ProtocolError) as exc:
        code = exc.code if isinstance(exc, Refused) else exc.close_code
        session.refused(code, str(exc))
        await ws.close(code=code, message=str(exc)[:120].encode())
    finally:
        gw.sockets.discard(ws)
        session.finish()
    return ws


class StreamSession:
    """One socket's reading side: state machine, dispatch of events to the call."""

    def __init__(self, gw: Gateway, ws: web.WebSocketResponse, peer: str) -> None:
        self.gw = gw
        self.ws = ws
        self.peer = peer
        self.state = StreamState.AWAIT_START
        self.call: Call | None = None
        self.unknown_seen: set[str] = set()

    @property
    def who(self) -> str:
        return f"call {self.call.call_sid}" if self.call else f"peer {self.peer}"

    async def serve(self) -> None:
        async for msg in self.ws:
            if msg.type == WSMsgType.TEXT:
                event = parse_inbound(msg.data)
            elif msg.type == WSMsgType.BINARY:
                raise Refused(CLOSE_UNSUPPORTED, "binary frames are not part of Media Streams")
            else:  # ERROR: aiohttp has already closed with the matching code (e.g. 1009)
                log.warning("media socket %s: %s", self.who, self.ws.exception())
                if self.call is not None:
                    self.call.stop_reason = f"socket error: {self.ws.exception()}"
                return
            self.state = step(self.state, event)
            if await self.handle(event):
                return

    async def handle(self, event: Event) -> bool:
        """Apply one event; True when the stream is over."""
        call = self.call
        if isinstance(event, Media):
            call.media(event)  # type: ignore[union-attr]  # step() guarantees a call
        elif isinstance(event, Mark):
            call.mark_played(event.name)  # type: ignore[union-attr]
        elif isinstance(event, Dtmf):
            call.dtmf(event.digit)  # type: ignore[union-attr]
        elif isinstance(event, Start):
            self.call = self.start_call(event)
        elif isinstance(event, Stop):
            call.stop_reason = "twilio stop"  # type: ignore[union-attr]
            await self.ws.close(code=WSCloseCode.OK)
            return True
        elif isinstance(event, Unknown) and event.event not in self.unknown_seen:
            self.unknown_seen.add(event.event)
            log.info("media socket %s: ignoring unknown event %r", self.who, event.event)
        return False

    def start_call(self, start: Start) -> Call:
        gw = self.gw
        try:
            gw.tokens.verify(start.custom_parameters.get("token"), start.call_sid, time.time())
        except TokenError as exc:
            raise Refused(CLOSE_POLICY, f"call {start.call_sid}: {exc}") from None
        if start.call_sid in gw.registry.live:
            raise Refused(CLOSE_POLICY, f"call {start.call_sid} already has a live stream")
        publish = gw.events.publish if gw.events is not None else None
        registry, sid = gw.registry, start.call_sid
        call = Call(
            gw.settings, start, self.ws.send_str, self.hang_up, publish=publish,
            bind=lambda provider, remote_id: registry.alias(provider, remote_id, sid),
        )
        gw.registry.add(call)
        log.info("call %s: stream %s started", call.call_sid, call.stream_sid)
        return call

    def hang_up(self, reason: str) -> None:
        """The call ends from our side (the agent said goodbye, or the supervisor gave up):
        close the stream (Twilio moves to the next verb; there is none) and, with Twilio
        API credentials, complete the call through the REST API too."""
        if self.call is not None:
            self.call.stop_reason = reason
            self.call.closing = asyncio.get_running_loop().create_task(
                self.ws.close(code=WSCloseCode.OK, message=b"call ended")
            )
            self.gw.complete_call(self.call.call_sid)

    def refused(self, code: int, reason: str) -> None:
        log.warning("media socket %s closed with %d: %s", self.who, code, reason)
        if self.call is not None:
            self.call.stop_reason = f"closed {code}: {reason}"

    def finish(self) -> None:
        call = self.call
        if call is not None:
            call.stop(call.stop_reason or "socket closed")
            self.gw.registry.finish(call)
            log.info("call %s: ended (%s)", call.call_sid, call.stop_reason)
