"""The first call of a fresh process, with its event loop watched: ``python -m
tests.first_call vapi|vapi-mulaw|openai-realtime`` prints ``{"worst_ms": ...}`` (the
longest the loop was blocked during the call, ``conftest.LoopWatch``; the server's
start-up, where back ends prewarm, is not counted).

A process of its own, because what a first call would load (a VAD model, a TTS voice)
is process-wide: in the test process an earlier test has loaded it already.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator

import orjson

from callbridge.cli import Server
from callbridge.config import Settings
from callbridge.sim.caller import SimulatedCall

from .conftest import LoopWatch, speech_8k
from .fake_vapi import FakeVapi
from .remote_fakes import FakeRealtime

BACKENDS = ("vapi", "vapi-mulaw", "openai-realtime")


@contextlib.asynccontextmanager
async def remote(backend: str) -> AsyncIterator[dict[str, object]]:
    """The fake remote running, and the server settings that point at it."""
    common: dict[str, object] = {"host": "127.0.0.1", "port": 0, "upstream_timeout_s": 3.0}
    if backend == "openai-realtime":
        realtime = FakeRealtime()
        async with realtime.running():
            yield {
                **common,
                "upstream": "openai-realtime",
                "openai_realtime_url": realtime.url,
                "openai_api_key": "sk-test",
            }
        return
    vapi = FakeVapi()
    async with vapi.running() as base:
        yield {
            **common,
            "upstream": "vapi",
            "vapi_api_url": base,
            "vapi_api_key": vapi.api_key,
            "vapi_assistant_id": "asst_test",
            "vapi_audio": "mulaw" if backend == "vapi-mulaw" else "pcm_s16le",
        }


async def first_call(backend: str) -> float:
    """The worst loop stall (s) of one call, the first of a fresh server in this process."""
    hello = speech_8k("Hello, I need some help.")  # synthesised before the watch starts
    watch = LoopWatch()
    watch.start()
    async with remote(backend) as settings:
        server = Server(Settings(**settings))
        watch.starting += 1
        try:
            url = await server.start()
        finally:
            watch.starting -= 1
        try:
            await SimulatedCall(url, audio=[hello], hold_s=1.0).run()
        finally:
            await server.stop()
    await watch.stop()
    return watch.worst


def main() -> None:
    if len(sys.argv) != 2 or sys.argv[1] not in BACKENDS:
        sys.exit(f"usage: python -m tests.first_call {'|'.join(BACKENDS)}")
    worst = asyncio.run(first_call(sys.argv[1]))
    print(orjson.dumps({"worst_ms": round(worst * 1000.0, 1)}).decode())


if __name__ == "__main__":
    main()
