"""Voice-AI back ends behind one interface (``base.Backend``), driven by the Upstream actor.

``backend_class(name)`` for each ``UPSTREAM`` value, imported on first use;
``caller_format(name, settings)``: what the back end wants of the caller's audio:
``"pcm16k"`` (the Codec decodes and resamples) or ``"ulaw"`` (Twilio's bytes, untouched).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from ..config import Settings

_BACKENDS = {
    "embedded": ("embedded", "EmbeddedBackend", "pcm16k"),
    "vapi": ("vapi", "VapiBackend", "pcm16k"),
    "openai-realtime": ("openai_realtime", "RealtimeBackend", "ulaw"),
    "echo": ("echo", "EchoBackend", "pcm16k"),
}


def caller_format(name: str, settings: Settings) -> str:
    if name == "vapi" and settings.vapi_audio == "mulaw":
        return "ulaw"
    return _BACKENDS[name][2]


def backend_class(name: str) -> Any:
    module, cls, _ = _BACKENDS[name]
    return getattr(import_module(f"{__name__}.{module}"), cls)
