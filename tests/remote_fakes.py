"""Local servers that speak the remote back ends' documented protocols (loopback only):
a fake OpenAI Realtime endpoint, and what the fake Vapi (``tests/fake_vapi.py``) shares
with it. Shared by the tests and ``bench/upstream.py``.

Both run the same little "model": an energy VAD over the caller audio they receive
(speech = 20 ms frames above ``SPEECH_RMS``, a start after ``START_MS`` of it, an end after
``END_MS`` of quiet), and a reply: a tone of ``reply_s`` seconds, streamed at twice real
time in 100 ms chunks. A reply in progress is cancelled when the caller starts speaking
(as both providers do). Knobs per test: ``ready_delay_s`` (slow cold start),
``drop_after_s`` (session n -> close abruptly after s seconds), ``refuse_from`` (refuse
every connection from the n-th on), ``end_call_after_replies`` (the agent hangs up).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

import numpy as np
import orjson
from aiohttp import WSMsgType, web

from callbridge.codecs.g711 import ulaw_decode, ulaw_encode

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
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
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
    """``GET /v1/realtime?model=...`` (WebSocket), the GA event names."""

    def __init__(self) -> None:
        super().__init__()
        self.url = ""

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


class _RealtimeConn:
    def __init__(self, fake: FakeRealtime, session: Session, ws: web.WebSocketResponse) -> None:
        self.fake, self.session, self.ws = fake, session, ws
        self.vad = _Vad()
        self.reply: asyncio.Task[None] | None = None
        self.ids = itertools.count(1)
        self.configured = False

    async def send(self, event: dict[str, Any]) -> None:
        if not self.ws.closed:
            await self.ws.send_str(orjson.dumps(event).decode())

    async def run(self) -> None:
        fake, session = self.fake, self.session
        if fake.ready_delay_s:
            await asyncio.sleep(fake.ready_delay_s)
        await self.send({"type": "session.created", "event_id": "ev0", "session": {"id": f"sess_{session.number}"}})
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
        transport = self.ws._req.transport if self.ws._req is not None else None  # type: ignore[attr-defined]
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
            for change in self.vad.feed(ulaw_decode(audio), 8000):
                await self.on_vad(change)
            return
        self.session.events.append(event)
        if kind == "session.update":
            self.configured = True
            await self.send({"type": "session.updated", "session": event.get("session", {})})
        elif kind == "response.create":
            self.start_reply(self.fake.greeting_s, "Hello from the fake model.")
        elif kind == "conversation.item.truncate":
            await self.send({"type": "conversation.item.truncated", "item_id": event.get("item_id"),
                             "content_index": 0, "audio_end_ms": event.get("audio_end_ms")})

    async def on_vad(self, change: str) -> None:
        if change == "started":
            if self.reply is not None and not self.reply.done():
                self.reply.cancel()  # interrupt_response
            await self.send({"type": "input_audio_buffer.speech_started", "audio_start_ms": self.vad.start_ms,
                             "item_id": f"in_{next(self.ids)}"})
        else:
            item = f"in_{next(self.ids)}"
            await self.send({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": self.vad.pos_ms, "item_id": item})
            await self.send({"type": "input_audio_buffer.committed", "item_id": item})
            await self.send({"type": "conversation.item.input_audio_transcription.completed", "item_id": item,
                             "content_index": 0, "transcript": f"caller turn {item}"})
            self.start_reply(self.fake.reply_s, "Here is my answer.")

    def start_reply(self, seconds: float, text: str) -> None:
        if self.reply is not None and not self.reply.done():
            self.reply.cancel()
        self.reply = asyncio.ensure_future(self._reply(seconds, text))

    async def _reply(self, seconds: float, text: str) -> None:
        fake = self.fake
        response, item = f"resp_{next(self.ids)}", f"item_{next(self.ids)}"
        await self.send({"type": "response.created", "response": {"id": response, "status": "in_progress"}})
        await self.send({"type": "response.output_item.added", "response_id": response,
                         "item": {"id": item, "type": "message", "role": "assistant"}})
        audio = ulaw_encode(tone(seconds, 8000))
        step = 8 * CHUNK_MS
        status = "completed"
        try:
            for i in range(0, len(audio), step):
                await self.send({"type": "response.output_audio.delta", "response_id": response, "item_id": item,
                                 "output_index": 0, "content_index": 0,
                                 "delta": base64.b64encode(audio[i : i + step]).decode()})
                await asyncio.sleep(CHUNK_MS / 2000)
            await self.send({"type": "response.output_audio.done", "response_id": response, "item_id": item})
            await self.send({"type": "response.output_audio_transcript.done", "response_id": response,
                             "item_id": item, "transcript": text})
            fake.replies += 1
            if fake.end_call_after_replies is not None and fake.replies >= fake.end_call_after_replies:
                await self.send({"type": "response.output_item.done", "response_id": response,
                                 "item": {"id": f"call_{next(self.ids)}", "type": "function_call",
                                          "name": "end_call", "call_id": "c1", "arguments": "{}"}})
        except asyncio.CancelledError:
            status = "cancelled"
            raise
        finally:
            if not self.ws.closed:
                asyncio.ensure_future(self.send({"type": "response.done",
                                                 "response": {"id": response, "status": status}}))

