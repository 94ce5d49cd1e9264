"""The event loop a serving process runs: uvloop or the standard library's.

``run(main, choice)`` runs the coroutine ``main`` to completion on a new loop, like
``asyncio.run``. ``choice`` is ``Settings.event_loop``: ``uvloop``, ``asyncio``, or ``auto``
(uvloop where it is installed). uvloop moves the loop, its timers and its socket transports
into C (libuv) and changes nothing else (what it saves: docs/benchmarks.md). Its timers have
1 ms resolution; the call path's ticker never fires early in the call's clock
(``actors.runtime.Ticker``), so pacing is unaffected.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def uvloop_installed() -> bool:
    return importlib.util.find_spec("uvloop") is not None


def resolve(choice: str) -> str:
    """``uvloop`` or ``asyncio``: what ``choice`` means on this machine."""
    if choice == "auto":
        return "uvloop" if uvloop_installed() else "asyncio"
    return choice


def run(main: Coroutine[Any, Any, T], choice: str = "auto") -> T:
    if resolve(choice) == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)


def new_loop(choice: str = "auto") -> asyncio.AbstractEventLoop:
    """A new loop of that kind (for APIs that take one, e.g. aiohttp's ``run_app``)."""
    if resolve(choice) == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()
