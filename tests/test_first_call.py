"""The first call of a fresh server does not block its event loop: what it would load
(the VAD model of Vapi's SpeechWatch, the fallback's TTS voice) is loaded at start-up by
the back end's ``BackendSpec.prewarm``. Each case is a process of its own
(tests/first_call.py), since what is loaded is process-wide."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import orjson
import pytest

from .first_call import BACKENDS

ROOT = Path(__file__).resolve().parent.parent
MAX_FIRST_CALL_STALL_MS = 100.0
"""Without the prewarm, the VAD load alone blocked the loop 170-240 ms; with it, 10-25 ms."""


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
async def test_first_call_of_a_fresh_server_does_not_block_the_loop(backend):
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.first_call",
        backend,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 90)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()[-2000:]
    worst = orjson.loads(out.splitlines()[-1])["worst_ms"]
    assert worst < MAX_FIRST_CALL_STALL_MS, f"{backend}: the first call blocked the loop {worst} ms"
