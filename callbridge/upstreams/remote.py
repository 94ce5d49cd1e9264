"""What every remote back end shares (Vapi, OpenAI Realtime): one WebSocket per call,
and the production concerns around it. A provider subclasses ``RemoteBackend`` and
writes only its protocol: ``connect`` (until the remote is ready), ``send_audio``,
``on_text``/``on_binary`` for what the remote says, and optional hooks.

- **Cold start**: the caller's audio is kept from the first frame (``Backlog``) while the
  remote is connecting, then sent in order once it is ready; nothing is lost.
- **Bounded**: at most ``UPSTREAM_BUFFER_BYTES`` of caller audio waits (cold start,
  reconnect, slow socket); past it the oldest is dropped, counted, and noted once
  (``upstream.buffer_dropped``). Remote messages are at most ``MAX_REMOTE_MESSAGE_BYTES``.
- **Failure mid-call** (socket error or abnormal close, refused request, timeout): the
  caller hears ``FALLBACK`` ("One moment, please.") and the back end reconnects after
  each pause of ``UPSTREAM_RETRIES_S`` (1, 2, 4 s; ``reconnect_policy``); what the caller
  said meanwhile is sent to the new session. After the last pause (or ``MAX_RECONNECTS``
  in a call) it apologises and the call ends once the apology has played. A provider whose sessions
  outlive their socket ends the old one first (``release_remote``); if it cannot
  (``RemoteUnrecoverable``) the back end gives up at once rather than run two sessions.
- **Timeouts**: every request (call creation, connect, session ready) within
  ``UPSTREAM_TIMEOUT_S``; the socket is pinged at that interval, so a dead remote is
  noticed in it too.
- **Ownership**: the HTTP session and socket belong to the call; on stop (or restart of
  the Upstream actor) the remote is told (``hang_up_remote``) and both are closed within
  ``CLOSE_TIMEOUT_S``. Nothing is shared between calls.
- **Agent audio** comes tagged with the remote's key for one reply (``agent_audio``);
  each key is one utterance (its own marks); ``interrupted`` drops what is left of the
  cut one and tells the provider (``on_interrupted``: e.g. truncate) what was heard.
- **Tools**: the model's function calls (``call_tool``) run through
  ``callbridge.tools.run_tool`` with the call's ``CallTools`` (``upstreams/calltools.py``,
  shared with the embedded back end): ``act`` is the telephony action path (``Port.act``
  -> the gateway's ``Call.act``), except ``hang_up``, which this back end does itself: the
  call ends once the agent's goodbye has played (``hang_up_requested``); ``note`` is the
  timeline (``tool.called``); ``say`` speaks a slow tool's filler with the bridge's own
  voice. The tools offered (``tools()``) are the telephony ones (``TELEPHONY_TOOLS``) and
  the user's served ones (``TOOLS_URL``, which win a name clash). At most
  ``MAX_PENDING_TOOLS`` run at once per call; an output for a session that has since
  ended is dropped (the new session never issued its call id).
- **Timeline**: ``upstream.connecting``, ``upstream.ready`` (``connect_ms``, audio held
  and flushed), ``upstream.error``, ``upstream.retry``, ``upstream.gave_up``,
  ``upstream.ended``, ``upstream.buffer_dropped``, ``upstream.closed``;
  ``transcript.final`` and ``agent.reply`` from the remote's transcripts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from bisect import bisect_right
from collections import deque
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson

from ..actions import TELEPHONY_TOOLS
from ..actors import messages as m
from ..agents.base import Turn
from ..retry import RetryPolicy
from ..tools import Tool, ToolOutcome, run_tool, toolbox
from ..usertools import served_tools
from .backlog import Backlog
from .base import Backend, Conversation, Port
from .calltools import CallTools
from .speaker import APOLOGY, FALLBACK, Speaker, prewarm_voice, shared_tts

if TYPE_CHECKING:
    from ..config import Settings

log = logging.getLogger("callbridge.upstream")

MAX_RECONNECTS = 10
"""Reconnects in one call, all failures together, before giving up."""
MAX_REMOTE_MESSAGE_BYTES = 4 << 20
CLOSE_TIMEOUT_S = 2.0
MAX_HISTORY = 200
"""Transcript turns kept per call (for a new session's context after a reconnect)."""
ONSET_LOOKBACK_S = 0.3
"""Speech onset when a remote says "speech started" without saying where."""
KEEP_KEYS = 64
MAX_PENDING_TOOLS = 8
"""Tool calls running at once in one call; past it a call is answered with an error."""
FILLER = "filler"


class RemoteFailure(Exception):
    """The remote went away, refused, or broke its protocol: reconnect."""


class RemoteUnrecoverable(RemoteFailure):
    """Reconnecting is not safe (e.g. the earlier remote session could not be ended, so a
    new one would run beside it): give up now."""


_FAILURES = (TimeoutError, RemoteFailure, aiohttp.ClientError, OSError, ValueError)
"""What ends a session and makes the back end reconnect."""


def reconnect_policy(settings: Settings, provider: str = "remote") -> RetryPolicy:
    """A remote session's life: connecting within ``UPSTREAM_TIMEOUT_S``, reconnecting after
    each pause of ``UPSTREAM_RETRIES_S`` (the schedule starts afresh once a session is
    ready), at most ``MAX_RECONNECTS`` in a call, never after ``RemoteUnrecoverable``."""
    return RetryPolicy(
        f"{provider} session",
        pauses_s=settings.backends.retry_schedule,
        timeout_s=settings.backends.timeout_s,
        errors=_FAILURES,
        retryable=lambda exc: not isinstance(exc, RemoteUnrecoverable),
        max_failures=MAX_RECONNECTS,
    )


async def prewarm(settings: Settings) -> None:
    """Load what a remote back end's first call would otherwise load on the event loop:
    the TTS voice of its fallback and apology (``shared_tts``: espeak-ng, or the speech
    workers with the Piper voice, which speaks those lines once). Run once at start-up
    (``BackendSpec.prewarm``)."""
    await prewarm_voice(shared_tts(settings.speech, listening=False), (FALLBACK, APOLOGY))


class RemoteBackend(Backend):
    provider = "remote"
    bytes_per_ms = 32.0
    """Caller audio as sent: 16 kHz s16le (the Codec's ``CallerAudio``)."""
    normal_close_ends_call = False
    """Whether a clean close (1000) from the remote means it ended the call."""

    def __init__(self, port: Port, conversation: Conversation, settings: Settings) -> None:
        super().__init__(port, conversation)
        self.settings = settings
        self.timeout_s = settings.backends.timeout_s
        self.retry = reconnect_policy(settings, self.provider)
        self.backlog = Backlog(settings.backends.buffer_bytes)
        self.speaker = Speaker(
            port,
            shared_tts(settings.speech, listening=False),
            conversation.new_utterance,
        )
        self.call: m.CallStarted | None = None
        self.http: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.control: deque[str] = deque()
        self.wake = asyncio.Event()
        self.ready = False
        self.stopping = False
        self.ended = False
        self.sessions = 0
        # caller side: where each sent chunk sits in the session's input audio
        self.sent_ms = 0.0
        self.sent_log: deque[tuple[float, float]] = deque(maxlen=3000)
        # agent side
        self.utterance: int | None = None
        self.utterance_key = ""
        self.keys: dict[int, str] = {}
        self.cut_keys: deque[str] = deque(maxlen=KEEP_KEYS)
        self.last_opened = 0
        # tools
        self.tool_context = CallTools(port, "", self._filler, None)
        self.pending_tools = 0
        self.hang_up_reason = ""
        """Set by the ``end_call`` tool: the call ends after the agent's goodbye."""

    # -- for providers -------------------------------------------------------------------

    async def connect(self) -> None:
        """Open ``self.ws`` (and ``self.http`` if needed); return once the remote is ready
        for audio. Bounded by ``UPSTREAM_TIMEOUT_S`` as a whole."""
        raise NotImplementedError

    async def send_audio(self, ws: aiohttp.ClientWebSocketResponse, data: bytes) -> None:
        raise NotImplementedError

    def on_text(self, event: dict[str, Any]) -> None: ...
    def on_binary(self, data: bytes) -> None: ...
    def on_ready(self) -> None: ...
    def on_interrupted(self, utterance: int, key: str | None, played_ms: int) -> None: ...
    async def hang_up_remote(self, ws: aiohttp.ClientWebSocketResponse) -> None: ...
    async def release_remote(self) -> None:
        """After each session's socket is closed: end the remote session if it may still
        be running (a provider whose sessions outlive their socket)."""

    def tool_done(self, session: int, call_id: str, outcome: ToolOutcome) -> None:
        """A tool call of session ``session`` (``self.sessions`` when it was asked) ended:
        give the model its output (``session`` is still the current one)."""

    def reply_ended(self) -> bool:
        """Whether the remote has finished the reply in progress (a hang-up waits for it)."""
        return True

    def tools(self) -> dict[str, Tool]:
        """The tools offered to the remote model, by name: the telephony ones and the
        user's served ones (``TOOLS_URL``; they win a name clash)."""
        served = served_tools(self.settings.tools)
        names = {t.name for t in served}
        return toolbox([*(t for t in TELEPHONY_TOOLS if t.name not in names), *served])

    def _filler(self, text: str) -> None:
        self.speaker.say(text, FILLER)

    def call_tool(self, call_id: str, name: str, arguments: Any) -> None:
        """Run the model's call of tool ``name`` (``arguments`` its JSON text) in the
        background; ``tool_done`` gets the outcome."""
        session = self.sessions
        if self.pending_tools >= MAX_PENDING_TOOLS:
            outcome = ToolOutcome(name, False, error=f"more than {MAX_PENDING_TOOLS} tool calls at once")
            self.port.note("tool.called", **outcome.event())
            self.tool_done(session, call_id, outcome)
            return
        self.pending_tools += 1
        raw = arguments if isinstance(arguments, (str, dict)) else None
        self.port.spawn(self._run_tool(session, call_id, name, raw), f"tool:{name[:64]}")

    async def _run_tool(
        self, session: int, call_id: str, name: str, raw: str | dict[str, Any] | None
    ) -> None:
        tools = self.tool_context
        try:
            outcome = await run_tool(self.tools(), name, raw, tools)
        finally:
            self.pending_tools -= 1
        if self.stopping:
            return
        if tools.hang_up_reason is not None:  # end_call: after the goodbye
            reason, tools.hang_up_reason = tools.hang_up_reason, None
            self.hang_up_requested(reason)
        self.tool_done(session, call_id, outcome)

    def hang_up_requested(self, reason: str) -> None:
        """End the call once the agent's goodbye has played (the remote's reply in progress
        first, if any: its audio is the goodbye)."""
        self.hang_up_reason = reason[:200]
        if self.reply_ended():
            self.remote_ended(self.hang_up_reason)

    def new_http(self) -> aiohttp.ClientSession:
        """The call's HTTP session (closed with the call); each request times out."""
        if self.http is None:
            self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s))
        return self.http

    async def open_socket(
        self, url: str, headers: dict[str, str] | None = None
    ) -> aiohttp.ClientWebSocketResponse:
        self.ws = await self.new_http().ws_connect(
            url,
            headers=headers or {},
            heartbeat=self.timeout_s,
            max_msg_size=MAX_REMOTE_MESSAGE_BYTES,
            timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=CLOSE_TIMEOUT_S),
        )
        return self.ws

    def send_json(self, event: dict[str, Any]) -> None:
        """Queue a control message for the current session (dropped if it ends first)."""
        if self.ready:
            self.control.append(orjson.dumps(event).decode())
            self.wake.set()

    def agent_audio(self, key: str, data: bytes, rate: int | None = None) -> None:
        """Agent speech of reply ``key``: mu-law 8 kHz (``rate`` None) or int16 PCM."""
        if key in self.cut_keys or not data:
            return
        if self.utterance is None or key != self.utterance_key:
            self.end_utterance()
            self.utterance = self.last_opened = self.conversation.new_utterance()
            self.utterance_key = key
            self.keys[self.utterance] = key
            while len(self.keys) > KEEP_KEYS:
                del self.keys[next(iter(self.keys))]
        if rate is None:
            self.port.ulaw(self.utterance, data)
        else:
            self.port.audio(self.utterance, data, rate)

    def end_utterance(self) -> None:
        if self.utterance is not None:
            self.port.utterance_end(self.utterance)
            self.utterance = None

    def caller_started(self, audio_ms: float | None = None) -> None:
        """The remote heard the caller start speaking (at ``audio_ms`` of this session's
        input, if it says): BargeIn decides whether that cuts the agent."""
        self.port.caller_speech(self.arrival_of(audio_ms))

    def arrival_of(self, audio_ms: float | None) -> float:
        """When the caller audio at ``audio_ms`` of this session's input reached us."""
        log_ = self.sent_log
        if audio_ms is None or not log_:
            return self.port.now() - ONSET_LOOKBACK_S
        i = bisect_right(log_, (audio_ms, float("inf"))) - 1
        offset, at = log_[max(i, 0)]
        return min(self.port.now(), at + (audio_ms - offset) / 1000.0)

    def heard(self, text: str) -> None:
        text = " ".join(text.split())
        if text:
            self._remember(Turn("caller", text))
            self.port.note("transcript.final", text=text[:1000], source=self.provider)

    def said(self, text: str, utterance: int | None) -> None:
        text = " ".join(text.split())
        if text:
            self._remember(Turn("agent", text))
            self.port.note("agent.reply", text=text[:1000], utterance=utterance, source=self.provider)

    def unplayed(self) -> bool:
        """Whether the caller has yet to hear (or is hearing) the latest agent audio: not
        played to its end mark, nor cut."""
        playback = self.playback
        return self.last_opened > max(playback.played_upto, playback.cut_upto)

    def remote_ended(self, reason: str) -> None:
        """The remote ended the call: hang up once what it said has played."""
        if self.ended:
            return
        self.ended = True
        self.end_utterance()
        self.port.note("upstream.ended", provider=self.provider, reason=reason[:200])
        if self.unplayed():
            self.conversation.hang_up_after = self.last_opened
        else:
            self.port.end_call("the agent ended the call")

    # -- Backend -------------------------------------------------------------------------

    def start(self, call: m.CallStarted) -> None:
        self.call = call
        self.tool_context = CallTools(self.port, call.call_sid, self._filler, None)
        self.port.spawn(self._run(), f"{self.provider}")

    @property
    def outbound(self) -> bool:
        """An outbound call (``POST /calls``): the callee speaks first ("Hello?")."""
        return self.call is not None and self.call.parameters.get("direction") == "outbound"

    def caller_audio(self, msg: m.CallerAudio) -> None:
        self._enqueue(msg.pcm)

    def caller_ulaw(self, msg: m.CallerUlaw) -> None:
        self._enqueue(msg.payload)

    def interrupted(self, utterance: int, played_ms: int) -> None:
        self.speaker.cancel()
        conv = self.conversation
        if conv.hang_up_after is not None and conv.hang_up_after <= utterance:
            conv.hang_up_after = None  # a cut goodbye: the caller wants to go on
        if self.utterance is not None and self.utterance <= utterance:
            self.cut_keys.append(self.utterance_key)
            self.utterance = None
        self.on_interrupted(utterance, self.keys.get(utterance), played_ms)

    def stop(self) -> None:
        """The call is over (or this actor is being replaced): the connection task, being
        cancelled, tells the remote and closes the socket and the session."""
        if not self.stopping:
            self.stopping = True
            self.port.note(
                "upstream.closed",
                provider=self.provider,
                sessions=self.sessions,
                dropped_bytes=self.backlog.dropped_bytes,
            )

    # -- the connection's life -------------------------------------------------------------

    def _enqueue(self, data: bytes) -> None:
        if self.backlog.push(data, self.port.now()) and self.backlog.dropped_chunks == 1:
            log.warning("%s: caller audio backlog full, dropping the oldest", self.provider)
            self.port.note(
                "upstream.buffer_dropped", provider=self.provider, cap_bytes=self.backlog.cap_bytes
            )
        self.wake.set()

    async def _run(self) -> None:
        retries = replace(self.retry, what=f"call {self._sid()}: {self.provider}").start()
        try:
            while not self.stopping:
                started = self.port.now()
                self.port.note("upstream.connecting", provider=self.provider, attempt=retries.failures + 1)
                try:
                    await self.retry.bounded(self.connect())
                    self._ready(started)
                    retries.succeeded()
                    if await self._session():
                        return
                    raise RemoteFailure(f"socket closed by the remote ({self._close_code()})")
                except _FAILURES as exc:
                    failed: BaseException = exc
                finally:
                    self.ready = False
                    self.end_utterance()
                    await self._close()
                failure = retries.failed(failed)
                error = _describe(failed)
                self.port.note("upstream.error", provider=self.provider, error=error, attempt=failure.attempt)
                if failure.pause_s is None:
                    log.warning("call %s: %s failed: %s", self._sid(), self.provider, error)
                    self._give_up(error)
                    return
                if failure.attempt == 1:
                    self.speaker.say(FALLBACK, "fallback")
                self.port.note("upstream.retry", provider=self.provider, in_s=failure.pause_s)
                await asyncio.sleep(failure.pause_s)
        finally:
            await self._close()

    def _ready(self, started: float) -> None:
        self.ready = True
        self.sessions += 1
        self.sent_ms = 0.0
        self.sent_log.clear()
        held_ms = self.backlog.size / self.bytes_per_ms
        self.port.note(
            "upstream.ready",
            provider=self.provider,
            session=self.sessions,
            connect_ms=round((self.port.now() - started) * 1000.0, 1),
            held_ms=round(held_ms),
            dropped_bytes=self.backlog.dropped_bytes,
        )
        self.on_ready()
        self.wake.set()

    async def _session(self) -> bool:
        """Pump and receive until the socket ends: True if the remote ended the call."""
        ws = self.ws
        assert ws is not None
        pump = asyncio.ensure_future(self._pump(ws))
        receive = asyncio.ensure_future(self._receive(ws))
        try:
            done, _ = await asyncio.wait((pump, receive), return_when=asyncio.FIRST_COMPLETED)
            if receive in done:
                return receive.result()
            pump.result()  # raises what broke the pump
            raise RemoteFailure("audio pump stopped")
        finally:
            for task in (pump, receive):
                task.cancel()
            await asyncio.gather(pump, receive, return_exceptions=True)

    async def _pump(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        backlog, control = self.backlog, self.control
        while True:
            await self.wake.wait()
            self.wake.clear()
            while control:
                await ws.send_str(control[0])
                control.popleft()
            while backlog:
                data, at = backlog.pop()
                try:
                    await self.send_audio(ws, data)
                except BaseException:
                    backlog.push_front(data, at)
                    raise
                self.sent_log.append((self.sent_ms, at))
                self.sent_ms += len(data) / self.bytes_per_ms

    async def _receive(self, ws: aiohttp.ClientWebSocketResponse) -> bool:
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                try:
                    event = orjson.loads(msg.data)
                except orjson.JSONDecodeError:
                    raise RemoteFailure("remote sent a text frame that is not JSON") from None
                if isinstance(event, dict):
                    self.on_text(event)
            elif msg.type == aiohttp.WSMsgType.BINARY:
                self.on_binary(msg.data)
            elif msg.type == aiohttp.WSMsgType.ERROR:
                raise RemoteFailure(f"socket error: {ws.exception()}")
            if self.ended:
                return True
        if self.normal_close_ends_call and ws.close_code == 1000:
            self.ended = True
        return self.ended

    def _close_code(self) -> Any:
        return self.ws.close_code if self.ws is not None else None

    async def _close(self) -> None:
        ws, self.ws = self.ws, None
        self.control.clear()
        if ws is not None and not ws.closed:
            with contextlib.suppress(Exception):
                if self.stopping:
                    await asyncio.wait_for(self.hang_up_remote(ws), CLOSE_TIMEOUT_S)
                await asyncio.wait_for(ws.close(), CLOSE_TIMEOUT_S)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.release_remote(), CLOSE_TIMEOUT_S)
        http, self.http = self.http, None
        if http is not None:
            with contextlib.suppress(Exception):
                await http.close()

    def _give_up(self, error: str) -> None:
        self.port.note("upstream.gave_up", provider=self.provider, error=error)
        self.backlog.clear()
        apology = self.speaker.say(APOLOGY, "apology")
        if apology is None:
            self.port.end_call(f"{self.provider} unavailable")
            return
        self._remember(Turn("agent", APOLOGY))
        self.conversation.hang_up_after = apology.number

    def _remember(self, turn: Turn) -> None:
        history = self.conversation.history
        history.append(turn)
        del history[:-MAX_HISTORY]

    def _sid(self) -> str:
        return self.call.call_sid if self.call is not None else "?"


def _describe(exc: BaseException) -> str:
    """One line for the timeline: our own failures as written, others with their type."""
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out (UPSTREAM_TIMEOUT_S)"
    if isinstance(exc, RemoteFailure):
        return str(exc)[:300]
    return f"{type(exc).__name__}: {exc}"[:300]
