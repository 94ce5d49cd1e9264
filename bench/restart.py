"""Restart a production node on the same ports, over and over, as a supervisor would.

    python bench/restart.py                    # 10 stops and 10 crashes, 2 workers
    python bench/restart.py --runs 3 --workers 1 --json r.json

Each run stops the node (``term``: SIGTERM to ``run.py serve``; ``kill``: SIGKILL to it
alone, as a crash) and starts a new one at once on the same ``PORT`` and ``ADMIN_PORT``
(``callbridge.testing.nodes.restart``: it also checks that no process of the old node and no
listener on its ports remain). Reports, per kind, the median and the maximum of the
seconds from the signal to the old node's exit, to its last process gone, and to the new
node's first ``/healthz`` 200 (a shard warms its speech models first).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

from callbridge.testing.nodes import ProdNode, restart


def run(runs: int, workers: int, log_dir: Path) -> dict[str, Any]:
    results: dict[str, Any] = {}
    node = ProdNode(log_dir, workers=workers)
    try:
        node.wait_ready()
        for how in ("term", "kill"):
            samples: list[dict[str, float]] = []
            for _ in range(runs):
                new, seconds = restart(node, how, log_dir, workers=workers)
                node.close()
                node = new
                samples.append(seconds)
            results[how] = {
                key: {
                    "median": round(statistics.median(s[key] for s in samples), 2),
                    "max": round(max(s[key] for s in samples), 2),
                }
                for key in samples[0]
            }
    finally:
        node.close()
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=10, help="restarts of each kind")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = run(args.runs, args.workers, Path(tmp))
    print(f"{args.runs} restarts of each kind, {args.workers} worker(s); seconds from the signal")
    print(f"{'kind':6} {'exited':>15} {'gone':>15} {'healthy':>15}   (median / max)")
    for how, r in results.items():
        print(
            f"{how:6} "
            + " ".join(f"{r[k]['median']:>7.2f} /{r[k]['max']:>6.2f}" for k in ("exited", "gone", "healthy"))
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
