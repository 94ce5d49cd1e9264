"""``GET /media``: the bidirectional Media Streams WebSocket.

One socket is one call. The handshake's ``X-Twilio-Signature`` (over the advertised
``wss://`` Stream URL, no parameters) and the ``start`` event's stream token must check
out; then media, marks and DTMF flow into the call's actor tree and its outbound writer
sends agent audio back.

The console's softphone speaks the same protocol on ``GET /console/media``
(``gateway/console.py``): the same ``StreamSession``, with the console's access check at
the handshake instead of Twilio's signature (a browser cannot send that header), and a
stream token the console minted (``Gateway.console_tokens``: not valid on ``/media``,
and webhook tokens are not valid there).

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
from typing import Any

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
from ..logs import bind_call, unbind_call
from .calls import Call
from .context import GATEWAY, Gateway
from .security import StreamTokens, TokenError, stream_url
from .streamstate import StreamState, step

log = logging.getLogger("callbridge.gateway")


class Refused(Exception):
    """Close the socket with ``code``; ``str(self)`` is the reason logged."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


async def media_socket(request: web.Request) -> web.WebSocketResponse:
    gw = request.app[GATEWAY]
    signed_url = stream_url(gw.public_base(request))
    refusal = None
    if not gw.signatures.valid(signed_url, {}, request.headers.get("X-Twilio-Signature")):
        refusal = f"bad or missing X-Twilio-Signature for {signed_url}"
    return await serve_stream(request, gw.tokens, refusal, "twilio")


async def serve_stream(
    request: web.Request, tokens: StreamTokens, refusal: str | None, source: str
) -> web.WebSocketResponse:
    """Run one Media Streams socket; ``refusal`` (a failed handshake check) closes it
    with 1008 at once."""
    gw = request.app[GATEWAY]
    ws = web.WebSocketResponse(max_msg_size=MAX_MESSAGE_BYTES, autoping=True)
    await ws.prepare(request)
    gw.sockets.add(ws)
    session = StreamSession(gw, ws, request.remote or "?", tokens, source, request.transport)
    try:
        if refusal is not None:
            raise Refused(CLOSE_POLICY, refusal)
        await session.serve()
    except (Refused, ProtocolError) as exc:
        code = exc.code if isinstance(exc, Refused) else exc.close_code
        session.refused(code, str(exc))
        await ws.close(code=code, message=str(exc)[:120].encode())
    finally:
        gw.sockets.discard(ws)
        await session.finish()
    return ws


class StreamSession:
    """One socket's reading side: state machine, dispatch of events to the call."""

    def __init__(
        self,
        gw: Gateway,
        ws: web.WebSocketResponse,
        peer: str,
        tokens: StreamTokens,
        source: str = "twilio",
        transport: asyncio.BaseTransport | None = None,
    ) -> None:
        self.gw = gw
        self.transport = transport
        self.ws = ws
        self.peer = peer
        self.tokens = tokens
        self.source = source
        self.log_binding: Any = None
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
                    self.call.hung_up = True
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
            self.call = await self.start_call(event)
        elif isinstance(event, Stop):
            call.stop_reason = "twilio stop"  # type: ignore[union-attr]
            call.hung_up = True  # type: ignore[union-attr]  # the caller hung up
            await self.ws.close(code=WSCloseCode.OK)
            return True
        elif isinstance(event, Unknown) and event.event not in self.unknown_seen:
            self.unknown_seen.add(event.event)
            log.info("media socket %s: ignoring unknown event %r", self.who, event.event)
        return False

    async def start_call(self, start: Start) -> Call:
        gw = self.gw
        try:
            self.tokens.verify(start.custom_parameters.get("token"), start.call_sid, time.time())
        except TokenError as exc:
            raise Refused(CLOSE_POLICY, f"call {start.call_sid}: {exc}") from None
        if start.call_sid in gw.registry.live:
            raise Refused(CLOSE_POLICY, f"call {start.call_sid} already has a live stream")
        resume = None
        if start.custom_parameters.get("resume") == "1":
            stored = await gw.store.lookup(start.call_sid)
            if stored is not None and stored.state == "live":
                resume = stored.data
            else:
                log.warning("call %s: nothing to resume (%s); starting afresh", start.call_sid,
                            stored.state if stored else "unknown")
        publish = gw.events.publish if gw.events is not None else None
        # Before the call's tasks exist, so they inherit the tags for their log lines.
        self.log_binding = bind_call(start.call_sid, start.stream_sid)
        registry, sid = gw.registry, start.call_sid
        call = Call(
            gw.settings, start, self.ws.send_str, self.hang_up, publish=publish,
            metrics=gw.metrics, watch=gw.watch, source=self.source, store=gw.store, resume=resume,
            bind=lambda provider, remote_id: registry.alias(provider, remote_id, sid),
        )
        call.transport = self.transport
        gw.registry.add(call)
        log.info("call %s: stream %s %s", call.call_sid, call.stream_sid, "resumed" if resume else "started")
        return call

    def hang_up(self, reason: str) -> None:
        """We end the call (the agent said goodbye, or a child gave up): record it as
        ended in the store first, so the redirect Twilio then follows gets ``<Hangup/>``,
        then close the stream; with Twilio API credentials, complete the call through the
        REST API too."""
        call = self.call
        if call is not None:
            call.stop_reason = reason
            call.hung_up = True
            call.closing = asyncio.get_running_loop().create_task(self._close_ended(call))
            self.gw.complete_call(call.call_sid)

    async def _close_ended(self, call: Call) -> None:
        try:
            await self.gw.store.finish(call.call_sid, call.to_json(), resumable=False)
        finally:
            await self.ws.close(code=WSCloseCode.OK, message=b"call ended")

    def refused(self, code: int, reason: str) -> None:
        log.warning("media socket %s closed with %d: %s", self.who, code, reason)
        if self.call is not None:
            self.call.stop_reason = f"closed {code}: {reason}"
            self.call.hung_up = True  # closed for bad input: a redirect must not resume it

    async def finish(self) -> None:
        call = self.call
        if call is not None:
            call.stop(call.stop_reason or "socket closed")
            self.gw.registry.finish(call)
            resumable = not call.hung_up
            await self.gw.store.finish(call.call_sid, call.to_json(), resumable)
            log.info("call %s: %s (%s)", call.call_sid, "stream dropped; resumable" if resumable else "ended",
                     call.stop_reason)
        if self.log_binding is not None:
            unbind_call(self.log_binding)
            self.log_binding = None
