"""Shared state of one gateway process, reached through a typed ``web.AppKey``."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web

from ..config import Settings
from .calls import CallRegistry
from .events import EventPoster
from .security import SignatureChecker, StreamTokens, public_base
from .vapi_auth import ReplayGuard


@dataclass
class Gateway:
    settings: Settings
    registry: CallRegistry
    signatures: SignatureChecker
    tokens: StreamTokens
    events: EventPoster | None = None
    sockets: set[web.WebSocketResponse] = field(default_factory=set)
    vapi_replays: ReplayGuard = field(default_factory=ReplayGuard)

    @classmethod
    def from_settings(cls, settings: Settings) -> "Gateway":
        return cls(
            settings=settings,
            registry=CallRegistry(settings.call_history),
            signatures=SignatureChecker(settings.twilio_auth_token),
            tokens=StreamTokens(settings.stream_secret, settings.stream_token_ttl_s),
            events=EventPoster(settings.events_url, settings.events_secret) if settings.events_url else None,
        )

    def public_base(self, request: web.Request) -> str:
        return public_base(
            request.headers,
            request.scheme,
            request.host,
            self.settings.public_url,
            self.settings.trust_proxy,
        )


GATEWAY = web.AppKey("gateway", Gateway)
