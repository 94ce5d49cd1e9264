"""Local servers that speak the remote back ends' documented protocols (loopback only):
a fake OpenAI Realtime endpoint, and what the fake Vapi (``tests/fake_vapi.py``) shares
with it. Shared by the tests and ``bench/upstream.py``.

Both run the same little "model": an energy VAD over the caller audio they receive
(speech = 20 ms frames above ``SPEECH_RMS``, a start after ``START_MS`` of it, an end after
``END_MS`` of quiet), and a reply: a tone of ``reply_s`` seconds, streamed at twice real
time in 100 ms chunks. A reply in progress is cancelled when the caller starts speaking
(as Vapi does, and the Realtime API with ``interrupt_response``). Knobs per test: ``ready_delay_s`` (slow cold start),
``drop_after_s`` (session n -> close abruptly after s seconds), ``refuse_from`` (refuse
every connection from the n-th on), ``end_call_after_replies`` (the agent hangs up).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from aiohttp import WSMsgType, web

from callbridge.codecs.g711 import ulaw_decode, ulaw_encode

from . import fake_realtime_schema as schema

SPEECH_RMS = 800.0
START_MS = 100
END_MS = 400
CHUNK_MS = 100


def tone(seconds: float, rate: int, amplitude: float = 4000.0, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.int16)


@contextlib.asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[str]:
    """``async with serve(app) as base_url``: the app on 127.0.0.1:<free port>."""
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@dataclass
class Session:
    number: int
    opened: float
    audio: bytearray = field(default_factory=bytearray)
    """Caller audio received, as the provider gets it (mu-law or s16le)."""
    arrivals: list[float] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    """Control messages received (JSON)."""
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    headers: dict[str, str] = field(default_factory=dict)


class FakeModel:
    """The VAD + reply logic, and the knobs, common to both fakes."""

    sample_bytes = 1  # mu-law

    def __init__(self) -> None:
        self.sessions: list[Session] = []
        self.ready_delay_s = 0.0
        self.drop_after_s: dict[int, float] = {}
        self.refuse_from: int | None = None
        self.refused = 0
        self.reply_s = 1.0
        self.greeting_s = 1.0
        self.end_call_after_replies: int | None = None
        self.replies = 0
        self.on_frame: Any = None
        """Bench hook: called with (session, frame bytes, arrival) for each caller frame."""

    def _refuse(self) -> bool:
        attempt = len(self.sessions) + self.refused + 1
        if self.refuse_from is not None and attempt >= self.refuse_from:
            self.refused += 1
            return True
        return False

    def _new_session(self, request: web.Request) -> Session:
        session = Session(len(self.sessions) + 1, time.monotonic(), headers=dict(request.headers))
        self.sessions.append(session)
        return session


class _Vad:
    """Energy VAD over 20 ms frames of int16."""

    def __init__(self) -> None:
        self.loud_ms = 0
        self.quiet_ms = 0
        self.speaking = False
        self.start_ms = 0
        self.pos_ms = 0

    def feed(self, pcm: np.ndarray, rate: int) -> list[str]:
        out = []
        step = rate // 50
        for i in range(0, len(pcm) - step + 1, step):
            x = pcm[i : i + step].astype(np.float64)
            loud = float(np.sqrt(np.mean(x * x))) >= SPEECH_RMS
            self.pos_ms += 20
            if loud:
                self.loud_ms += 20
                self.quiet_ms = 0
                if not self.speaking and self.loud_ms >= START_MS:
                    self.speaking = True
                    self.start_ms = self.pos_ms - self.loud_ms
                    out.append("started")
            else:
                self.quiet_ms += 20
                if self.quiet_ms >= 60:
                    self.loud_ms = 0
                if self.speaking and self.quiet_ms >= END_MS:
                    self.speaking = False
                    out.append("stopped")
        return out


class FakeRealtime(FakeModel):
    """``GET /v1/realtime?model=...`` (WebSocket), the GA interface, as strict as the API's
    reference: the handshake needs ``Authorization: Bearer <api_key>`` (401 without) and a
    ``model`` query parameter (400); ``session.update`` is checked field by field
    (tests/fake_realtime_schema.py: an ``error`` event and no ``session.updated`` for an
    unknown field or a bad value); ``conversation.item.truncate`` of an unknown item, or
    past the audio the item has, ``conversation.item.delete`` of an unknown item,
    ``response.cancel`` with no response in progress, ``response.create`` while one is, and
    unknown event types get ``error`` events. Its VAD follows the session's turn detection:
    ``audio_start_ms`` includes ``prefix_padding_ms``; ``interrupt_response`` cancels the
    reply when the caller starts, ``create_response`` answers when the caller stops (not
    while a reply is in progress). ``errors`` lists every error event sent,
    ``cancelled`` every reply cancelled (session number, ``"vad"`` or ``"client"``).

    Function calling, as the GA API does it: ``calls`` queues ``(name, arguments)`` the
    model calls, one per reply it is asked for (not the greeting), instead of speaking: a
    response whose output item is a ``function_call`` (``call_id``, ``name``; its
    ``arguments`` streamed in ``response.function_call_arguments.delta`` events, then
    ``.done``, ``response.output_item.done`` with the whole item, ``response.done``). Only
    a tool offered in ``session.tools`` is called (another is an ``AssertionError``). A
    ``conversation.item.create`` of a ``function_call_output`` must name a ``call_id`` this
    session issued and not yet answered, with a string ``output`` (an ``error`` event
    otherwise); ``outputs`` lists those accepted (session number, item)."""

    def __init__(self, api_key: str = "sk-test") -> None:
        super().__init__()
        self.url = ""
        self.api_key = api_key
        self.amplitude = 4000.0
        """Level of the agent's tone (int16 peak)."""
        self.errors: list[dict[str, Any]] = []
        self.cancelled: list[tuple[int, str]] = []
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.outputs: list[tuple[int, dict[str, Any]]] = []
        self.answer_ms: list[float] = []
        """Per answered call: from the call's ``output_item.done`` sent to its output received."""

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/realtime", self.handle)
        return app

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[str]:
        async with serve(self.app()) as host:
            self.url = f"ws://{host}/v1/realtime"
            yield self.url

    async def handle(self, request: web.Request) -> web.StreamResponse:
        auth = request.headers.get("Authorization", "")
        if auth != f"Bearer {self.api_key}":
            message = (
                "Incorrect API key provided."
                if auth.startswith("Bearer ")
                else (
                    "You didn't provide an API key. You need to provide your API key in an Authorization header "
                    "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
                )
            )
            return web.json_response(
                {
                    "error": {
                        "type": "invalid_request_error",
                        "code": "invalid_api_key",
                        "message": message,
                        "param": None,
                    }
                },
                status=401,
            )
        if not request.query.get("model"):
            return web.json_response(
                {
                    "error": {
                        "type": "invalid_request_error",
                        "code": "missing_model",
                        "message": "Missing required parameter: 'model'.",
                        "param": "model",
                    }
                },
                status=400,
            )
        if self._refuse():
            return web.Response(status=503, text="overloaded")
        ws = web.WebSocketResponse(max_msg_size=1 << 22)
        await ws.prepare(request)
        session = self._new_session(request)
        session.headers["query"] = request.query_string
        conn = _RealtimeConn(self, session, ws)
        try:
            await conn.run()
        finally:
            session.closed.set()
        return ws


