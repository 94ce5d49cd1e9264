"""Voice-AI back ends: the registry, one ``base.BackendSpec`` per ``UPSTREAM`` value.

Each back end's module declares its spec (``SPEC``: its ``Backend`` class, its own option
group, what it needs to run, the caller audio it wants); ``BACKENDS`` lists them, and
``config.Settings``, the webhook's ``?upstream=`` check and the call's actors all read it
from here. Adding a back end: write its module (options, ``Backend``, ``SPEC``) and add
``SPEC`` to ``BACKENDS``.

``choose(settings, parameters)`` resolves one call's back end, once (the supervisor hands
the result to the Codec and the Upstream).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import echo, embedded, openai_realtime, vapi
from .base import BackendSpec

if TYPE_CHECKING:
    from ..config import Settings

BACKENDS: dict[str, BackendSpec] = {
    spec.name: spec for spec in (embedded.SPEC, vapi.SPEC, openai_realtime.SPEC, echo.SPEC)
}


def unknown() -> str:
    """The refusal of a name that is no back end: the list of those there are."""
    return f"unknown back end (one of {', '.join(BACKENDS)})"


def problem(settings: Settings, name: str) -> str:
    """Why back end ``name`` cannot take a call with ``settings`` ("" when it can)."""
    spec = BACKENDS.get(name)
    return unknown() if spec is None else spec.problem(settings)


@dataclass(frozen=True)
class Choice:
    """One call's back end, and why a requested other one was refused ("" if none was)."""

    spec: BackendSpec
    refused: str = ""


def choose(settings: Settings, parameters: Mapping[str, str]) -> Choice:
    """The back end of one call: the stream parameter ``upstream`` if given and usable,
    else ``UPSTREAM``."""
    default = BACKENDS[settings.backends.upstream]
    wanted = parameters.get("upstream", "").strip()
    if not wanted or wanted == default.name:
        return Choice(default)
    why = problem(settings, wanted)
    if why:
        return Choice(default, f"upstream {wanted[:40]!r} refused: {why}")
    return Choice(BACKENDS[wanted])
