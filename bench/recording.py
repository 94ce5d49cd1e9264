"""What ``RECORDING=local`` costs per 20 ms frame, side by side with not recording.

    python bench/recording.py [--seconds 600] [--rounds 5] [--json out.json]

Three figures, each the median of ``--rounds``:

- ``loop_us_per_frame``: on the event loop, one caller frame and one agent frame placed in
  a ``CallRecorder`` (``gateway/recorder.py``), chunks handed to the writer's queue
  included: what a recorded call adds to the loop per frame. ``--seconds`` of one call's
  media time, run as fast as it goes (the clock is passed in).
- ``baseline_us_per_frame``: the same loop with no recorder (the ``None`` checks that an
  unrecorded call pays): the side-by-side figure.
- ``plain_call_us``: one empty Python call with the same three arguments, measured beside
  them: the yardstick on a loaded machine (the others in units of it are comparable).
- ``writer_us_per_s``: the writer thread's CPU per second of call audio (decode both
  channels, interleave, write to a temporary directory, complete the file), off the loop.

``bench/hotpath.py --recording`` measures the same inside the whole call path (150 echo
calls in one loop), with and without.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from callbridge.codecs.g711 import ulaw_encode
from callbridge.gateway.recorder import CallRecorder
from callbridge.gateway.recordings import Recordings

FRAME = ulaw_encode((np.sin(np.arange(160) / 3) * 8000).astype(np.int16))


def _plain(timestamp: int, payload: bytes, now: float) -> None:
    pass


def plain_cost(seconds: float) -> float:
    n = int(seconds / 0.02)
    started = time.perf_counter()
    for k in range(n):
        now = k * 0.02
        _plain(k * 20, FRAME, now)
        _plain(k * 20, FRAME, now)
    return (time.perf_counter() - started) / n * 1e6


def loop_cost(seconds: float, recorded: bool) -> float:
    """µs per frame pair (one in, one out) placed, chunks handed on to a list."""
    chunks: list[int] = []
    rec = CallRecorder(0.0, seconds + 10, lambda start, c, a: chunks.append(start)) if recorded else None
    n = int(seconds / 0.02)
    started = time.perf_counter()
    for k in range(n):
        now = k * 0.02
        if rec is not None:
            rec.caller(k * 20, FRAME, now)
            rec.agent(now, FRAME, now)
    return (time.perf_counter() - started) / n * 1e6


async def writer_cost(seconds: float) -> float:
    """The writer thread's CPU per second of audio (one call, ``seconds`` long): the
    process's CPU less this thread's, over the whole recording."""
    with tempfile.TemporaryDirectory(prefix="bench-rec-") as folder:
        recordings = Recordings(folder, 10_000, 0, seconds + 10)
        process0, thread0 = time.process_time(), time.thread_time()
        recordings.start()
        recording = recordings.begin("CA" + "0" * 32, 1, 0.0)
        assert recording is not None
        for k in range(int(seconds / 0.02)):
            recording.recorder.caller(k * 20, FRAME, k * 0.02)
            recording.recorder.agent(k * 0.02, FRAME, k * 0.02)
        recording.close()
        await recordings.stop()
        others = (time.process_time() - process0) - (time.thread_time() - thread0)
        return others / seconds * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=600.0)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args()
    if not 10 <= args.seconds <= 3600 or not 1 <= args.rounds <= 50:
        p.error("--seconds 10..3600, --rounds 1..50")
    rec, base, plain, writer = [], [], [], []
    for _ in range(args.rounds):  # alternated, so that load on the machine hits both alike
        base.append(loop_cost(args.seconds, False))
        rec.append(loop_cost(args.seconds, True))
        plain.append(plain_cost(args.seconds))
        writer.append(asyncio.run(writer_cost(min(args.seconds, 300.0))))
    r = {
        "loop_us_per_frame": statistics.median(rec),
        "baseline_us_per_frame": statistics.median(base),
        "plain_call_us": statistics.median(plain),
        "writer_us_per_s": statistics.median(writer),
        "rounds": args.rounds,
        "seconds": args.seconds,
    }
    print(
        f"recorder on the loop: {r['loop_us_per_frame']:.2f} µs per frame in+out "
        f"(not recording: {r['baseline_us_per_frame']:.2f}; two empty calls: {r['plain_call_us']:.2f}); writer thread: "
        f"{r['writer_us_per_s']:.0f} µs per second of call audio ({args.rounds} rounds, medians)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2))


if __name__ == "__main__":
    main()