CLIENT_EVENTS = (
    "session.update",
    "input_audio_buffer.append",
    "input_audio_buffer.commit",
    "input_audio_buffer.clear",
    "conversation.item.create",
    "conversation.item.retrieve",
    "conversation.item.truncate",
    "conversation.item.delete",
    "response.create",
    "response.cancel",
)


class _RealtimeConn:
    def __init__(self, fake: FakeRealtime, session: Session, ws: web.WebSocketResponse) -> None:
        self.fake, self.session, self.ws = fake, session, ws
        self.vad = _Vad()
        self.reply: asyncio.Task[None] | None = None
        self.ids = itertools.count(1)
        self.configured = False
        self.config: dict[str, Any] = {
            "type": "realtime",
            "model": "",
            "output_modalities": ["audio"],
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": 24000},
                    "turn_detection": dict(schema.DEFAULT_TURN_DETECTION),
                },
                "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "alloy"},
            },
        }
        self.items: dict[str, float] = {}
        """Conversation items: id -> ms of audio (assistant audio; 0 for others)."""
        self.responding: str | None = None
        """The response in progress, if any."""
        self.speech_item = ""
        self.issued: dict[str, str] = {}
        """call_id -> name of the function calls this session made, not yet answered."""
        self.called_at: dict[str, float] = {}

    async def send(self, event: dict[str, Any]) -> None:
        if not self.ws.closed:
            await self.ws.send_str(orjson.dumps(event).decode())

    async def error(
        self,
        client_event: dict[str, Any],
        message: str,
        code: str | None = None,
        param: str | None = None,
        error: dict[str, Any] | None = None,
    ) -> None:
        """An ``error`` event about ``client_event`` (the session goes on)."""
        body = error or {"type": "invalid_request_error", "code": code, "message": message, "param": param}
        body = {**body, "event_id": client_event.get("event_id")}
        self.fake.errors.append(body)
        await self.send({"type": "error", "event_id": f"event_{next(self.ids)}", "error": body})

    def turn_detection(self) -> dict[str, Any] | None:
        return schema.turn_detection(self.config)

    def _pcm(self, audio: bytes) -> tuple[np.ndarray, int]:
        fmt = self.config["audio"]["input"]["format"]["type"]
        return (ulaw_decode(audio), 8000) if fmt == "audio/pcmu" else (np.frombuffer(audio, "<i2"), 24000)

    async def run(self) -> None:
        fake, session = self.fake, self.session
        if fake.ready_delay_s:
            await asyncio.sleep(fake.ready_delay_s)
        self.config["model"] = self.ws._req.query.get("model", "") if self.ws._req is not None else ""
        await self.send(
            {
                "type": "session.created",
                "event_id": "ev0",
                "session": {**self.config, "id": f"sess_{session.number}"},
            }
        )
        dropper = None
        if session.number in fake.drop_after_s:
            dropper = asyncio.ensure_future(self._drop(fake.drop_after_s[session.number]))
        try:
            async for msg in self.ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                event = orjson.loads(msg.data)
                await self.on_event(event)
        finally:
            for task in (dropper, self.reply):
                if task is not None:
                    task.cancel()

    async def _drop(self, after_s: float) -> None:
        await asyncio.sleep(after_s)
        transport = self.ws._req.transport if self.ws._req is not None else None
        if transport is not None:
            transport.abort()  # no close frame: the connection just dies

    async def on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "input_audio_buffer.append":
            audio = base64.b64decode(event["audio"])
            now = time.monotonic()
            self.session.audio += audio
            self.session.arrivals.append(now)
            if self.fake.on_frame is not None:
                self.fake.on_frame(self.session, audio, now)
            if self.turn_detection() is not None:
                for change in self.vad.feed(*self._pcm(audio)):
                    await self.on_vad(change)
            return
        self.session.events.append(event)
        if kind not in CLIENT_EVENTS:
            await self.error(
                event,
                f"Invalid value: '{kind}'. Supported values are: "
                + ", ".join(f"'{k}'" for k in CLIENT_EVENTS)
                + ".",
                "invalid_value",
                "type",
            )
        elif kind == "session.update":
            refused = schema.check_session(event.get("session"))
            if refused is not None:
                await self.error(event, "", error=refused)
                return
            self.config = schema.merged(self.config, event["session"])
            self.configured = True
            await self.send(
                {"type": "session.updated", "event_id": f"event_{next(self.ids)}", "session": self.config}
            )
        elif kind == "response.create":
            if self.responding is not None:
                await self.error(
                    event,
                    f"Conversation already has an active response in progress: "
                    f"{self.responding}. Wait until the response is finished before creating a new one.",
                    "conversation_already_has_active_response",
                )
                return
            if "Greet" in str((event.get("response") or {}).get("instructions", "")):
                await self.respond(self.fake.greeting_s, "Hello from the fake model.")
            elif self.fake.calls:
                await self.call_function(*self.fake.calls.pop(0))
            else:
                await self.respond(self.fake.reply_s, "Here is my answer.")
        elif kind == "response.cancel":
            if self.responding is None or self.reply is None:
                await self.error(
                    event, "Cancellation failed: no active response found", "response_cancel_not_active"
                )
                return
            self.cancel_reply("client")
        elif kind == "conversation.item.truncate":
            await self.truncate(event)
        elif kind == "conversation.item.delete":
            item = event.get("item_id")
            if item not in self.items:
                await self.error(
                    event, f"Item with item_id not found: {item}", "item_delete_invalid_item_id", "item_id"
                )
                return
            del self.items[item]
            await self.send({"type": "conversation.item.deleted", "item_id": item})
        elif kind == "conversation.item.create":
            item = dict(event.get("item") or {})
            if item.get("type") == "function_call_output":
                await self.function_output(event, item)
                return
            if item.get("type") != "message" or item.get("role") not in ("user", "assistant", "system"):
                await self.error(
                    event, "Invalid 'item': expected a message with a role.", "invalid_value", "item"
                )
                return
            item.setdefault("id", f"item_{next(self.ids)}")
            self.items[item["id"]] = 0.0
            await self.send({"type": "conversation.item.added", "item": item})

    async def function_output(self, event: dict[str, Any], item: dict[str, Any]) -> None:
        unknown = set(item) - {"id", "type", "call_id", "output", "object", "status"}
        call_id, output = item.get("call_id"), item.get("output")
        if unknown:
            key = sorted(unknown)[0]
            await self.error(event, f"Unknown parameter: 'item.{key}'.", "unknown_parameter", f"item.{key}")
        elif not isinstance(call_id, str) or call_id not in self.issued:
            await self.error(
                event,
                f"Invalid 'item.call_id': no function call with call_id {call_id!r} awaits an output.",
                "invalid_value",
                "item.call_id",
            )
        elif not isinstance(output, str):
            await self.error(
                event, "Invalid type for 'item.output': expected a string.", "invalid_type", "item.output"
            )
        else:
            del self.issued[call_id]
            if call_id in self.called_at:
                self.fake.answer_ms.append((time.monotonic() - self.called_at.pop(call_id)) * 1000.0)
            item.setdefault("id", f"item_{next(self.ids)}")
            self.items[item["id"]] = 0.0
            self.fake.outputs.append((self.session.number, item))
            await self.send({"type": "conversation.item.added", "item": item})

    def offered(self) -> set[str]:
        return {t.get("name", "") for t in self.config.get("tools", []) if isinstance(t, dict)}

    async def call_function(self, name: str, arguments: dict[str, Any]) -> None:
        """A response that calls ``name`` (it must be offered) instead of speaking."""
        assert name in self.offered(), f"the model cannot call {name!r}: offered {sorted(self.offered())}"
        response, item, call_id = f"resp_{next(self.ids)}", f"item_{next(self.ids)}", f"call_{next(self.ids)}"
        self.responding = response
        self.items[item] = 0.0
        self.issued[call_id] = name
        base = {"id": item, "type": "function_call", "call_id": call_id, "name": name}
        await self.send({"type": "response.created", "response": {"id": response, "status": "in_progress"}})
        await self.send(
            {
                "type": "response.output_item.added",
                "response_id": response,
                "output_index": 0,
                "item": {**base, "status": "in_progress", "arguments": ""},
            }
        )
        self.reply = asyncio.ensure_future(
            self._stream_call(response, base, orjson.dumps(arguments).decode())
        )
        self.reply.add_done_callback(lambda task: self._done(response, task))

    async def _stream_call(self, response: str, item: dict[str, Any], arguments: str) -> None:
        where = {
            "response_id": response,
            "item_id": item["id"],
            "output_index": 0,
            "call_id": item["call_id"],
        }
        for i in range(0, len(arguments), 8):
            await self.send(
                {"type": "response.function_call_arguments.delta", **where, "delta": arguments[i : i + 8]}
            )
            await asyncio.sleep(0.005)
        await self.send(
            {
                "type": "response.function_call_arguments.done",
                **where,
                "name": item["name"],
                "arguments": arguments,
            }
        )
        await self.send(
            {
                "type": "response.output_item.done",
                "response_id": response,
                "output_index": 0,
                "item": {**item, "status": "completed", "arguments": arguments},
            }
        )
        self.called_at[item["call_id"]] = time.monotonic()

    async def truncate(self, event: dict[str, Any]) -> None:
        item, end = event.get("item_id"), event.get("audio_end_ms")
        if item not in self.items:
            await self.error(
                event, f"Item with item_id not found: {item}", "item_truncate_invalid_item_id", "item_id"
            )
        elif event.get("content_index") != 0:
            await self.error(event, "Invalid 'content_index'.", "invalid_value", "content_index")
        elif not isinstance(end, int) or isinstance(end, bool) or end < 0:
            await self.error(
                event,
                f"Invalid 'audio_end_ms': expected an integer >= 0, but got {end!r} instead.",
                "integer_below_min_value",
                "audio_end_ms",
            )
        elif end > self.items[item]:
            await self.error(
                event,
                f"Audio content of {self.items[item]:.0f}ms is already shorter than {end}ms",
                "invalid_value",
                "audio_end_ms",
            )
        else:
            self.items[item] = float(end)
            await self.send(
                {
                    "type": "conversation.item.truncated",
                    "item_id": item,
                    "content_index": 0,
                    "audio_end_ms": end,
                }
            )

    async def on_vad(self, change: str) -> None:
        td = self.turn_detection() or {}
        if change == "started":
            if td.get("interrupt_response") and self.responding is not None and self.reply is not None:
                self.cancel_reply("vad")
            padding = int(td.get("prefix_padding_ms", 0))
            self.speech_item = f"in_{next(self.ids)}"  # the item that speech_stopped commits
            await self.send(
                {
                    "type": "input_audio_buffer.speech_started",
                    "audio_start_ms": max(0, self.vad.start_ms - padding),
                    "item_id": self.speech_item,
                }
            )
        else:
            item = self.speech_item
            self.items[item] = 0.0
            await self.send(
                {
                    "type": "input_audio_buffer.speech_stopped",
                    "audio_end_ms": self.vad.pos_ms,
                    "item_id": item,
                }
            )
            await self.send({"type": "input_audio_buffer.committed", "item_id": item})
            await self.send(
                {"type": "conversation.item.added", "item": {"id": item, "type": "message", "role": "user"}}
            )
            await self.send(
                {
                    "type": "conversation.item.input_audio_transcription.completed",
                    "item_id": item,
                    "content_index": 0,
                    "transcript": f"caller turn {item}",
                }
            )
            if td.get("create_response") and self.responding is None:
                await self.respond(self.fake.reply_s, "Here is my answer.")

    async def respond(self, seconds: float, text: str) -> None:
        """A response: created at once, its audio streamed by a task (``self.reply``)."""
        response, item = f"resp_{next(self.ids)}", f"item_{next(self.ids)}"
        self.responding = response
        self.items[item] = 0.0
        await self.send({"type": "response.created", "response": {"id": response, "status": "in_progress"}})
        await self.send(
            {
                "type": "response.output_item.added",
                "response_id": response,
                "item": {"id": item, "type": "message", "role": "assistant"},
            }
        )
        self.reply = asyncio.ensure_future(self._stream_reply(response, item, seconds, text))
        self.reply.add_done_callback(lambda task: self._done(response, task))

    async def _stream_reply(self, response: str, item: str, seconds: float, text: str) -> None:
        fake = self.fake
        pcmu = self.config["audio"]["output"]["format"]["type"] == "audio/pcmu"
        if pcmu:
            audio, step = ulaw_encode(tone(seconds, 8000, fake.amplitude)), 8 * CHUNK_MS
        else:
            audio, step = tone(seconds, 24000, fake.amplitude).tobytes(), 48 * CHUNK_MS
        for i in range(0, len(audio), step):
            chunk = audio[i : i + step]
            await self.send(
                {
                    "type": "response.output_audio.delta",
                    "response_id": response,
                    "item_id": item,
                    "output_index": 0,
                    "content_index": 0,
                    "delta": base64.b64encode(chunk).decode(),
                }
            )
            if item in self.items:
                self.items[item] += len(chunk) / (step / CHUNK_MS)
            await asyncio.sleep(CHUNK_MS / 2000)
        await self.send({"type": "response.output_audio.done", "response_id": response, "item_id": item})
        await self.send(
            {
                "type": "response.output_audio_transcript.done",
                "response_id": response,
                "item_id": item,
                "transcript": text,
            }
        )
        fake.replies += 1
        if fake.end_call_after_replies is not None and fake.replies >= fake.end_call_after_replies:
            # the goodbye and the end_call in one response: the call's item comes last
            assert "end_call" in self.offered(), "end_call is not offered"
            call_id = f"call_{next(self.ids)}"
            self.issued[call_id] = "end_call"
            await self.send(
                {
                    "type": "response.output_item.done",
                    "response_id": response,
                    "output_index": 1,
                    "item": {
                        "id": f"item_{next(self.ids)}",
                        "type": "function_call",
                        "status": "completed",
                        "name": "end_call",
                        "call_id": call_id,
                        "arguments": "{}",
                    },
                }
            )

    def cancel_reply(self, by: str) -> None:
        """The response in progress ends now (``response.done`` follows)."""
        assert self.reply is not None
        self.fake.cancelled.append((self.session.number, by))
        self.responding = None
        self.reply.cancel()

    def _done(self, response: str, task: asyncio.Task[None]) -> None:
        """``response.done`` once the reply's task ends (completed, or cancelled, even
        before it started)."""
        if self.responding == response:
            self.responding = None
        status = "cancelled" if task.cancelled() else "completed"
        if not self.ws.closed:
            asyncio.ensure_future(  # noqa: RUF006 - a last send; the loop keeps it while it runs
                self.send({"type": "response.done", "response": {"id": response, "status": status}})
            )
