"""Shared state of one gateway process, reached through a typed ``web.AppKey``."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from ..config import Settings
from .calls import CallRegistry
from .events import EventPoster
from .security import SignatureChecker, StreamTokens, public_base
from .store import CallStore, LocalStore


@dataclass
class Gateway:
    settings: Settings
    registry: CallRegistry
    signatures: SignatureChecker
    tokens: StreamTokens
    store: CallStore
    events: EventPoster | None = None
    sockets: set[web.WebSocketResponse] = field(default_factory=set)
    shard: dict[str, Any] | None = None
    """Production mode: this shard's index, node and control store."""
    accepting: bool = True
    """False while draining: new calls are turned away, running ones carry on."""

    @classmethod
    def from_settings(cls, settings: Settings, store: CallStore | None = None) -> "Gateway":
        return cls(
            settings=settings,
            store=store if store is not None else LocalStore(settings.call_history, time.monotonic),
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
