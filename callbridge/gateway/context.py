"""Shared state of one gateway process, reached through a typed ``web.AppKey``."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from ..actors.supervisor import CHILDREN
from ..config import Settings
from ..metrics import Metrics
from ..speech.engines import backlog as speech_backlog
from .access import FAILED_AUTH_BURST, FAILED_AUTH_RATE, ConsoleAccess
from .calls import CallRegistry
from .events import EventPoster
from .hub import Hub
from .limits import LogTally, SourceRates, SourceSlots, TokenBucket, source_address
from .recordings import Recordings
from .security import SignatureChecker, StreamTokens, public_base
from .store import CallStore, LocalStore
from .telephony import Telephony
from .twilio_rest import TwilioError, TwilioRest
from .vapi_auth import ReplayGuard, WebhookAuth, auth_from

log = logging.getLogger("callbridge.gateway")

MAX_PARTS_CARRIED = 100
RECORDING_CALLBACK_PATH = "/twilio/recording-status"
"""Where Twilio POSTs ``RECORDING=twilio``'s status (``gateway/recording_routes.py``)."""


@dataclass
class Gateway:
    settings: Settings
    registry: CallRegistry
    signatures: SignatureChecker
    tokens: StreamTokens
    store: CallStore
    console_tokens: StreamTokens
    """Stream tokens the console mints for its softphone: keyed apart from the webhook's,
    so each kind is good only on its own socket (``/media`` vs ``/console/media``)."""
    metrics: Metrics
    hub: Hub
    access: ConsoleAccess
    webhook_rates: SourceRates
    auth_failures: SourceRates
    """Refused operator credentials per source (``gateway/access.py``)."""
    socket_slots: SourceSlots
    """Open media sockets per source address (``MAX_SOCKETS_PER_SOURCE``)."""
    events: EventPoster | None = None
    sockets: set[web.WebSocketResponse] = field(default_factory=set)
    sessions: set[Any] = field(default_factory=set)
    """Every open media socket's ``StreamSession``: what the reaper sweeps."""
    shard: dict[str, Any] | None = None
    """Production mode: this shard's index, node and control store."""
    accepting: bool = True
    """False while draining: new calls are turned away, running ones carry on."""
    vapi_replays: ReplayGuard = field(default_factory=ReplayGuard)
    vapi_auth: WebhookAuth = field(default_factory=WebhookAuth)
    vapi_log: LogTally = field(default_factory=LogTally)
    """How often each kind of refused or unexpected Vapi webhook was seen."""
    twilio: TwilioRest | None = None
    background: set[asyncio.Task[None]] = field(default_factory=set)
    recordings: Recordings | None = None
    """``RECORDING=local``: this process's recordings (``gateway/recordings.py``)."""
    carried: OrderedDict[str, list[dict[str, Any]]] = field(default_factory=OrderedDict)
    """``recording.ready`` of calls not live here when it came: a stream that resumes on
    this process carries them into its timeline (``Call.carry_over``). Bounded."""
    webhook_base: str = ""
    """The public base URL of Twilio's latest signed webhook (the telephony actions' TwiML
    points back here when ``PUBLIC_URL`` is not set)."""
    dialing: OrderedDict[str, float] = field(default_factory=OrderedDict)
    """Outbound calls placed (``POST /calls``) whose webhook has not come yet: CallSid ->
    when (monotonic s). They count against ``MAX_CALLS`` until it comes, Twilio reports
    them over, or ``gateway.dial.DIALING_S`` passed."""
    dial_rate: TokenBucket | None = None
    """Outbound calls placed, all callers together (``DIAL_RATE``)."""
    telephony: Telephony = field(init=False)

    def __post_init__(self) -> None:
        self.telephony = Telephony(self)

    @classmethod
    def from_settings(cls, settings: Settings, store: CallStore | None = None) -> Gateway:
        hub = Hub()
        registry = CallRegistry(
            settings.server.call_history, on_change=lambda summary: hub.publish("call", summary)
        )
        gw = cls(
            settings=settings,
            store=store if store is not None else LocalStore(settings.server.call_history, time.monotonic),
            registry=registry,
            signatures=SignatureChecker(settings.twilio.auth_token, settings.twilio.shared_keys),
            tokens=StreamTokens(settings.twilio.stream_secret, settings.twilio.stream_token_ttl_s),
            console_tokens=StreamTokens(
                settings.twilio.stream_secret + b"/console", settings.twilio.stream_token_ttl_s
            ),
            metrics=Metrics(registry.live_frames, [c.role for c in CHILDREN]),
            hub=hub,
            vapi_auth=auth_from(settings.vapi_webhook),
            access=ConsoleAccess(settings.server.console_token, settings.server.mode),
            webhook_rates=SourceRates(settings.limits.webhook_rate, settings.limits.webhook_burst),
            auth_failures=SourceRates(FAILED_AUTH_RATE, FAILED_AUTH_BURST),
            socket_slots=SourceSlots(settings.limits.max_sockets_per_source),
            events=EventPoster(settings.events.url, settings.events.secret) if settings.events.url else None,
            dial_rate=(
                TokenBucket(settings.outbound.dial_rate, settings.outbound.dial_burst, time.monotonic())
                if settings.outbound.dial_rate > 0
                else None
            ),
            twilio=(
                TwilioRest(settings.twilio.account_sid, settings.twilio.auth_token, settings.twilio.api_url)
                if settings.twilio.account_sid and settings.twilio.auth_token
                else None
            ),
        )
        rec = settings.recordings
        if rec.mode == "local":
            gw.recordings = Recordings(rec.dir, rec.max_mb, rec.retention_h, rec.max_call_s, gw.metrics)
            gw.recordings.ready = lambda call_sid, info: gw.recording_ready(call_sid, "local", info)
        return gw

    def complete_call(self, call_sid: str) -> None:
        """End the call at Twilio too (REST), in the background; the outcome goes to the
        call's timeline (``twilio.completed`` or ``twilio.error``)."""
        if self.twilio is None:
            return
        task = asyncio.get_running_loop().create_task(self._complete(self.twilio, call_sid))
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def _complete(self, twilio: TwilioRest, call_sid: str) -> None:
        try:
            status = await twilio.complete(call_sid)
        except TwilioError as exc:
            log.warning("call %s: completing it through Twilio's API failed: %s", call_sid, exc)
            self.registry.note(call_sid, "twilio.error", error=str(exc)[:300])
        else:
            self.registry.note(call_sid, "twilio.completed", status=status)

    def recording_ready(self, call_sid: str, mode: str, info: dict[str, Any]) -> None:
        """A call's recording is complete (a local file, or Twilio's): ``recording.ready``
        in its timeline (live or kept ended), the events poster, the console, the metric."""
        self.metrics.recordings_ready.labels(mode).inc()
        data = {"mode": mode, **info}
        call = self.registry.live.get(call_sid)
        if call is not None:
            call.note("recording.ready", **data)
            return
        self.carried.setdefault(call_sid, []).append(data)
        self.carried.move_to_end(call_sid)
        while len(self.carried) > self.settings.server.call_history:
            self.carried.popitem(last=False)
        if not self.registry.note(call_sid, "recording.ready", **data):
            log.info("call %s: recording ready, but the call is not known here", call_sid)
        else:
            timeline = self.registry.ended[call_sid]["timeline"]
            if timeline and timeline[-1]["event"] == "recording.ready":
                self.watch(call_sid, len(timeline) - 1, timeline[-1])
        if self.events is not None:
            self.events.publish("recording.ready", call_sid, data)

    def carry_over(self, call: Any) -> None:
        """A stream of ``call`` started here: what came for its earlier stream after that
        one ended goes into its timeline."""
        for data in self.carried.pop(call.call_sid, ())[:MAX_PARTS_CARRIED]:
            call.carry_over("recording.ready", data)

    def start_twilio_recording(self, call_sid: str, public_base: str) -> None:
        """``RECORDING=twilio``: start Twilio's dual-channel recording of the call, in the
        background; ``recording.started`` (its RecordingSid) or ``recording.error`` follows."""
        if self.twilio is None:
            return
        task = asyncio.get_running_loop().create_task(
            self._start_recording(self.twilio, call_sid, public_base + RECORDING_CALLBACK_PATH)
        )
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def _start_recording(self, twilio: TwilioRest, call_sid: str, callback_url: str) -> None:
        try:
            sid = await twilio.start_recording(call_sid, callback_url)
        except TwilioError as exc:
            log.warning("call %s: starting Twilio's recording failed: %s", call_sid, exc)
            self.registry.note(call_sid, "recording.error", mode="twilio", error=str(exc)[:300])
        else:
            self.registry.note(call_sid, "recording.started", mode="twilio", recordingSid=sid)

    def public_base(self, request: web.Request) -> str:
        return public_base(
            request.headers,
            request.scheme,
            request.host,
            self.settings.server.public_url,
            self.settings.server.trust_proxy,
        )

    def source(self, request: web.Request) -> str:
        """The address per-source limits are keyed by."""
        return source_address(request.remote, request.headers, self.settings.server.trust_proxy)

    def at_capacity(self) -> bool:
        return 0 < self.settings.limits.max_calls <= len(self.registry.live)

    def busy_reason(self) -> str | None:
        """Why a new call would be turned away busy now (``MAX_CALLS`` reached, or this
        process's speech workers behind: a new caller would make every caller wait
        longer); None: it is welcome."""
        if self.at_capacity():
            return f"{len(self.registry.live)} live calls, MAX_CALLS"
        jobs = speech_backlog()
        if jobs is not None:
            return f"the speech workers have {jobs} jobs in hand (SPEECH_WORKERS)"
        return None

    def watch(self, call_sid: str, index: int, entry: dict[str, Any]) -> None:
        """A call's timeline event, to the console's live feed."""
        self.hub.publish("note", {"callSid": call_sid, "i": index, "e": entry})


GATEWAY = web.AppKey("gateway", Gateway)
