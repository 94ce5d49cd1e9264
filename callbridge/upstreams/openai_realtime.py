"""OpenAI Realtime over WebSocket, mu-law end to end (no transcoding at all).

Connect to ``OPENAI_REALTIME_URL?model=OPENAI_REALTIME_MODEL`` (``Authorization: Bearer
OPENAI_API_KEY``), wait for ``session.created``, send ``session.update`` (``audio/pcmu``
in and out, server VAD with ``ENDPOINT_SILENCE_MS``, input transcription, the call's
tools), and the session is ready on ``session.updated``. After a reconnect the new
session first gets the call's transcript so far (``conversation.item.create``), so the
conversation goes on. The greeting is asked for once per call (``response.create``).

- Caller audio: Twilio's mu-law bytes, as received, base64 in ``input_audio_buffer.append``
  (the Codec passes them through: ``caller_format = "ulaw"``).
- Agent audio: ``response.output_audio.delta`` bytes are mu-law already: framed and
  played; one output item is one utterance (its own marks).
- Turn-taking is the bridge's: the server's VAD only reports (``create_response`` and
  ``interrupt_response`` off). ``input_audio_buffer.speech_started`` goes to BargeIn with
  the onset: ``audio_start_ms`` includes the ``prefix_padding_ms`` in force (from
  ``session.updated``), so the padding is added back, then mapped to when that audio
  reached us. A barge-in (agent audible, not its own echo) cuts the agent (``clear`` at
  Twilio, queued audio dropped) and we send ``response.cancel`` (if a response is in
  progress) and ``conversation.item.truncate`` with ``audio_end_ms`` = what the caller
  heard (Twilio's marks, within one 200 ms mark interval; never past the audio the item
  has). Speech BargeIn calls echo cancels nothing, and its turn is deleted from the
  conversation once committed (``conversation.item.delete``). Every other committed turn
  gets ``response.create`` (after the response in progress, if any, is done).
- Transcripts: ``conversation.item.input_audio_transcription.completed`` ->
  ``transcript.final``; ``response.output_audio_transcript.done`` -> ``agent.reply``.
- Tools: ``session.tools`` offers ``RemoteBackend.tools()`` (the telephony tools
  ``end_call``, ``transfer_call``, ``send_dtmf``, and the user's ``TOOLS_URL`` ones, loaded
  at start-up by ``prewarm``), ``tool_choice``
  ``auto``. A ``response.output_item.done`` whose item is a ``function_call`` (``call_id``,
  ``name``, the ``arguments`` the ``response.function_call_arguments.delta`` events
  streamed) is run through ``run_tool`` (``remote.RemoteToolContext``); its outcome goes
  back as ``conversation.item.create`` of a ``function_call_output`` (``call_id``,
  ``output`` = ``ToolOutcome.for_model()``), then ``response.create`` once the response
  that called it is done and no other call of it is still running, so the model carries
  on with the result. ``end_call`` gets no new response: the call ends once the
  response's audio (the goodbye) has played.
- ``error`` events are noted (``upstream.remote_error``); the session goes on.

The beta event names (``response.audio.delta``...) are accepted too.
"""

from __future__ import annotations

import base64
import binascii
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aiohttp
import orjson

from ..actions import TELEPHONY_TOOLS
from ..agents.base import Turn
from ..options import option
from ..persona import DESK_PERSONA
from ..tools import Tool, ToolOutcome
from ..usertools import load_served
from .base import ULAW, BackendSpec
from .remote import KEEP_KEYS, RemoteBackend, RemoteFailure
from .remote import prewarm as prewarm_remote

if TYPE_CHECKING:
    from ..config import Settings

INSTRUCTIONS = DESK_PERSONA + " After your farewell, call the end_call tool."
"""The Realtime session's default instructions: the demo's persona, and its end_call tool."""
TRANSCRIPTION_MODEL = "gpt-4o-mini-transcribe"
CONTEXT_TURNS = 20
"""Transcript turns given to a new session after a reconnect."""
PREFIX_PADDING_MS = 300
"""Audio the server's VAD keeps before detected speech (and counts in ``audio_start_ms``)."""
ECHO_ITEMS = 16
"""Input items judged echo, remembered until committed."""
MAX_CALL_ID = 200
_AUDIO_DELTA = ("response.output_audio.delta", "response.audio.delta")
_AUDIO_DONE = ("response.output_audio.done", "response.audio.done")
_TRANSCRIPT_DONE = ("response.output_audio_transcript.done", "response.audio_transcript.done")


