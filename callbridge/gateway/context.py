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
from .access import FAILED_AUTH_BURST, FAILED_AUTH_RATE, ConsoleAccess
from .calls import CallRegistry
from .events import EventPoster
from .hub import Hub
from .limits import LogTally, SourceRates, SourceSlots, TokenBucket, source_address
from .security import SignatureChecker, StreamTokens, public_base
from .store import CallStore, LocalStore
from .twilio_rest import TwilioError, TwilioRest
from .vapi_auth import ReplayGuard, WebhookAuth, auth_from

log = logging.getLogger("callbridge.gateway")


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
    dialing: OrderedDict[str, float] = field(default_factory=OrderedDict)
    """Outbound calls placed (``POST /calls``) whose webhook has not come yet: CallSid ->
    when (monotonic s). They count against ``MAX_CALLS`` until it comes, Twilio reports
    them over, or ``gateway.dial.DIALING_S`` passed."""
    dial_rate: TokenBucket | None = None
    """Outbound calls placed, all callers together (``DIAL_RATE``)."""

    @classmethod
    def from_settings(cls, settings: Settings, store: CallStore | None = None) -> Gateway:
        hub = Hub()
        registry = CallRegistry(
            settings.server.call_history, on_change=lambda summary: hub.publish("call", summary)
        )
        return cls(
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

    def watch(self, call_sid: str, index: int, entry: dict[str, Any]) -> None:
        """A call's timeline event, to the console's live feed."""
        self.hub.publish("note", {"callSid": call_sid, "i": index, "e": entry})


GATEWAY = web.AppKey("gateway", Gateway)
