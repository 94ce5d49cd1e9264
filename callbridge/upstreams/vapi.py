"""Vapi's WebSocket transport behind the Upstream interface.

Each (re)connection creates a Vapi call: ``POST {VAPI_API_URL}/call`` (``Authorization:
Bearer VAPI_API_KEY``) with ``assistantId`` (or an inline ``assistant``) and
``transport: {provider: "vapi.websocket", audioFormat: {format: "pcm_s16le", container:
"raw", sampleRate: 16000}}`` (or, with ``VAPI_AUDIO=mulaw``, ``{format: "mulaw",
container: "raw", sampleRate: 8000}``: Twilio's bytes both ways, no transcoding); the answer's ``id`` is bound to our CallSid (Vapi's
server-URL webhooks name it, ``gateway/vapi_webhook.py``) and its
``transport.websocketCallUrl`` is opened. On that socket:

- binary frames carry audio both ways, 16 kHz s16le mono: the Codec's ``CallerAudio`` goes
  out as is; the agent's audio is handed to the Codec at 16 kHz (it resamples to 8 kHz).
  With mu-law the caller's frames pass through and the agent's bytes are only framed;
- text frames carry JSON control. We send ``{"type": "end-call"}`` when the caller hangs up.
  From Vapi: ``speech-update`` (user started: a possible barge-in, BargeIn decides;
  assistant stopped: the utterance is complete), ``user-interrupted``, ``transcript``
  (final ones go to the timeline), and the end of the call (``hangup``, a ``status-update``
  of ``ended``, or a clean close): the call ends once what the agent said has played.

Telephony: Vapi cannot transfer or hang up a call it does not own, so with
``phone-call-control`` in the assistant's ``serverMessages`` it asks the server URL
(``gateway/vapi_actions.py``): a ``forward`` becomes the bridge's ``transfer`` action, a
``hang-up`` (its ``endCall`` tool) reaches this back end (``hang_up_requested``): the call
ends once the goodbye has played.

Vapi runs its own VAD and stops talking when the caller does; what it had already sent is
still queued at Twilio, so a barge-in ``clear``s it. Barge-in does not depend on Vapi
saying so: our own VAD (``SpeechWatch``, while the agent may be audible) feeds BargeIn
too; whichever is first cuts. Utterance boundaries come from
``speech-update``; without them, ``AGENT_GAP_S`` without agent audio closes one.
Vapi documents no way back into a call whose socket dropped, so a reconnect creates a new
Vapi call, and only once the old one is ended: through Live Call Control (``POST`` of
``{"type": "end-call"}`` to the ``monitor.controlUrl`` that ``POST /call`` answered; the
assistant's ``monitorPlan.controlEnabled`` must stay on, its default), or found ended by
``GET /call/{id}``. If neither, the back end gives up (apology) rather than leave two paid
calls open for one phone call. The call that may still be running is kept in the
``Conversation`` (and its checkpoint), so a restarted or resumed back end ends it too. The
new call waits for the caller to speak (``firstMessageMode``), so the greeting is not
repeated; it starts without the earlier conversation (Vapi has no way to hand it over on
the transport).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote

import aiohttp
import numpy as np
import orjson

from ..actors import messages as m
from ..agents._http import excerpt, redact
from ..codecs.g711 import ulaw_decode
from ..options import check, option
from ..speech import vad
from .base import PCM16K, ULAW, BackendSpec
from .remote import RemoteBackend, RemoteFailure, RemoteUnrecoverable
from .remote import prewarm as prewarm_remote
from .speechwatch import SpeechWatch

if TYPE_CHECKING:
    from ..config import Settings

AGENT_GAP_S = 0.5
WATCH_AFTER_S = 1.0
"""Our VAD keeps watching this long after the agent's last audio played (BargeIn's grace)."""
AUDIO_FORMATS = {
    "pcm_s16le": {"format": "pcm_s16le", "container": "raw", "sampleRate": 16000},
    "mulaw": {"format": "mulaw", "container": "raw", "sampleRate": 8000},
}
WAIT_FOR_USER = "assistant-waits-for-user"
END_CALL = {"type": "end-call"}
"""Vapi's control message that ends a call (on the socket, or POSTed to its controlUrl)."""


