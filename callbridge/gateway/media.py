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
bad token, a second stream for a live call (one per CallSid on any process:
``CallStore.claim_stream``; a resuming stream waits up to ``RESUME_CLAIM_WAIT_S`` for the
old one to finish), an event out of order (media before start), a token already
used (tokens start one stream: ``CallStore.claim_token``), or messages faster than
``INBOUND_RATE`` x real time sustained (``INBOUND_BURST_S`` banked; from the socket's
first message on, each but the one ``start`` costing at least a frame); 1009 a message
over ``MAX_MESSAGE_BYTES``; 1013 a new call past ``MAX_CALLS`` (recorded as ended, so
Twilio's ``<Connect action>`` request gets ``<Hangup/>``). Unknown events and echoes of
marks we did not send are ignored and counted (``gateway/ignored.py``: the first of each
kind logged, the totals when the socket closes). A ``stop`` ends the call and closes
with 1000.

Before the upgrade: past ``MAX_SOCKETS_PER_SOURCE`` open sockets from one address the
handshake gets 429. After it, the reaper (``gateway/reaper.py``) closes sockets with no
``start`` in time and drops vanished or non-reading peers. Each media socket's kernel send
buffer and transport buffer are kept small (``SEND_BUFFER_BYTES``), so a peer that stops
reading is noticed within seconds and holds little memory.
"""

from __future__ import annotations

import asyncio
import logging
import socket
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
from .ignored import IgnoredInput
from .limits import InboundRate
from .reaper import Liveness
from .security import SIGNATURE_SETTINGS, StreamTokens, TokenError, stream_url
from .streamstate import StreamState, step

log = logging.getLogger("callbridge.gateway")

CLOSE_TRY_AGAIN = 1013
SEND_BUFFER_BYTES = 16 * 1024
"""Kernel send buffer and transport high-water mark of a media socket (Twilio needs
~15 KB/s; ``OUTBOUND_LEAD_MS`` keeps well under this in flight)."""
CLOSE_TIMEOUT_S = 2.0
RESUME_CLAIM_WAIT_S = 2.0
"""How long a resuming stream waits for the call's previous stream to let go of it."""
CLAIM_POLL_S = 0.02


class Refused(Exception):
    """Close the socket with ``code``; ``str(self)`` is the reason logged."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


async def media_socket(request: web.Request) -> web.WebSocketResponse:
    gw = request.app[GATEWAY]
    signed_url = stream_url(gw.public_base(request))
    refusal = gw.signatures.refusal(
        signed_url, {}, request.headers.get("X-Twilio-Signature"), request.headers.get(SIGNATURE_SETTINGS)
    )
    if refusal is not None:
        refusal = f"{refusal} for {signed_url[:300]}"
    return await serve_stream(request, gw.tokens, refusal, "twilio")


async def serve_stream(
    request: web.Request, tokens: StreamTokens, refusal: str | None, source: str
) -> web.WebSocketResponse:
    """Run one Media Streams socket; ``refusal`` (a failed handshake check) closes it
    with 1008 at once."""
    gw = request.app[GATEWAY]
    peer = gw.source(request)
    if not gw.socket_slots.acquire(peer):
        log.warning(
            "media socket from %s refused: %d open from that address (MAX_SOCKETS_PER_SOURCE)",
            peer,
            gw.socket_slots.open.get(peer, 0),
        )
        raise web.HTTPTooManyRequests(text="too many connections from your address\n")
    try:
        ws = web.WebSocketResponse(max_msg_size=MAX_MESSAGE_BYTES, autoping=True, timeout=CLOSE_TIMEOUT_S)
        await ws.prepare(request)
        _small_buffers(request.transport)
        gw.sockets.add(ws)
        session = StreamSession(gw, ws, peer, tokens, source, request.transport)
        session.public_base = gw.public_base(request)
        gw.sessions.add(session)
        try:
            if refusal is not None:
                raise Refused(CLOSE_POLICY, refusal)
            await session.serve()
        except (Refused, ProtocolError) as exc:
            code = exc.code if isinstance(exc, Refused) else exc.close_code
            session.refused(code, str(exc))
            await session.close(code, str(exc))
        finally:
            gw.sockets.discard(ws)
            gw.sessions.discard(session)
            await session.finish()
    finally:
        gw.socket_slots.release(peer)
    return ws


def _small_buffers(transport: asyncio.BaseTransport | None) -> None:
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
        except OSError:
            pass
    if isinstance(transport, asyncio.WriteTransport):
        transport.set_write_buffer_limits(high=SEND_BUFFER_BYTES)


class StreamSession:
    """One socket's reading side: state machine, dispatch of events to the call."""

    def __init__(
        self,
        gw: Gateway,
        ws: web.WebSocketResponse,
        peer: str,
        tokens: StreamTokens,
        source: str = "twilio",
        transport: asyncio.Transport | None = None,
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
        self.ignored = IgnoredInput(gw.metrics)
        self.messages = 0
        now = time.monotonic()
        self.liveness = Liveness(now)
        self.inbound = InboundRate(gw.settings.limits.inbound_rate, gw.settings.limits.inbound_burst_s, now)
        """Every message counts, from the first (before ``start`` too)."""
        self.public_base = ""
        """This gateway's public base URL as the handshake saw it (callbacks we ask for)."""
        self.claimed: str | None = None
        """The CallSid whose stream this socket claimed in the store (``start``)."""
        self.expelled = False
        self.closing: asyncio.Task[Any] | None = None
        """Closing the socket after the reaper's ``close``."""
        self.hanging_up: asyncio.Task[Any] | None = None
        """Recording the call as ended, then closing the socket, after ``hang_up``."""

    @property
    def who(self) -> str:
        return f"call {self.call.call_sid}" if self.call else f"peer {self.peer}"

    async def serve(self) -> None:
        async for msg in self.ws:
            self.messages += 1
            if msg.type == WSMsgType.TEXT:
                event = parse_inbound(msg.data)
                inbound = self.inbound
                if type(event) is not Start and not inbound.allow(
                    len(event.payload) if isinstance(event, Media) else 0, time.monotonic()
                ):
                    raise Refused(
                        CLOSE_POLICY, f"inbound faster than {inbound.factor:g}x real time (INBOUND_RATE)"
                    )
            elif msg.type == WSMsgType.BINARY:
                raise Refused(CLOSE_UNSUPPORTED, "binary frames are not part of Media Streams")
            else:  # ERROR: aiohttp has already closed with the matching code (e.g. 1009)
                log.warning("media socket %s: %s", self.who, self.ws.exception())
                if self.call is not None:
                    self.call.end_because(f"socket error: {self.ws.exception()}")
                return
            self.state = step(self.state, event)
            if await self.handle(event):
                return

    async def handle(self, event: Event) -> bool:
        """Apply one event; True when the stream is over."""
        call = self.call
        if call is not None:  # step() lets media, marks, DTMF and stop through only then
            if isinstance(event, Media):
                call.media(event)
                return False
            if isinstance(event, Mark):
                call.mark_played(event.name)
                return False
            if isinstance(event, Dtmf):
                call.dtmf(event.digit)
                return False
            if isinstance(event, Stop):
                if call.redirected:  # the bridge gave the call new TwiML: the call goes on
                    call.end_because(call.redirected, resumable=True)
                else:
                    call.end_because("twilio stop")  # the caller hung up
                await self.ws.close(code=WSCloseCode.OK)
                return True
        if isinstance(event, Start):
            self.call = await self.start_call(event)
        elif isinstance(event, Unknown):
            self.ignored.add("unknown_event", self.who, event.event)
        return False

    async def start_call(self, start: Start) -> Call:
        gw = self.gw
        try:
            key, left_s = self.tokens.verify(
                start.custom_parameters.get("token"), start.call_sid, time.time()
            )
        except TokenError as exc:
            raise Refused(CLOSE_POLICY, f"call {start.call_sid}: {exc}") from None
        if not await gw.store.claim_token(key, left_s):
            raise Refused(CLOSE_POLICY, f"call {start.call_sid}: stream token already used")
        wants_resume = start.custom_parameters.get("resume") == "1"
        claimed = await gw.store.claim_stream(start.call_sid)
        deadline = time.monotonic() + RESUME_CLAIM_WAIT_S
        while wants_resume and claimed is False and time.monotonic() < deadline:
            # New TwiML from the bridge (a telephony action) opens this stream as soon as
            # Twilio stopped the old one, which may not have finished here yet.
            await asyncio.sleep(CLAIM_POLL_S)
            claimed = await gw.store.claim_stream(start.call_sid)
        if claimed is False:
            raise Refused(CLOSE_POLICY, f"call {start.call_sid} already has a live stream")
        self.claimed = start.call_sid
        resume = None
        if wants_resume and claimed is None:
            # Unclaimed, the call may be live elsewhere: its stored state is not handed out.
            log.warning("call %s: the store did not answer the stream claim; starting afresh", start.call_sid)
        elif wants_resume:
            stored = await gw.store.lookup(start.call_sid)
            if stored is not None and stored.state == "live":
                resume = stored.data
            else:
                log.warning(
                    "call %s: nothing to resume (%s); starting afresh",
                    start.call_sid,
                    stored.state if stored else "unknown",
                )
        if resume is None and gw.at_capacity():
            # Recorded as ended: Twilio's redirect then hangs up instead of trying again.
            record = {
                "callSid": start.call_sid,
                "state": "ended",
                "stop_reason": "busy: MAX_CALLS",
                "timeline": [],
            }
            self.claimed = None  # released by the finish
            await gw.store.finish(start.call_sid, record, resumable=False)
            raise Refused(
                CLOSE_TRY_AGAIN,
                f"call {start.call_sid}: busy ({len(gw.registry.live)} live calls, MAX_CALLS)",
            )
        publish = gw.events.publish if gw.events is not None else None
        # Before the call's tasks exist, so they inherit the tags for their log lines.
        self.log_binding = bind_call(start.call_sid, start.stream_sid)
        registry, sid = gw.registry, start.call_sid
        call = Call(
            gw.settings,
            start,
            self.ws.send_str,
            self.hang_up,
            publish=publish,
            metrics=gw.metrics,
            watch=gw.watch,
            source=self.source,
            store=gw.store,
            resume=resume,
            bind=lambda provider, remote_id: registry.alias(provider, remote_id, sid),
            ignored=self.ignored,
            transport=self.transport,
            recordings=gw.recordings,
        )
        gw.telephony.attach(call)
        gw.registry.add(call)
        gw.carry_over(call)
        if gw.settings.recordings.mode == "twilio" and resume is None and self.source == "twilio":
            # One recording per call: a resumed stream is still in it.
            gw.start_twilio_recording(call.call_sid, self.public_base)
        log.info("call %s: stream %s %s", call.call_sid, call.stream_sid, "resumed" if resume else "started")
        return call

    def hang_up(self, reason: str) -> None:
        """The call ended itself (``Call.end``: the agent said goodbye, or a child gave up):
        record it as ended in the store first, so the redirect Twilio then follows gets
        ``<Hangup/>``, then close the stream; with Twilio API credentials, complete the call
        through the REST API too."""
        call = self.call
        if call is not None:
            self.hanging_up = asyncio.get_running_loop().create_task(self._close_ended(call))
            self.gw.complete_call(call.call_sid)

    async def _close_ended(self, call: Call) -> None:
        try:
            await self.gw.store.finish(call.call_sid, call.to_json(), resumable=False)
        finally:
            await self.ws.close(code=WSCloseCode.OK, message=b"call ended")

    def expel(self, how: str, reason: str) -> None:
        """The reaper's verdict: ``close`` (1008, with a close frame) or ``abort`` (drop
        the connection: the peer is gone or not reading; the call stays resumable)."""
        if self.expelled:
            return
        self.expelled = True
        log.warning(
            "media socket %s %s: %s", self.who, "closed with 1008" if how == "close" else "dropped", reason
        )
        if self.call is not None:
            self.call.end_because(f"dropped: {reason}", resumable=True)
        if how == "abort" and self.transport is not None:
            self.transport.abort()
        else:
            self.closing = asyncio.get_running_loop().create_task(self.close(CLOSE_POLICY, reason))

    async def close(self, code: int, reason: str) -> None:
        """Close with ``code``; a peer that does not take the close frame in time is dropped."""
        try:
            await asyncio.wait_for(self.ws.close(code=code, message=reason[:120].encode()), CLOSE_TIMEOUT_S)
        except TimeoutError:
            if self.transport is not None:
                self.transport.abort()

    def refused(self, code: int, reason: str) -> None:
        log.warning("media socket %s closed with %d: %s", self.who, code, reason)
        if self.call is not None:  # closed for bad input: a redirect must not resume it
            self.call.end_because(f"closed {code}: {reason}")

    async def finish(self) -> None:
        self.ignored.log_totals(self.who)
        call = self.call
        if call is not None:
            call.stop()
            self.gw.registry.finish(call)
            resumable = call.resumable
            await self.gw.store.finish(call.call_sid, call.to_json(), resumable)
            log.info(
                "call %s: %s (%s)",
                call.call_sid,
                "stream dropped; resumable" if resumable else "ended",
                call.stop_reason,
            )
        elif self.claimed is not None:  # refused after its claim: the call's stream is free again
            self.gw.store.release_stream(self.claimed)
        if self.log_binding is not None:
            unbind_call(self.log_binding)
            self.log_binding = None
