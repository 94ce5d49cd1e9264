"""Shared fixtures: a real gateway on a loopback port, and synthesised caller audio."""

from __future__ import annotations

import asyncio
import fcntl
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from hypothesis import settings as hypothesis_settings

from callbridge.cli import Server
from callbridge.config import Settings
from callbridge.speech.tts import EspeakTTS
from callbridge.testing.audio import speech
from callbridge.testing.nodes import ProdNode

# Property tests check behaviour, not speed (speed lives in bench/): no per-example deadline,
# which a loaded CI machine (more workers than cores) would otherwise trip.
hypothesis_settings.register_profile("callbridge", deadline=None)
hypothesis_settings.load_profile("callbridge")

SPEECH_DEFAULTS = {"stt": "sphinx", "tts": "espeak"}
"""The speech engines of the tests' servers unless a test names others: the streaming
pocketsphinx recogniser and espeak-ng, whose timing the older tests were written for (and
which the tests' espeak-voiced callers are heard well by). The neural defaults (Whisper,
Piper, in speech workers) have their own tests: test_speech_workers.py, test_neural_call.py."""
for _name, _value in SPEECH_DEFAULTS.items():  # prod nodes and `run.py` subprocesses inherit it
    os.environ.setdefault(_name.upper(), _value)

MAX_LOOP_STALL_S = 0.5
"""A test fails if the event loop was blocked longer than this (generous: CI is noisy)."""


class RunQueueWait:
    """Seconds the calling thread has spent runnable but waiting for a CPU (Linux
    ``/proc/thread-self/schedstat``; 0 where the kernel does not say)."""

    def __init__(self) -> None:
        try:
            self._fd: int | None = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
        except OSError:
            self._fd = None

    def __call__(self) -> float:
        if self._fd is None:
            return 0.0
        return int(os.pread(self._fd, 64, 0).split()[1]) / 1e9

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)


class LoopWatch:
    """Ticks every 10 ms and records the worst lateness: something blocked the loop.
    A tick that overlaps a server's start-up (``starting``: the one-off warm-up of the
    speech models, before the server takes calls) is not counted, nor is the time the
    loop's thread stood runnable in the OS run queue (another process had the CPU: the
    suite runs in parallel on a loaded machine); a loop blocked by its own work, a
    blocking call or the GIL still counts."""

    def __init__(self) -> None:
        self.worst = 0.0
        self.starting = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        queued = RunQueueWait()
        try:
            while True:
                t, q, during_start = time.monotonic(), queued(), self.starting
                await asyncio.sleep(0.01)
                if not (during_start or self.starting):
                    late = time.monotonic() - t - 0.01 - (queued() - q)
                    self.worst = max(self.worst, late)
        finally:
            queued.close()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


HEAVY_AT_ONCE = 3
"""How many ``prod`` and ``browser`` tests (a process tree per node, a browser: seconds of
CPU at a time) run at once across the parallel workers; the rest of the suite mostly waits
on real time and runs beside them. (xdist's own ``--dist loadgroup`` does not group on
pytest 9.2: pytest-xdist issue 1386.)"""


def _heavy(item: pytest.Item) -> bool:
    return any(item.get_closest_marker(name) for name in ("prod", "browser"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slow tests first, so that no long one starts last and holds up the end of a
    parallel run (setup.cfg deals them out in this order, two at a time), with the heavy and
    the ``alone`` ones spread evenly among them so that they seldom wait for their turn, then
    the fast ones."""
    spread = [item for item in items if _heavy(item) or item.get_closest_marker("alone")]
    slow = [item for item in items if item.get_closest_marker("slow") and item not in spread]
    fast = [item for item in items if not item.get_closest_marker("slow") and item not in spread]
    every = (len(slow) + len(spread)) / max(1, len(spread))
    for n, item in enumerate(spread):
        slow.insert(round(n * every), item)
    items[:] = slow + fast


def _flock(path: Path, how: int) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, how)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _slot(run_dir: Path, name: str, count: int) -> int:
    """Wait for one of ``count`` lock files ``name-N.lock``; returns it, locked."""
    while True:
        for n in range(count):
            try:
                return _flock(run_dir / f"{name}-{n}.lock", fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pass
        time.sleep(0.05)


@pytest.fixture(autouse=True)
def _share_the_machine(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """Across the workers of a parallel run (lock files in the run's base temporary
    directory), every test holds one of as many run slots as there are workers:
    - a ``prod`` or ``browser`` test also holds one of ``HEAVY_AT_ONCE`` heavy slots, and
      ``run.lock`` shared;
    - an ``alone`` test holds ``run.lock`` exclusive (no heavy or other ``alone`` test
      beside it) and all run slots but one: at most one light test runs beside it, one core
      each on this 2-core machine.
    ``gate.lock`` is held while a test takes its slots, so that an ``alone`` test waiting
    for the running ones to end is not overtaken."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        yield
        return
    run_dir = tmp_path_factory.getbasetemp().parent  # popen-gwN's parent: one per run
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    alone = request.node.get_closest_marker("alone") is not None
    heavy = _heavy(request.node)
    held = [_slot(run_dir, "heavy", HEAVY_AT_ONCE)] if heavy else []
    try:
        while True:
            gate = _flock(run_dir / "gate.lock", fcntl.LOCK_EX)
            try:
                if alone:  # waits holding the gate: nothing starts until it runs
                    held.append(_flock(run_dir / "run.lock", fcntl.LOCK_EX))
                elif heavy:  # beside an alone test it waits outside the gate
                    try:
                        held.append(_flock(run_dir / "run.lock", fcntl.LOCK_SH | fcntl.LOCK_NB))
                    except BlockingIOError:
                        pass
                if not heavy or alone or len(held) == 2:
                    for _ in range(max(1, workers - 1) if alone else 1):
                        held.append(_slot(run_dir, "run", workers))
                    break
            finally:
                os.close(gate)
            time.sleep(0.05)
        yield
    finally:
        for fd in reversed(held):
            os.close(fd)


StartServer = Callable[..., Awaitable[str]]


@pytest.fixture
async def start_server() -> AsyncIterator[StartServer]:
    """``url = await start_server(**settings)``: a real gateway on 127.0.0.1:<free port>."""
    servers: list[Server] = []
    watch = LoopWatch()
    watch.start()

    async def start(**overrides: object) -> str:
        values = {"host": "127.0.0.1", "port": 0, "check_messages": True, **SPEECH_DEFAULTS, **overrides}
        server = Server(Settings(**values))
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


@pytest.fixture
def nodes(tmp_path):
    """``node = nodes(**settings)``: a real prod node process tree (``ProdNode``), closed after the test."""
    started: list[ProdNode] = []

    def start(**kwargs) -> ProdNode:
        node = ProdNode(tmp_path, **kwargs)
        started.append(node)
        return node

    start.started = started  # nodes started otherwise (a restart), to reap too
    yield start
    for node in started:
        node.close()
