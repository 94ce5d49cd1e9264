"""CPU per frame of the bridge's in-process call path, without sockets.

    python bench/hotpath.py [--calls 150] [--seconds 6] [--loop auto|uvloop|asyncio] [--recording]

``--calls`` echo calls (``UPSTREAM=echo``) run in this one process and loop, as in a shard:
each is a real ``Call`` with its actor tree and outbound writer, fed a parsed Twilio media
frame every 20 ms of real time (a loud one once a second, else low noise); the writer sends
to a coroutine that only counts. After a 1 s warm-up, the process's CPU time divided by the
caller frames fed is what one frame in plus the agent frame out cost: jitter buffer, both
codec directions, BargeIn, the dispatcher's hops, the writer and its pacing, the loop's timers.
Not in it: the sockets (aiohttp's WebSocket reader and writer, the syscalls), which
``bench/load.py`` measures with everything else. Compare checkouts by running it from each,
alternately, on a quiet machine. ``--recording``: every call is recorded (``RECORDING=local``
into a temporary directory): the figures then include the recorder's work on the loop
(``loop_us_per_frame``: the loop thread's CPU alone) and the writer thread's (in
``us_per_frame``, the whole process).

Limits: 1 to 2000 calls, 2 to 60 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from callbridge import eventloop
from callbridge.codecs import mediastreams as ms
from callbridge.codecs.g711 import ulaw_encode
from callbridge.config import Settings
from callbridge.gateway.calls import Call
from callbridge.gateway.recordings import Recordings

QUIET = ulaw_encode(np.random.default_rng(1).normal(0, 30, 160).astype(np.int16))
LOUD = ulaw_encode((np.sin(np.arange(160) / 3) * 12000).astype(np.int16))


async def measure(n_calls: int, seconds: float, recording: bool = False) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="hotpath-rec-") as folder:
        recordings = Recordings(folder, 10_000, 0, 3600) if recording else None
        if recordings is not None:
            recordings.start()
        try:
            return await _measure(n_calls, seconds, recordings)
        finally:
            if recordings is not None:
                await recordings.stop()


async def _measure(n_calls: int, seconds: float, recordings: Recordings | None) -> dict[str, float]:
    settings = Settings(upstream="echo", greeting="")
    sent = 0

    async def send(text: str) -> None:
        nonlocal sent
        sent += 1

    calls = [
        Call(
            settings,
            ms.Start(f"MZ{i:032d}", f"CA{i:032d}", "AC" + "0" * 32, ("inbound",), {}),
            send,
            lambda reason: None,
            recordings=recordings,
        )
        for i in range(n_calls)
    ]
    t0 = time.monotonic()
    n = warm_n = 0
    cpu0 = sent0 = loop0 = 0.0
    while time.monotonic() - t0 < seconds:
        if n == 50:  # after 1 s
            cpu0, sent0, warm_n, loop0 = time.process_time(), sent, n, time.thread_time()
        for c in calls:
            c.media(ms.Media("inbound", n + 1, n * 20, LOUD if n % 50 == 25 else QUIET))
        n += 1
        await asyncio.sleep(max(0.0, t0 + n * 0.020 - time.monotonic()))
    cpu, loop_cpu = time.process_time() - cpu0, time.thread_time() - loop0
    frames = (n - warm_n) * n_calls
    for c in calls:
        c.end_because("done")
        c.stop()
    return {
        "calls": n_calls,
        "frames": frames,
        "us_per_frame": cpu / frames * 1e6,
        "loop_us_per_frame": loop_cpu / frames * 1e6,
        "recording": recordings is not None,
        "sent_per_frame": (sent - sent0) / frames,
        "cpu_pct": 100 * cpu / ((n - warm_n) * 0.020),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--calls", type=int, default=150)
    p.add_argument("--seconds", type=float, default=6.0)
    p.add_argument("--loop", choices=["auto", "uvloop", "asyncio"], default="auto")
    p.add_argument("--recording", action="store_true", help="record every call (RECORDING=local)")
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args()
    if not 1 <= args.calls <= 2000 or not 2 <= args.seconds <= 60:
        p.error("--calls 1..2000, --seconds 2..60")
    r = eventloop.run(measure(args.calls, args.seconds, args.recording), args.loop)
    print(
        f"{r['calls']} calls{' recorded' if args.recording else ''}, {eventloop.resolve(args.loop)}: "
        f"{r['us_per_frame']:.1f} µs of CPU per frame in+out (loop thread {r['loop_us_per_frame']:.1f}) "
        f"({r['frames']} frames; {r['sent_per_frame']:.2f} messages sent per frame; {r['cpu_pct']:.0f}% of a core)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps({**r, "loop": eventloop.resolve(args.loop)}, indent=2))


if __name__ == "__main__":
    main()
