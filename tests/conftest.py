"""Shared fixtures: a real gateway on a loopback port, and synthesised caller audio."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import numpy as np
import pytest

from callbridge.cli import Server
from callbridge.config import Settings
from callbridge.speech.tts import EspeakTTS
from callbridge.testing.audio import speech

MAX_LOOP_STALL_S = 0.5
"""A test fails if the event loop was blocked longer than this (generous: CI is noisy)."""


class LoopWatch:
    """Ticks every 10 ms and records the worst lateness: something blocked the loop.
    A tick that overlaps a server's start-up (``starting``: the one-off warm-up of the
    speech models, before the server takes calls) is not counted."""

    def __init__(self) -> None:
        self.worst = 0.0
        self.starting = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            t, during_start = time.monotonic(), self.starting
            await asyncio.sleep(0.01)
            if not (during_start or self.starting):
                self.worst = max(self.worst, time.monotonic() - t - 0.01)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


StartServer = Callable[..., Awaitable[str]]


@pytest.fixture
async def start_server() -> AsyncIterator[StartServer]:
    """``url = await start_server(**settings)``: a real gateway on 127.0.0.1:<free port>."""
    servers: list[Server] = []
    watch = LoopWatch()
    watch.start()

    async def start(**overrides: object) -> str:
        values = {"host": "127.0.0.1", "port": 0, "check_messages": True, **overrides}
        server = Server(Settings(**values))  # type: ignore[arg-type]
        servers.append(server)
        watch.starting += 1
        try:
            return await server.start()
        finally:
            watch.starting -= 1

    yield start
    for server in servers:
        await server.stop()
    await watch.stop()
    assert watch.worst < MAX_LOOP_STALL_S, f"event loop blocked for {watch.worst * 1000:.0f} ms"


_speech_cache: dict[str, np.ndarray] = {}


def speech_8k(text: str, voice: str = "en-us") -> np.ndarray:
    """Caller audio: ``text`` spoken by the embedded TTS, as int16 at 8 kHz."""
    key = f"{voice}:{text}"
    if key not in _speech_cache:
        _speech_cache[key] = speech(EspeakTTS(voice=voice, rate_wpm=150), text)
    return _speech_cache[key]


def events(result, name: str) -> list[dict]:
    """A simulated call's timeline events called ``name``, in order."""
    return [e for e in result.record["timeline"] if e["event"] == name]


def rms(pcm: np.ndarray) -> float:
    x = pcm.astype(np.float64)
    return float(np.sqrt(np.mean(x * x))) if len(x) else 0.0


async def inject_fault(url: str, call_sid: str, child: str) -> None:
    """``POST /calls/{callSid}/fault?child=`` (``FAULT_INJECTION``): ``child`` fails
    (``socket``: the stream's connection drops)."""
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{url}/calls/{call_sid}/fault?child={child}") as resp,
    ):
        assert resp.status == 200


async def until(done: Callable[[], bool], limit_s: float = 10.0) -> None:
    """Poll ``done`` every 20 ms until it is true or ``limit_s`` has passed."""
    for _ in range(round(limit_s / 0.02)):
        if done():
            return
        await asyncio.sleep(0.02)
