"""Two checkouts side by side: alternate ``bench/load.py`` runs of each, report medians.

    git worktree add ../before <commit>
    python bench/compare.py ../before . --calls 300,400 --reps 3
    python bench/compare.py . .+EVENT_LOOP=asyncio --calls 300     # one tree, two settings

Each TREE is a path, optionally followed by ``+NAME=VALUE`` settings for its server (and
driver) processes. The runs alternate (A, B, A, B, ...) so that a machine that gets busier
or quieter during the comparison affects both alike; each run is a fresh server, echo
upstream, prod mode, ``--seconds`` per step, no shard kills. Per tree and step: the median
of the outbound gap p99 over the runs (each run's value in brackets), the echo latency p99,
frames lost per run, and the median server and driver CPU. Only ``bench/load.py``'s own
output is used: the trees may differ in anything else.

Limits: at most 10 reps and 1000 calls a step; a run that fails prints its error and is
left out of the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def run_once(tree: str, calls: str, seconds: float) -> dict | None:
    path, *settings = tree.split("+")
    env = dict(os.environ)
    for kv in settings:
        key, value = kv.split("=", 1)
        env[key] = value
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "load.json"
        proc = subprocess.run(
            [
                sys.executable,
                "bench/load.py",
                "--mode",
                "prod",
                "--calls",
                calls,
                "--seconds",
                str(seconds),
                "--kills",
                "0",
                "--json",
                str(out),
            ],
            cwd=path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60 + 120 * len(calls.split(",")),
            check=False,
        )
        for line in proc.stdout.splitlines():
            if " calls " in line and not line.startswith("knee"):
                print(f"  {tree}: {line}", flush=True)
        if proc.returncode or not out.exists():
            print(f"  {tree}: failed ({proc.returncode}): {proc.stderr[-1500:]}", flush=True)
            return None
        return json.loads(out.read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("trees", nargs="+", help="checkout paths, each optionally +NAME=VALUE...")
    p.add_argument("--calls", default="300", help="comma-separated steps")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--seconds", type=float, default=12.0)
    p.add_argument("--json", help="write every run's figures here")
    args = p.parse_args()
    if not 1 <= args.reps <= 10:
        p.error("--reps: 1 to 10")
    if any(not 1 <= int(c) <= 1000 for c in args.calls.split(",")):
        p.error("--calls: steps between 1 and 1000")
    runs: dict[str, list[dict]] = {t: [] for t in args.trees}
    for rep in range(args.reps):
        print(f"rep {rep + 1}/{args.reps}", flush=True)
        for tree in args.trees:
            result = run_once(tree, args.calls, args.seconds)
            if result is not None:
                runs[tree].append(result)
    print("medians:")
    for tree, results in runs.items():
        steps: dict[int, list[dict]] = {}
        for result in results:
            for step in result["steps"]:
                steps.setdefault(step["calls"], []).append(step)
        for calls, ss in sorted(steps.items()):

            def med(key: str, ss: list[dict] = ss) -> float:
                return statistics.median(s[key] or 0.0 for s in ss)

            each = " ".join(f"{s['gap_p99_ms']:.1f}" for s in ss)
            print(
                f"  {tree}: {calls} calls  gap p99 {med('gap_p99_ms'):.1f} ms [{each}]  "
                f"echo p99 {med('echo_p99_ms'):.0f} ms  lost {[s['lost'] for s in ss]}  "
                f"server CPU {med('server_cpu_pct'):.0f}%  driver {med('driver_cpu_pct'):.0f}%",
                flush=True,
            )
    if args.json:
        Path(args.json).write_text(json.dumps(runs, indent=2))


if __name__ == "__main__":
    main()