# -- the protocol (pure) -------------------------------------------------------------------


def realtime_url(base: str, model: str) -> str:
    """``base`` with ``model=`` set in its query (kept if it is there already)."""
    parts = urlsplit(base)
    query = dict(parse_qsl(parts.query))
    query.setdefault("model", model)
    return urlunsplit(parts._replace(query=urlencode(query)))


def session_update(
    model: str,
    voice: str,
    silence_ms: int,
    instructions: str = INSTRUCTIONS,
    tools: Iterable[Tool] = TELEPHONY_TOOLS,
) -> dict[str, Any]:
    pcmu = {"type": "audio/pcmu"}
    return {
        "type": "session.update",
        "session": {
            "type": "realtime",
            "model": model,
            "output_modalities": ["audio"],
            "instructions": instructions,
            "audio": {
                "input": {
                    "format": pcmu,
                    "transcription": {"model": TRANSCRIPTION_MODEL},
                    "turn_detection": {
                        "type": "server_vad",
                        "silence_duration_ms": silence_ms,
                        "prefix_padding_ms": PREFIX_PADDING_MS,
                        "create_response": False,
                        "interrupt_response": False,
                    },
                },
                "output": {"format": pcmu, "voice": voice},
            },
            "tools": [tool.openai_realtime() for tool in tools],
            "tool_choice": "auto",
        },
    }


def append_audio(ulaw: bytes) -> str:
    """``input_audio_buffer.append``, serialised (the hot path: no dict, no JSON encoder)."""
    return '{"type":"input_audio_buffer.append","audio":"' + base64.b64encode(ulaw).decode("ascii") + '"}'


def truncate(item_id: str, audio_end_ms: int) -> dict[str, Any]:
    return {
        "type": "conversation.item.truncate",
        "item_id": item_id,
        "content_index": 0,
        "audio_end_ms": audio_end_ms,
    }


