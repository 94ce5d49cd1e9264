"""What each abuse in ``callbridge/testing/abusers.py`` costs a dev server, next to a bystander call.

    python bench/abuse.py [--root DIR] [--seconds S]

Starts ``run.py serve`` (``UPSTREAM=echo``, ``LOG_LEVEL=INFO``) from ``--root`` (default:
this checkout; point it at another checkout to compare), with ``StoreBook.checkpoint``
counted, and for each abuse prints: the server's RSS growth (peak during the abuse and
after it), its log lines, the abusive call's record size (``GET /calls/{callSid}``), the
store's checkpoints of that call, and the bystander's concealed frames (caller audio the
bridge had to make up: frames lost) and worst gap between echoed frames.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import aiohttp
import orjson

from callbridge.testing import fuzz_targets as ft
from callbridge.testing.abusers import ABUSES, run_abuse
from callbridge.testing.nodes import free_port

ROOT = Path(__file__).resolve().parents[1]

SERVE = """
import sys, threading, time
from callbridge.gateway import store
counts = {{}}
real = store.StoreBook.checkpoint
def counted(self, call_sid, snapshot, now):
    counts[call_sid] = counts.get(call_sid, 0) + 1
    real(self, call_sid, snapshot, now)
store.StoreBook.checkpoint = counted
def dump():
    while True:
        time.sleep(0.2)
        with open({counts_file!r} + ".tmp", "w") as f:
            f.write(repr(counts))
        import os; os.replace({counts_file!r} + ".tmp", {counts_file!r})
threading.Thread(target=dump, daemon=True).start()
from callbridge.cli import main
sys.exit(main(["serve", "--port", "{port}"]))
"""


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def checkpoints(counts_file: str, call_sid: str) -> int:
    time.sleep(0.5)
    try:
        return eval(Path(counts_file).read_text()).get(call_sid, 0)
    except (OSError, SyntaxError):
        return -1


def record(url: str, call_sid: str) -> bytes | None:
    try:
        with urllib.request.urlopen(f"{url}/calls/{call_sid}", timeout=60) as resp:
            return resp.read()
    except urllib.error.HTTPError:
        return None


class Lines:
    """Counts the server's log lines (its stderr), from a thread."""

    def __init__(self, stream) -> None:
        self.lines: list[str] = []
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    @property
    def n(self) -> int:
        return len(self.lines)

    def _read(self, stream) -> None:
        for line in stream:
            self.lines.append(line[:160].rstrip())


def _own(lines: list[str], call_sid: str) -> int:
    """callbridge's lines about the abusive call (by CallSid, or as a peer before start)."""
    return sum(
        1 for line in lines if "callbridge" in line and (call_sid in line or "media socket peer" in line)
    )


async def _abuse(url: str, abuse):
    async with aiohttp.ClientSession() as http:
        return await run_abuse(http, url, abuse)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=str(ROOT))
    ap.add_argument("--seconds", type=float, default=10.0, help="length of each abuse at the allowed rate")
    ap.add_argument("--show-logs", action="store_true", help="print each case's log lines")
    ap.add_argument("--only", default="", help="run only the cases whose name contains this")
    args = ap.parse_args()
    port = free_port()
    counts_file = f"/tmp/abuse-checkpoints-{os.getpid()}"
    env = {
        **os.environ,
        "UPSTREAM": "echo",
        "LOG_LEVEL": "INFO",
        "WEBHOOK_RATE": "0",
        "MAX_SOCKETS_PER_SOURCE": "0",
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVE.format(root=args.root, counts_file=counts_file, port=port)],
        cwd=args.root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.readline()
    lines = Lines(proc.stderr)
    url = f"http://127.0.0.1:{port}"
    gw = SimpleNamespace(url=url, ws_url=url.replace("http://", "ws://") + "/media")
    print(f"server from {args.root}: RSS {rss_mb(proc.pid):.0f} MB at start", flush=True)
    try:
        cases = {"no abuse (baseline)": replace(ABUSES["unknown events after start"], count=0), **ABUSES}
        for name, abuse in cases.items():
            if args.only not in name:
                continue
            if abuse.rate:
                abuse = replace(abuse, seconds=args.seconds)
            bystander = ft.Bystander(gw)
            time.sleep(1.0)
            rss0, lines0 = rss_mb(proc.pid), lines.n
            peak = [rss0]
            done = threading.Event()

            def sample(done: threading.Event, peak: list[float]) -> None:
                while not done.is_set():
                    peak[0] = max(peak[0], rss_mb(proc.pid))
                    time.sleep(0.1)

            sampler = threading.Thread(target=sample, args=(done, peak), daemon=True)
            sampler.start()
            outcome = asyncio.run(_abuse(url, abuse))
            time.sleep(1.0)
            sent, echoed, worst = bystander.finish()
            done.set()
            sampler.join()
            time.sleep(0.5)
            raw = record(url, outcome.call_sid)
            rss1 = rss_mb(proc.pid)
            by = orjson.loads(record(url, bystander.call_sid) or b"{}")
            print(
                f"{name}: {outcome.sent} messages in {outcome.seconds:.1f} s, close {outcome.close_code}; "
                f"RSS +{peak[0] - rss0:.1f} MB peak, +{rss1 - rss0:.1f} MB after; "
                f"{lines.n - lines0} log lines ({_own(lines.lines[lines0:], outcome.call_sid)} of the abusive call); record {len(raw or b'') / 1024:.1f} KB; "
                f"{checkpoints(counts_file, outcome.call_sid)} checkpoints; bystander: "
                f"{by.get('figures', {}).get('concealed')} frames concealed of {sent}, {sent - echoed if echoed < sent else 0} "
                f"not echoed, worst gap {worst * 1000:.0f} ms",
                flush=True,
            )
            if args.show_logs:
                print("    " + "\n    ".join(lines.lines[lines0:]), flush=True)
    finally:
        proc.terminate()
        proc.wait(10)
        Path(counts_file).unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
