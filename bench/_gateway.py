"""Shared by the benchmarks: a gateway in its own process (so its CPU can be read from
/proc), and caller speech from the embedded TTS."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from callbridge.codecs.resample import StreamingResampler  # noqa: E402
from callbridge.speech.tts import EspeakTTS  # noqa: E402
from tests.prodnode import free_port  # noqa: E402


def speech(tts: EspeakTTS, text: str) -> np.ndarray:
    """``text`` spoken by ``tts``, as int16 at 8 kHz."""
    chunks: list[np.ndarray] = []
    tts.synthesize(text, chunks.append)
    return StreamingResampler(tts.sample_rate, 8000).process(np.concatenate(chunks))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def gateway(**env: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``with gateway(GREETING="Hi.") as (process, url):`` -- ready (prewarmed) on entry."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "run.py", "serve", "--port", str(port)],
        cwd=ROOT,
        env={**os.environ, "LOG_LEVEL": "WARNING", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        proc.stdout.readline()  # "listening on ..." once ready
        yield proc, f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)