# -- settings ------------------------------------------------------------------------------


@dataclass(frozen=True)
class VapiOptions:
    title: ClassVar[str] = "Vapi back end (`UPSTREAM=vapi`)"
    api_url: str = option(
        "https://api.vapi.ai",
        "VAPI_API_URL",
        "`UPSTREAM=vapi`: API base; calls are created with `POST {VAPI_API_URL}/call`.",
    )
    api_key: str = option("", "VAPI_API_KEY", "`UPSTREAM=vapi`: private API key (bearer).", secret=True)
    assistant_id: str = option(
        "", "VAPI_ASSISTANT_ID", "`UPSTREAM=vapi`: the assistant that answers (or `VAPI_ASSISTANT`)."
    )
    assistant: str = option(
        "",
        "VAPI_ASSISTANT",
        "`UPSTREAM=vapi`: an inline assistant, as JSON, used when `VAPI_ASSISTANT_ID` is unset.",
    )
    audio: str = option(
        "pcm_s16le",
        "VAPI_AUDIO",
        "`UPSTREAM=vapi`: audio on the transport: `pcm_s16le` (16 kHz; the Codec resamples) or `mulaw` "
        "(8 kHz, Twilio's bytes passed through untouched).",
    )

    def __post_init__(self) -> None:
        check(self.audio in AUDIO_FORMATS, f"VAPI_AUDIO must be pcm_s16le or mulaw, not {self.audio!r}")


def problem(settings: Settings) -> str:
    """Why a Vapi call cannot be made with these settings ("" when it can)."""
    o = settings.backend(VapiOptions)
    if not o.api_key:
        return "needs VAPI_API_KEY"
    if not (o.assistant_id or o.assistant):
        return "needs VAPI_ASSISTANT_ID or VAPI_ASSISTANT"
    if o.assistant and not o.assistant_id:
        try:
            if not isinstance(json.loads(o.assistant), dict):
                return "VAPI_ASSISTANT must be a JSON object"
        except ValueError as exc:
            return f"VAPI_ASSISTANT is not JSON: {exc}"
    if not o.api_url.startswith(("http://", "https://")):
        return "VAPI_API_URL must start with http:// or https://"
    return ""


def caller_format(settings: Settings) -> str:
    return ULAW if settings.backend(VapiOptions).audio == "mulaw" else PCM16K


# -- the protocol (pure) -------------------------------------------------------------------


def create_call_body(options: VapiOptions, reconnect: bool = False) -> dict[str, Any]:
    """The JSON of ``POST /call`` for a WebSocket-transport call."""
    audio = dict(AUDIO_FORMATS[options.audio])
    body: dict[str, Any] = {"transport": {"provider": "vapi.websocket", "audioFormat": audio}}
    if options.assistant_id:
        body["assistantId"] = options.assistant_id
        if reconnect:
            body["assistantOverrides"] = {"firstMessageMode": WAIT_FOR_USER}
    else:
        assistant = orjson.loads(options.assistant)
        if reconnect:
            assistant["firstMessageMode"] = WAIT_FOR_USER
        body["assistant"] = assistant
    return body


def parse_created(call: Any) -> tuple[str, str, str]:
    """``(vapi call id, websocketCallUrl, monitor.controlUrl or "")`` from ``POST /call``'s
    answer."""
    if not isinstance(call, dict):
        raise RemoteFailure("POST /call answer is not a JSON object")
    call_id = call.get("id")
    transport = call.get("transport")
    url = transport.get("websocketCallUrl") if isinstance(transport, dict) else None
    if not isinstance(call_id, str) or not call_id or len(call_id) > 200:
        raise RemoteFailure("POST /call answer has no call id")
    if not isinstance(url, str) or not url.startswith(("ws://", "wss://")):
        raise RemoteFailure("POST /call answer has no transport.websocketCallUrl")
    monitor = call.get("monitor")
    control = monitor.get("controlUrl") if isinstance(monitor, dict) else None
    if not isinstance(control, str) or not control.startswith(("http://", "https://")):
        control = ""
    return call_id, url, control


