"""What observability costs per frame and per timeline event, side by side.

    python bench/metrics.py           # ~3 s
    python bench/metrics.py --quick   # <1 s

Per frame, the gateway counts in plain ints it already had (``Call.frames_in``,
``OutboundWriter.frames_sent``) and keeps a reference to the latest payload for the
console's level meter; ``/metrics`` reads the counts at scrape time. Compared with what
it would cost to call ``prometheus_client.Counter.inc()`` per frame instead. Per timeline
event (not per frame): ``CallFigures.observe`` for an event with no figure and for a
``turn`` (three histogram observations). Per scrape: ``Metrics.render()`` with 100 live
calls. Wall time (perf_counter_ns) over a loop with the GC off, median of repeats.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter

from callbridge.metrics import CallFigures, Metrics


class _Call:
    __slots__ = ("frames_in", "last_in")

    def __init__(self) -> None:
        self.frames_in = 0
        self.last_in = b""


def per_op_ns(fn: Callable[[int], object], n: int, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        gc.disable()
        t = time.perf_counter_ns()
        fn(n)
        times.append((time.perf_counter_ns() - t) / n)
        gc.enable()
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", help="also write the figures (ns) to this file")
    args = parser.parse_args()
    n, repeats = (20_000, 5) if args.quick else (200_000, 9)
    payload = bytes(160)
    call = _Call()
    counter = Counter("bench_frames", "frames", registry=CollectorRegistry())

    def empty(k: int) -> None:
        for _ in range(k):
            pass

    def plain(k: int) -> None:
        c = call
        for _ in range(k):
            c.frames_in += 1

    def plain_and_level(k: int) -> None:
        c, p = call, payload
        for _ in range(k):
            c.frames_in += 1
            c.last_in = p

    def prometheus(k: int) -> None:
        inc = counter.inc
        for _ in range(k):
            inc()

    metrics = Metrics()
    figures = CallFigures(metrics)
    turn = {"voice_to_voice_ms": 510.0, "agent_ms": 1.0, "tts_ms": 2.0}

    def note_plain(k: int) -> None:
        for _ in range(k):
            figures.observe("mark_played", {})

    def note_turn(k: int) -> None:
        for _ in range(k):
            figures.observe("turn", turn)

    base = per_op_ns(empty, n, repeats)
    rows = [
        ("per frame: int += 1 (before: already there)", per_op_ns(plain, n, repeats) - base),
        ("per frame: int += 1 + latest payload (now)", per_op_ns(plain_and_level, n, repeats) - base),
        ("per frame: prometheus Counter.inc() (not used)", per_op_ns(prometheus, n, repeats) - base),
        ("per event: CallFigures.observe, no figure", per_op_ns(note_plain, n, repeats) - base),
        ("per event: CallFigures.observe('turn')", per_op_ns(note_turn, n // 10, repeats) - base),
    ]
    live = Metrics(lambda: [(1000, 800)] * 100)
    scrape_ns = per_op_ns(lambda k: [live.render() for _ in range(k)], 200 if args.quick else 1000, repeats)
    print(f"{'what':<50} {'ns':>8}")
    for name, ns in rows:
        print(f"{name:<50} {ns:8.1f}")
    print(f"{'per scrape: Metrics.render(), 100 live calls':<50} {scrape_ns:8.0f}")
    added = rows[1][1] - rows[0][1]
    print(
        f"added per frame by this change: {added:.1f} ns (budget 200 ns); "
        f"a Counter.inc() per frame would add {rows[2][1]:.0f} ns"
    )
    if args.json:
        out = {"ns": dict(rows), "render_100_calls_ns": scrape_ns, "added_per_frame_ns": added}
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