def padding_in_force(updated: dict[str, Any], sent_ms: int = PREFIX_PADDING_MS) -> int:
    """``prefix_padding_ms`` from a ``session.updated`` event (``sent_ms`` if it says none)."""
    session: Any = updated.get("session")
    try:
        value = session["audio"]["input"]["turn_detection"]["prefix_padding_ms"]
    except (KeyError, TypeError):
        return sent_ms
    return (
        int(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0
        else sent_ms
    )


def speech_onset_ms(audio_start_ms: Any, padding_ms: int) -> float | None:
    """Where the caller's speech began in the session's input: ``audio_start_ms`` counts
    from the start of the padding the server keeps before it. 0 may be the padding cut
    short by the start of the input (speech within its first ``padding_ms``): taken as 0."""
    if not isinstance(audio_start_ms, (int, float)) or isinstance(audio_start_ms, bool):
        return None
    return float(audio_start_ms) + padding_ms if audio_start_ms > 0 else 0.0


def function_output(call_id: str, output: str) -> dict[str, Any]:
    """A tool call's outcome for the model (then ``response.create``)."""
    return {
        "type": "conversation.item.create",
        "item": {"type": "function_call_output", "call_id": call_id, "output": output},
    }


def function_call(item: Any) -> tuple[str, str, str] | None:
    """``(call_id, name, arguments)`` of a ``function_call`` output item, else None."""
    if not isinstance(item, dict) or item.get("type") != "function_call":
        return None
    call_id, name, arguments = item.get("call_id"), item.get("name"), item.get("arguments", "")
    if not isinstance(call_id, str) or not call_id or len(call_id) > MAX_CALL_ID or not isinstance(name, str):
        return None
    return call_id, name[:64], arguments if isinstance(arguments, str) else ""


def greet(greeting: str) -> dict[str, Any]:
    return {
        "type": "response.create",
        "response": {"instructions": f"Greet the caller with exactly these words: {greeting}"},
    }


def create_response() -> dict[str, Any]:
    return {"type": "response.create"}


def cancel_response() -> dict[str, Any]:
    return {"type": "response.cancel"}


def delete_item(item_id: str) -> dict[str, Any]:
    return {"type": "conversation.item.delete", "item_id": item_id}


def context_item(turn: Turn) -> dict[str, Any]:
    """A transcript turn as a conversation item, for a new session's context."""
    if turn.role == "caller":
        content = [{"type": "input_text", "text": turn.text}]
        role = "user"
    else:
        content = [{"type": "output_text", "text": turn.text}]
        role = "assistant"
    return {"type": "conversation.item.create", "item": {"type": "message", "role": role, "content": content}}


# -- the back end --------------------------------------------------------------------------


@dataclass(frozen=True)
class RealtimeOptions:
    title: ClassVar[str] = "OpenAI Realtime back end (`UPSTREAM=openai-realtime`)"
    url: str = option(
        "wss://api.openai.com/v1/realtime",
        "OPENAI_REALTIME_URL",
        "`UPSTREAM=openai-realtime`: WebSocket endpoint (`?model=` is added); the key is `OPENAI_API_KEY`.",
    )
    model: str = option("gpt-realtime", "OPENAI_REALTIME_MODEL", "`UPSTREAM=openai-realtime`: model.")
    voice: str = option("marin", "OPENAI_REALTIME_VOICE", "`UPSTREAM=openai-realtime`: voice.")


def problem(settings: Settings) -> str:
    """Why a Realtime session cannot be opened with these settings ("" when it can)."""
    if not settings.agents.openai_api_key:
        return "needs OPENAI_API_KEY (the Realtime API refuses a connection without it)"
    if not settings.backend(RealtimeOptions).url.startswith(("ws://", "wss://")):
        return "OPENAI_REALTIME_URL must start with ws:// or wss://"
    return ""


class RealtimeBackend(RemoteBackend):
    provider = "openai-realtime"
    bytes_per_ms = 8.0  # mu-law 8 kHz

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.item_ms: dict[str, float] = {}
        """Agent audio received per output item of this session (ms): truncation never
        goes past it, nor names an item of an earlier session."""
        self.item_utterance: dict[str, int] = {}
        self.tools_running = 0
        """Tool calls of this session not yet answered: ``response.create`` waits for them."""
        self.outputs_sent = False
        """A tool output waits for ``response.create``."""
        self.padding_ms = PREFIX_PADDING_MS
        self.responding = False
        """A response is in progress (``response.created`` .. ``response.done``)."""
        self.reply_wanted = False
        """A committed turn waits for the response in progress to end."""
        self.speech_item = ""
        """The input item of the latest ``speech_started``."""
        self.echo_items: deque[str] = deque(maxlen=ECHO_ITEMS)

    async def connect(self) -> None:
        o, key = self.settings.backend(RealtimeOptions), self.settings.agents.openai_api_key
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        ws = await self.open_socket(realtime_url(o.url, o.model), headers)
        await self._expect(ws, "session.created")
        await ws.send_str(
            orjson.dumps(
                session_update(
                    o.model,
                    o.voice,
                    self.settings.speech.endpoint_silence_ms,
                    tools=self.tools().values(),
                )
            ).decode()
        )
        self.padding_ms = padding_in_force(await self._expect(ws, "session.updated"))
        # After a reconnect (or a restart of the Upstream actor) the new session first
        # gets the conversation so far; a new call has none.
        for turn in self.conversation.history[-CONTEXT_TURNS:]:
            await ws.send_str(orjson.dumps(context_item(turn)).decode())

    async def _expect(self, ws: aiohttp.ClientWebSocketResponse, wanted: str) -> dict[str, Any]:
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            event = orjson.loads(msg.data)
            kind = event.get("type") if isinstance(event, dict) else None
            if kind == wanted:
                return event
            if kind == "error":
                raise RemoteFailure(f"{wanted[:-1]} refused: {_error_text(event)}")
        raise RemoteFailure(f"socket closed before {wanted} ({ws.close_code})")

    def on_ready(self) -> None:
        self.item_ms.clear()
        self.item_utterance.clear()
        self.responding = self.reply_wanted = self.outputs_sent = False
        self.tools_running = 0
        self.echo_items.clear()
        conv = self.conversation
        if not conv.greeted:
            conv.greeted = True
            greeting = self.settings.speech.greeting.strip()
            if greeting and not self.outbound:  # outbound: the model answers the callee's "Hello?"
                self.send_json(greet(greeting))

    async def send_audio(self, ws: aiohttp.ClientWebSocketResponse, data: bytes) -> None:
        await ws.send_str(append_audio(data))

    def on_text(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind in _AUDIO_DELTA:
            item = str(event.get("item_id", ""))
            try:
                audio = base64.b64decode(event.get("delta", ""), validate=True)
            except (binascii.Error, TypeError, ValueError):
                raise RemoteFailure(f"{kind}: delta is not base64") from None
            if item not in self.item_ms:
                _keep_last(self.item_ms, KEEP_KEYS - 1)
            self.item_ms[item] = self.item_ms.get(item, 0.0) + len(audio) / 8.0
            self.agent_audio(item, audio)
            if self.utterance is not None and item == self.utterance_key:
                self.item_utterance[item] = self.utterance
                _keep_last(self.item_utterance, KEEP_KEYS)
        elif kind in _AUDIO_DONE:
            if event.get("item_id") == self.utterance_key:
                self.end_utterance()
        elif kind == "input_audio_buffer.speech_started":
            self.speech_item = str(event.get("item_id", ""))
            self.caller_started(speech_onset_ms(event.get("audio_start_ms"), self.padding_ms))
        elif kind == "input_audio_buffer.committed":
            self._committed(str(event.get("item_id", "")))
        elif kind == "conversation.item.input_audio_transcription.completed":
            if event.get("item_id") not in self.echo_items:
                self.heard(str(event.get("transcript", "")))
        elif kind in _TRANSCRIPT_DONE:
            self.said(
                str(event.get("transcript", "")), self.item_utterance.get(str(event.get("item_id", "")))
            )
        elif kind == "response.output_item.done":
            called = function_call(event.get("item"))
            if called is not None:
                self.tools_running += 1
                self.call_tool(*called)
        elif kind == "response.created":
            self.responding = True
        elif kind == "response.done":
            self.responding = False
            self.end_utterance()
            if self.hang_up_reason:
                self.remote_ended(self.hang_up_reason)
            else:
                self._respond_if_due()
        elif kind == "error":
            self.port.note("upstream.remote_error", provider=self.provider, error=_error_text(event))

    def reply_ended(self) -> bool:
        return not self.responding

    def tool_done(self, session: int, call_id: str, outcome: ToolOutcome) -> None:
        if session != self.sessions or not self.ready:
            return  # that session is gone; the new one never issued this call id
        self.tools_running = max(0, self.tools_running - 1)
        self.send_json(function_output(call_id, outcome.for_model()))
        self.outputs_sent = True
        self._respond_if_due()

    def _respond_if_due(self) -> None:
        """``response.create`` once nothing blocks it: no response in progress, no tool
        call of the last one still running, not hanging up."""
        if self.responding or self.tools_running or self.hang_up_reason or self.ended:
            return
        if self.outputs_sent or self.reply_wanted:
            self.outputs_sent = self.reply_wanted = False
            self.send_json(create_response())

    def _committed(self, item: str) -> None:
        """The server closed a caller turn: drop it if it was the agent's echo, else ask
        for the reply (once the response in progress is done)."""
        if item in self.echo_items:
            self.send_json(delete_item(item))
            self.port.note("upstream.echo_turn_dropped", provider=self.provider, item_id=item[:64])
        elif self.responding or self.tools_running:
            self.reply_wanted = True
        else:
            self.send_json(create_response())

    def speech_rejected(self) -> None:
        if self.speech_item:
            self.echo_items.append(self.speech_item)

    def on_interrupted(self, utterance: int, key: str | None, played_ms: int) -> None:
        if self.responding:
            self.send_json(cancel_response())
        if key is None or key not in self.item_ms:
            return  # not ours (or of an earlier session), or it had played to the end
        heard_ms = int(min(played_ms, self.item_ms[key]))
        self.send_json(truncate(key, heard_ms))
        self.port.note("agent.truncated", utterance=utterance, item_id=key, audio_end_ms=heard_ms)


def _keep_last(table: dict[str, Any], n: int) -> None:
    while len(table) > n:
        del table[next(iter(table))]


def _error_text(event: dict[str, Any]) -> str:
    error = event.get("error")
    if isinstance(error, dict):
        return f"{error.get('type', '')} {error.get('code', '') or ''}: {error.get('message', '')}".strip()[
            :300
        ]
    return str(error)[:300]


async def prewarm(settings: Settings) -> None:
    """Before the first call: the fallback's TTS voice (``remote.prewarm``), and the user's
    tools (``TOOLS_URL``), fetched before the first session offers them."""
    await prewarm_remote(settings)
    await load_served(settings.tools)


SPEC = BackendSpec(
    "openai-realtime",
    "OpenAI Realtime, mu-law end to end",
    RealtimeBackend,
    options=RealtimeOptions,
    problem=problem,
    audio=ULAW,
    remote=True,
    prewarm=prewarm,
)