def ends_call(event: dict[str, Any]) -> bool:
    kind = event.get("type")
    return kind in ("hangup", "end-of-call-report") or (
        kind == "status-update" and event.get("status") == "ended"
    )


# -- the back end --------------------------------------------------------------------------


class VapiBackend(RemoteBackend):
    provider = "vapi"
    bytes_per_ms = 32.0  # 16 kHz s16le
    normal_close_ends_call = True

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.options = self.settings.backend(VapiOptions)
        self.mulaw = self.options.audio == "mulaw"
        self.bytes_per_ms = 8.0 if self.mulaw else 32.0
        self.turn = 1
        self.odd = b""
        self.last_audio = 0.0
        self.gap_watch: asyncio.Task[None] | None = None
        self.remote_id = ""
        self.release_error = ""
        self.watch = SpeechWatch(self.settings.speech, self.port.caller_speech, 8000 if self.mulaw else 16000)
        self.watched = False

    async def connect(self) -> None:
        if self.open_call:
            await self.release_remote()
            if self.open_call:
                raise RemoteUnrecoverable(
                    f"Vapi call {self.open_call} could not be ended ({self.release_error}); not starting a second one"
                )
        url = self.options.api_url.rstrip("/") + "/call"
        # A reconnect, or an outbound call (the callee says "Hello?" first): wait for the user.
        body = create_call_body(self.options, reconnect=self.conversation.greeted or self.outbound)
        async with self.new_http().post(url, json=body, headers=self._api_headers()) as resp:
            if resp.status >= 300:
                raise RemoteFailure(f"POST {redact(url)} answered {resp.status}: {await excerpt(resp)}")
            try:
                call = await resp.json(content_type=None)
            except ValueError:
                raise RemoteFailure(f"POST {redact(url)} answer is not JSON") from None
        self.remote_id, ws_url, control_url = parse_created(call)
        self.conversation.remote_call = (self.provider, self.remote_id, control_url)
        self.port.bound(self.provider, self.remote_id)
        await self.open_socket(ws_url)

    def on_ready(self) -> None:
        self.conversation.greeted = True  # the assistant's first message: once per call

    def caller_audio(self, msg: m.CallerAudio) -> None:
        super().caller_audio(msg)
        self._watch(msg.pcm, None, msg.at)

    def caller_ulaw(self, msg: m.CallerUlaw) -> None:
        super().caller_ulaw(msg)
        self._watch(None, msg.payload, msg.at)

    def _watch(self, pcm: bytes | None, ulaw: bytes | None, at: float) -> None:
        now = self.port.now()
        if self.stopping:
            return
        if self._agent_may_be_audible(now):
            self.watched = True
            self.watch.feed(
                np.frombuffer(pcm, dtype="<i2") if pcm is not None else ulaw_decode(ulaw or b""), at
            )
        elif self.watched:
            self.watched = False
            self.watch.reset()

    def _agent_may_be_audible(self, now: float) -> bool:
        """From the agent's first audio until its last mark came back, plus a second."""
        return (
            self.utterance is not None or self.unplayed() or now - self.playback.quiet_since < WATCH_AFTER_S
        )

    def speech_rejected(self) -> None:
        self.watch.reset()

    def stop(self) -> None:
        super().stop()
        self.watch.close()

    async def send_audio(self, ws: aiohttp.ClientWebSocketResponse, data: bytes) -> None:
        await ws.send_bytes(data)

    def _api_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.options.api_key}"}

    @property
    def open_call(self) -> str:
        """The Vapi call that may still be running (created, not known to have ended),
        kept in the Conversation so that a restarted or resumed back end ends it too."""
        held = self.conversation.remote_call
        return held[1] if held is not None and held[0] == self.provider else ""

    def _ended_remote_call(self) -> None:
        if self.open_call:
            self.conversation.remote_call = None

    async def hang_up_remote(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        await ws.send_str(orjson.dumps(END_CALL).decode())
        self._ended_remote_call()

    async def release_remote(self) -> None:
        """End the Vapi call through its controlUrl unless it has ended already."""
        if self.ended:
            self._ended_remote_call()
        call_id = self.open_call
        if not call_id:
            return
        remote = self.conversation.remote_call
        control_url = remote[2] if remote else None
        if control_url:
            self.release_error = await self._end_through_control(control_url)
        else:
            self.release_error = "POST /call answered no monitor.controlUrl"
        if self.release_error and not await self._has_ended(call_id):
            return
        self._ended_remote_call()
        self.port.note("upstream.released", provider=self.provider, remote_id=call_id)

    async def _end_through_control(self, url: str) -> str:
        """POST ``end-call`` to the call's controlUrl: why it failed ("" if it did not)."""
        try:
            async with self.new_http().post(url, json=END_CALL) as resp:
                return f"controlUrl answered {resp.status}" if resp.status >= 300 else ""
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            return f"controlUrl: {type(exc).__name__}"

    async def _has_ended(self, call_id: str) -> bool:
        """Whether ``GET /call/{id}`` says the call has ended."""
        url = f"{self.options.api_url.rstrip('/')}/call/{quote(call_id, safe='')}"
        try:
            async with self.new_http().get(url, headers=self._api_headers()) as resp:
                call = await resp.json(content_type=None) if resp.status == 200 else None
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError):
            return False
        return isinstance(call, dict) and call.get("status") == "ended"

    def on_binary(self, data: bytes) -> None:
        if self.mulaw:
            self.agent_audio(f"turn{self.turn}", data)
            self._audio_arrived()
            return
        if self.odd:
            data = self.odd + data
        cut = len(data) - len(data) % 2
        data, self.odd = data[:cut], data[cut:]
        self.agent_audio(f"turn{self.turn}", data, 16000)
        self._audio_arrived()

    def _audio_arrived(self) -> None:
        self.last_audio = self.port.now()
        if self.gap_watch is None or self.gap_watch.done():
            self.gap_watch = self.port.spawn(self._watch_gap(), "vapi-gap")

    def on_text(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        role = event.get("role")
        if ends_call(event):
            self.remote_ended(f"vapi: {kind}")
        elif kind == "speech-update":
            if role == "user" and event.get("status") == "started":
                self.caller_started()
            elif role == "assistant" and event.get("status") == "stopped":
                self._next_turn()
        elif kind == "user-interrupted":
            self.caller_started()
        elif kind == "transcript" and event.get("transcriptType") == "final":
            text = str(event.get("transcript", ""))
            if role == "user":
                self.heard(text)
            elif role == "assistant":
                self.said(text, self.last_opened or None)

    def hang_up_requested(self, reason: str) -> None:
        """Vapi delegated the hang-up (``phone-call-control``): the call ends once the
        goodbye has played; the Vapi call stays up until then and is ended with it
        (``end-call`` on the socket, as at every end of call)."""
        self.port.note("upstream.hang_up_requested", provider=self.provider, reason=reason[:200])
        self.end_utterance()
        if self.unplayed():
            self.conversation.hang_up_after = self.last_opened
        else:
            self.port.end_call(reason[:200])

    def on_interrupted(self, utterance: int, key: str | None, played_ms: int) -> None:
        self.turn += 1  # what comes next is a new reply

    def _next_turn(self) -> None:
        self.end_utterance()
        self.turn += 1
        self.odd = b""

    async def _watch_gap(self) -> None:
        while True:
            await asyncio.sleep(AGENT_GAP_S / 2)
            if self.port.now() - self.last_audio >= AGENT_GAP_S:
                if self.utterance is not None:
                    self._next_turn()
                return


async def prewarm(settings: Settings) -> None:
    """What the first Vapi call would load on the event loop (~0.2 s): the VAD model of
    its ``SpeechWatch`` (onnxruntime and its session) and the fallback's TTS voice."""
    await prewarm_remote(settings)
    vad.preload()


SPEC = BackendSpec(
    "vapi",
    "Vapi WebSocket transport",
    VapiBackend,
    options=VapiOptions,
    problem=problem,
    audio=caller_format,
    remote=True,
    prewarm=prewarm,
)
