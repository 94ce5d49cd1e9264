"""A local Vapi (loopback only) as strict as Vapi's API documentation: ``POST /call``
for the WebSocket transport, the call's ``websocketCallUrl`` and its Live Call Control
``monitor.controlUrl``. Shared by the tests.

What it refuses, as Vapi does (``CreateCallDTO``, ``VapiWebsocketTransport``,
``AudioFormat``, ``AssistantOverrides``): a missing or wrong ``Authorization: Bearer``
key (401, also on ``GET /call/{id}``); a body that is not a JSON object, a property the DTO does not have, neither or
both of ``assistantId``/``assistant``, ``phoneNumber``/``phoneNumberId`` with this
transport, a transport other than ``vapi.websocket``, an audio format other than
``pcm_s16le``/``mulaw`` in a ``raw`` container, a ``sampleRate`` missing or out of range,
an unknown ``firstMessageMode`` (400, Vapi's error shape). Beyond the docs, on purpose:
a second socket on a call's URL, or one on an ended call, is refused (Vapi documents no
reconnection), so a bridge relying on it fails here; so is control of an ended call (404:
a bridge must then ask ``GET /call/{id}``, which says ``status: "ended"``).

It keeps every call's state: ``open_calls`` (created, not ended) and ``max_open`` (the
most open at once), so a test can assert one phone call never had two Vapi calls open. A
call ends by ``{"type": "end-call"}`` (or the transport page's ``hangup``) on its socket,
``end-call`` POSTed to its controlUrl, or its assistant hanging up; a socket that merely
drops leaves the call open (as far as a client can know). The assistant greets unless
told ``firstMessageMode: "assistant-waits-for-user"``.

Server URL (``server_url``, ``server_secret`` sent as ``Authorization: Bearer``): the
messages named in ``server_messages`` (the assistant's ``serverMessages``) are POSTed
there as Vapi does (``{"message": {"type", "timestamp", "call": {"id"}, ...}}``). Its
assistant's tools, as Vapi runs them on a call it does not own:

- ``transferCall`` (``transfer_after_replies``): with no ``transfer_destinations`` it
  asks for one (``transfer-destination-request``, which must be in ``server_messages``);
  the answer must be ``{"destination": {...}}`` (``type: "number"`` with an E.164
  ``number``, or ``type: "sip"`` with a ``sip:`` ``sipUri``; no other field than Vapi's
  ``TransferDestinationNumber``/``...Sip`` have) or ``{"error": "..."}``; anything else is
  a ``problem``. It then says its transfer message and, with ``phone-call-control`` in
  ``server_messages``, POSTs ``{"request": "forward", "destination"}`` and leaves the
  call to the server; without it, it cannot move a WebSocket call: a ``problem``, and
  the call ends (``status-update`` ``ended``, ``endedReason`` ``assistant-forwarded-call``
  is never reached).
- ``endCall`` (``end_call_after_replies``): ``end_with`` ``hangup`` or ``close`` ends
  the call itself; ``phone-call-control`` POSTs ``{"request": "hang-up"}`` instead and
  leaves the hang-up to the server.

``server_posts`` lists (type, HTTP status, answer) of each POST; ``problems`` what Vapi
would have failed on.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import numpy as np
import orjson
from aiohttp import WSMsgType, web

from callbridge.codecs.g711 import ulaw_decode, ulaw_encode

from .remote_fakes import CHUNK_MS, FakeModel, _RealtimeConn, serve, tone

CREATE_FIELDS = frozenset(
    {
        "assistantVersion",
        "transport",
        "customers",
        "name",
        "schedulePlan",
        "assistantId",
        "assistant",
        "assistantOverrides",
        "squadId",
        "squad",
        "squadOverrides",
        "workflowId",
        "workflow",
        "workflowOverrides",
        "phoneNumberId",
        "phoneNumber",
        "customerId",
        "customer",
    }
)
TRANSPORT_FIELDS = frozenset({"provider", "audioFormat", "conversationType"})
AUDIO_FIELDS = frozenset({"format", "container", "sampleRate"})
FIRST_MESSAGE_MODES = frozenset(
    {
        "assistant-speaks-first",
        "assistant-speaks-first-with-model-generated-message",
        "assistant-waits-for-user",
    }
)
WAITS = "assistant-waits-for-user"


def create_problems(body: Any) -> list[str]:
    """What Vapi would refuse in a ``POST /call`` body for the WebSocket transport."""
    if not isinstance(body, dict):
        return ["body must be a JSON object"]
    problems = [f"property {name} should not exist" for name in sorted(set(body) - CREATE_FIELDS)]
    if ("assistantId" in body) == ("assistant" in body):
        problems.append("exactly one of assistantId or assistant is required")
    if "assistantId" in body and not isinstance(body["assistantId"], str):
        problems.append("assistantId must be a string")
    if "assistant" in body and not isinstance(body["assistant"], dict):
        problems.append("assistant must be an object")
    if "phoneNumber" in body or "phoneNumberId" in body:
        problems.append("phoneNumber/phoneNumberId are not permitted with the vapi.websocket transport")
    for where in ("assistant", "assistantOverrides"):
        part = body.get(where)
        if (
            isinstance(part, dict)
            and "firstMessageMode" in part
            and part["firstMessageMode"] not in FIRST_MESSAGE_MODES
        ):
            problems.append(f"{where}.firstMessageMode must be one of {sorted(FIRST_MESSAGE_MODES)}")
    transport = body.get("transport")
    if not isinstance(transport, dict):
        return [*problems, "transport must be an object"]
    problems += [
        f"property transport.{name} should not exist" for name in sorted(set(transport) - TRANSPORT_FIELDS)
    ]
    if transport.get("provider") != "vapi.websocket":
        problems.append("transport.provider must be vapi.websocket")
    audio = transport.get("audioFormat")
    if audio is None:
        return problems
    if not isinstance(audio, dict):
        return [*problems, "transport.audioFormat must be an object"]
    problems += [
        f"property transport.audioFormat.{name} should not exist"
        for name in sorted(set(audio) - AUDIO_FIELDS)
    ]
    if audio.get("format") not in ("pcm_s16le", "mulaw"):
        problems.append("transport.audioFormat.format must be pcm_s16le or mulaw")
    if "container" in audio and audio["container"] != "raw":
        problems.append("transport.audioFormat.container must be raw")
    rate = audio.get("sampleRate")
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 192000:
        problems.append("transport.audioFormat.sampleRate must be a number 0..192000")
    return problems


def first_message_mode(body: dict[str, Any]) -> str:
    for where in ("assistantOverrides", "assistant"):
        part = body.get(where)
        if isinstance(part, dict) and "firstMessageMode" in part:
            return part["firstMessageMode"]
    return "assistant-speaks-first"


NUMBER_FIELDS = frozenset(
    {
        "type",
        "message",
        "numberE164CheckEnabled",
        "number",
        "extension",
        "callerId",
        "transferPlan",
        "description",
    }
)
SIP_FIELDS = frozenset({"type", "message", "sipUri", "transferPlan", "sipHeaders", "description"})
E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")


def destination_problem(answer: Any) -> str:
    """What Vapi would fail on in an answer to ``transfer-destination-request`` ("" if none)."""
    if not isinstance(answer, dict) or ("destination" in answer) == ("error" in answer):
        return f"answer must be an object with destination or error: {str(answer)[:100]}"
    if "error" in answer:
        return "" if isinstance(answer["error"], str) else "error must be a string"
    dest = answer["destination"]
    if not isinstance(dest, dict):
        return "destination must be an object"
    if dest.get("type") == "number":
        extra, to = set(dest) - NUMBER_FIELDS, dest.get("number")
        if not isinstance(to, str) or (dest.get("numberE164CheckEnabled", True) and not E164.match(to)):
            return f"destination.number must be E.164: {str(to)[:40]}"
    elif dest.get("type") == "sip":
        extra, to = set(dest) - SIP_FIELDS, dest.get("sipUri")
        if not isinstance(to, str) or not to.startswith(("sip:", "sips:")):
            return f"destination.sipUri must be a sip: URI: {str(to)[:40]}"
    else:
        return (
            f"destination.type must be number or sip (assistant: another assistant), not {dest.get('type')!r}"
        )
    return f"property destination.{sorted(extra)[0]} should not exist" if extra else ""


class FakeVapi(FakeModel):
    """``POST /call`` (bearer key) -> a call whose ``transport.websocketCallUrl`` carries
    audio both ways as binary frames (16 kHz s16le or 8 kHz mu-law, as asked) and JSON
    control as text frames; ``monitor.controlUrl`` takes ``end-call``."""

    sample_bytes = 2

    def __init__(self, api_key: str = "vapi-test-key") -> None:
        super().__init__()
        self.api_key = api_key
        self.host = ""
        self.created: list[dict[str, Any]] = []
        self.refusals: list[tuple[int, Any]] = []
        """(status, error message) of each refused request."""
        self.greeted: list[str] = []
        """Calls whose assistant spoke first."""
        self.hangups: list[str] = []
        """Calls ended by a control message on their socket."""
        self.controls: list[tuple[str, dict[str, Any]]] = []
        """(call id, message) POSTed to a controlUrl."""
        self.open_calls: set[str] = set()
        self.max_open = 0
        self.sockets: dict[str, int] = {}
        self.conns: dict[str, _VapiConn] = {}
        self.create_delay_s = 0.0
        self.speech_updates = True
        """Whether the fake says when the caller starts speaking (Vapi's clientMessages)."""
        self.end_with = "hangup"
        """How the fake's agent ends a call: ``hangup`` (control message) or ``close``."""
        self.control_url = True
        """Whether ``POST /call`` answers a ``monitor.controlUrl``."""
        self.control_status = 200
        """What the controlUrl answers (>= 300: it fails and ends nothing)."""
        self.server_url = ""
        self.server_secret = ""
        self.server_messages: set[str] = set()
        self.transfer_after_replies: int | None = None
        self.transfer_destinations: list[dict[str, Any]] = []
        self.server_posts: list[tuple[str, int, Any]] = []
        self.problems: list[str] = []

    async def post_server(self, call_id: str, kind: str, **fields: Any) -> Any:
        """POST a server message about ``call_id``; its JSON answer (None if it failed)."""
        if kind not in self.server_messages or not self.server_url:
            return None
        body = {"message": {"type": kind, "timestamp": time.time() * 1000, "call": {"id": call_id}, **fields}}
        headers = {"Authorization": f"Bearer {self.server_secret}"}
        async with (
            aiohttp.ClientSession() as http,
            http.post(self.server_url, json=body, headers=headers) as r,
        ):
            answer = await r.json(content_type=None) if r.status == 200 else await r.text()
        self.server_posts.append((kind, r.status, answer))
        return answer if r.status == 200 else None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/call", self.create)
        app.router.add_get("/ws/{call_id}", self.socket)
        app.router.add_get("/call/{call_id}", self.get_call)
        app.router.add_post("/control/{call_id}", self.control)
        return app

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[str]:
        async with serve(self.app()) as host:
            self.host = host
            yield f"http://{host}"

    def _refusal(self, status: int, message: Any) -> web.Response:
        self.refusals.append((status, message))
        errors = {401: "Unauthorized", 400: "Bad Request", 404: "Not Found", 409: "Conflict"}
        return web.json_response(
            {"message": message, "error": errors.get(status, ""), "statusCode": status}, status=status
        )

    def end(self, call_id: str) -> None:
        self.open_calls.discard(call_id)

    async def create(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return self._refusal(
                401,
                "Invalid Key. Hot tip, you may be using the private key instead of the public key, or vice versa.",
            )
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return self._refusal(400, ["body must be JSON"])
        problems = create_problems(body)
        if problems:
            return self._refusal(400, problems)
        if self._refuse():
            return web.json_response({"message": "overloaded"}, status=503)
        self.created.append(body)
        call_id = f"vapi-call-{len(self.created)}"
        self.open_calls.add(call_id)
        self.max_open = max(self.max_open, len(self.open_calls))
        if self.create_delay_s:
            await asyncio.sleep(self.create_delay_s)
        answer: dict[str, Any] = {
            "id": call_id,
            "status": "queued",
            "type": "vapi.websocketCall",
            "transport": {**body["transport"], "websocketCallUrl": f"ws://{self.host}/ws/{call_id}"},
        }
        if self.control_url:
            answer["monitor"] = {"controlUrl": f"http://{self.host}/control/{call_id}"}
        return web.json_response(answer, status=201)

    def _call_index(self, call_id: str) -> int | None:
        prefix, _, number = call_id.rpartition("-")
        if prefix != "vapi-call" or not number.isdigit() or not 1 <= int(number) <= len(self.created):
            return None
        return int(number) - 1

    async def get_call(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return self._refusal(401, "Invalid Key.")
        call_id = request.match_info["call_id"]
        if self._call_index(call_id) is None:
            return self._refusal(404, "call not found")
        status = "in-progress" if call_id in self.open_calls else "ended"
        return web.json_response({"id": call_id, "type": "vapi.websocketCall", "status": status})

    async def control(self, request: web.Request) -> web.Response:
        call_id = request.match_info["call_id"]
        if call_id not in self.open_calls:
            return self._refusal(404, "call not found or ended")
        message = orjson.loads(await request.read())
        self.controls.append((call_id, message))
        if self.control_status >= 300:
            return self._refusal(self.control_status, "control failed")
        if message.get("type") == "end-call":
            self.end(call_id)
            conn = self.conns.get(call_id)
            if conn is not None:
                await conn.ws.close()
        return web.json_response({})

    async def socket(self, request: web.Request) -> web.StreamResponse:
        call_id = request.match_info["call_id"]
        index = self._call_index(call_id)
        if index is None or call_id not in self.open_calls:
            return self._refusal(404, "call not found or ended")
        if self.sockets.get(call_id):
            return self._refusal(409, "this call already had its transport socket")
        self.sockets[call_id] = 1
        ws = web.WebSocketResponse(max_msg_size=1 << 22)
        await ws.prepare(request)
        session = self._new_session(request)
        session.headers["call_id"] = call_id
        conn = self.conns[call_id] = _VapiConn(self, session, ws)  # type: ignore[arg-type]  # no FakeRealtime: its run() reads only FakeModel knobs
        body = self.created[index]
        conn.mulaw = body["transport"].get("audioFormat", {}).get("format") == "mulaw"
        conn.greets = first_message_mode(body) != WAITS
        try:
            await conn.run()
        finally:
            session.closed.set()
        return ws


class _VapiConn(_RealtimeConn):
    mulaw = False
    greets = True

    async def run(self) -> None:
        fake, session = self.fake, self.session
        assert isinstance(fake, FakeVapi)
        if fake.ready_delay_s:
            await asyncio.sleep(fake.ready_delay_s)
        if self.greets:
            fake.greeted.append(session.headers["call_id"])
            self.start_reply(fake.greeting_s, "Hello from the fake Vapi assistant.")  # firstMessage
        dropper = None
        if session.number in fake.drop_after_s:
            dropper = asyncio.ensure_future(self._drop(fake.drop_after_s[session.number]))
        try:
            async for msg in self.ws:
                if msg.type == WSMsgType.BINARY:
                    now = time.monotonic()
                    session.audio += msg.data
                    session.arrivals.append(now)
                    if fake.on_frame is not None:
                        fake.on_frame(session, msg.data, now)
                    pcm = ulaw_decode(msg.data) if self.mulaw else np.frombuffer(msg.data, "<i2")
                    for change in self.vad.feed(pcm, 8000 if self.mulaw else 16000):
                        await self.on_vad(change)
                elif msg.type == WSMsgType.TEXT:
                    event = orjson.loads(msg.data)
                    session.events.append(event)
                    if event.get("type") in ("end-call", "hangup"):
                        fake.hangups.append(session.headers["call_id"])
                        fake.end(session.headers["call_id"])
                        await self.ws.close()
        finally:
            for task in (dropper, self.reply):
                if task is not None:
                    task.cancel()

    async def on_vad(self, change: str) -> None:
        if change == "started":
            if self.reply is not None and not self.reply.done():
                self.reply.cancel()
            if self.fake.speech_updates:  # type: ignore[attr-defined]  # self.fake is the FakeVapi that made us
                await self.send({"type": "speech-update", "status": "started", "role": "user"})
        else:
            await self.send({"type": "speech-update", "status": "stopped", "role": "user"})
            await self.send(
                {"type": "transcript", "role": "user", "transcriptType": "final", "transcript": "caller turn"}
            )
            self.start_reply(self.fake.reply_s, "Here is my answer.")

    def start_reply(self, seconds: float, text: str) -> None:
        if self.reply is not None and not self.reply.done():
            self.reply.cancel()
        self.reply = asyncio.ensure_future(self._reply(seconds, text))

    async def _reply(self, seconds: float, text: str) -> None:
        fake = self.fake
        assert isinstance(fake, FakeVapi)
        await self._speak(seconds, text)
        fake.replies += 1
        call_id = self.session.headers["call_id"]
        if fake.transfer_after_replies is not None and fake.replies == fake.transfer_after_replies:
            await self._transfer(fake, call_id)
        elif fake.end_call_after_replies is not None and fake.replies >= fake.end_call_after_replies:
            if fake.end_with == "phone-call-control":
                await fake.post_server(call_id, "phone-call-control", request="hang-up")
                return
            fake.end(call_id)
            if fake.end_with == "hangup":
                await self.send({"type": "hangup"})
            await self.ws.close()

    async def _transfer(self, fake: FakeVapi, call_id: str) -> None:
        """The assistant called ``transferCall``."""
        destination: Any = fake.transfer_destinations[0] if fake.transfer_destinations else None
        if destination is None:
            if "transfer-destination-request" not in fake.server_messages:
                fake.problems.append("dynamic transferCall without transfer-destination-request")
                return
            answer = await fake.post_server(call_id, "transfer-destination-request")
            problem = destination_problem(answer)
            if problem:
                fake.problems.append(problem)
                return
            if "error" in answer:
                await self._speak(0.3, "I could not transfer the call.")
                return
            destination = answer["destination"]
        message = destination.get("message")
        await self._speak(0.5, message if isinstance(message, str) else "Transferring the call now")
        if "phone-call-control" in fake.server_messages:
            await fake.post_server(call_id, "phone-call-control", request="forward", destination=destination)
            return
        fake.problems.append("Vapi cannot forward a call on the WebSocket transport (no phone-call-control)")
        fake.end(call_id)
        await self.send({"type": "status-update", "status": "ended", "endedReason": "pipeline-error"})
        await self.ws.close()

    async def _speak(self, seconds: float, text: str) -> None:
        await self.send({"type": "speech-update", "status": "started", "role": "assistant"})
        if self.mulaw:
            audio, step = ulaw_encode(tone(seconds, 8000)), 8 * CHUNK_MS
        else:
            audio, step = tone(seconds, 16000).tobytes(), 32 * CHUNK_MS
        for i in range(0, len(audio), step):
            if self.ws.closed:
                return
            await self.ws.send_bytes(audio[i : i + step])
            await asyncio.sleep(CHUNK_MS / 2000)
        await self.send(
            {"type": "transcript", "role": "assistant", "transcriptType": "final", "transcript": text}
        )
        await self.send({"type": "speech-update", "status": "stopped", "role": "assistant"})
