"""Soak: thousands of short calls churn through one server while one long call runs.

    python bench/soak.py --quick            # 1,000 short calls, under 2 minutes
    python bench/soak.py --calls 5000 --concurrency 30

The server is ``run.py serve`` (dev mode, one process) with the echo upstream, in a
subprocess; the driver is Twilio at scale in this process (``bench/load.py``'s
``LeanCall``), loopback only, at most ``--concurrency`` short calls at once, each call
bounded in time. A short call signs the webhook, starts its stream, sends half a second
of audio and ends one of five ways, in a rotation of six:

- ``stop`` (a hang-up), the normal case (two in six);
- the connection closed without ``stop`` (a dropped stream: resumable, never resumed);
- the peer goes silent with its socket open (a vanished socket: the reaper's
  ``STREAM_IDLE_S``, set to 2 s here);
- a socket that never sends ``start`` (the reaper's ``START_TIMEOUT_S``, 2 s here), and a
  bad message (closed 1007).

Meanwhile the long call streams in real time and times every echoed frame. Figures,
before the churn and after it (once the reaper's timeouts have passed and the long
call has hung up): open fds (``/proc/<pid>/fd``), threads and RSS (``/proc/<pid>/status``),
asyncio tasks, live calls and open media sockets (``/healthz``). Verdict: fds, tasks,
threads, calls and sockets back at (or under) their baseline; RSS levels off: the churn
runs in two halves, and the second half may add at most half what the first did, or
``--rss-slack-mb`` (the first half fills bounded structures: ended-call history, the
checkpoints of dropped calls kept for a resume, used stream tokens, allocator arenas; a
leak grows at the same rate in both); the long call had no gap over 100 ms at p99 and lost no frame.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from callbridge.gateway.security import SignatureChecker
from callbridge.testing.load import FRAME_S, LeanCall
from callbridge.testing.nodes import AUTH_TOKEN, ProcessNode

ENDINGS = ("stop", "drop", "stop", "silent", "nostart", "bad")
SHORT_FRAMES = 25
REAPER_S = 2.0


def proc_figures(pid: int, url: str) -> dict[str, Any]:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    fds = {}  # before the /healthz request: its own socket may still be open on the server just after
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            fds[fd] = os.readlink(f"/proc/{pid}/fd/{fd}").split(":")[0]
        except OSError:
            pass
    with urllib.request.urlopen(url + "/healthz", timeout=10) as resp:
        health = json.loads(resp.read())
    return {
        "fds": len(fds),
        "fd_kinds": sorted(fds.values()),
        "threads": int(fields["Threads"].strip()),
        "rss_mb": int(fields["VmRSS"].split()[0]) / 1024,
        "tasks": health["tasks"],
        "calls": health["calls"],
        "sockets": health["sockets"],
    }


async def short_call(http: aiohttp.ClientSession, url: str, ending: str) -> str:
    """One short call; returns how it ended as the driver saw it."""
    if ending == "nostart":
        headers = {"X-Twilio-Signature": SignatureChecker.sign(AUTH_TOKEN, "wss://callbridge.test/media", {})}
        async with http.ws_connect(url.replace("http", "ws") + "/media", headers=headers) as probe:
            msg = await probe.receive(timeout=REAPER_S * 3)
            return (
                f"closed {probe.close_code}"
                if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
                else "open"
            )
    call = LeanCall(None)
    await call.open(http, url)
    ws = call.ws
    assert ws is not None
    now = time.monotonic()
    for n in range(SHORT_FRAMES):  # half a second, at once (a catch-up burst: within INBOUND_BURST_S)
        await ws.send_str(call.frame(n, now))
    await asyncio.sleep(0.3)
    try:
        return await _end(call, ws, ending)
    finally:
        await ws.close()


async def _end(call: LeanCall, ws: aiohttp.ClientWebSocketResponse, ending: str) -> str:
    if ending == "stop":
        await call.close()
        return "stop"
    reader = call.reader
    assert reader is not None  # open() started it
    if ending == "bad":
        await ws.send_str("not json {")
        await asyncio.wait_for(reader, REAPER_S * 2)
        return f"closed {ws.close_code}"
    if ending == "drop":
        conn = ws._response.connection
        assert conn is not None and conn.transport is not None  # open, and not closed yet
        conn.transport.abort()
        await asyncio.gather(reader, return_exceptions=True)
        return "drop"
    # silent: say nothing more, not even mark echoes; the server must drop us
    reader.cancel()
    await asyncio.wait_for(_until_closed(ws), REAPER_S * 4)
    return "reaped"


async def _until_closed(ws: aiohttp.ClientWebSocketResponse) -> None:
    while (await ws.receive()).type not in (
        aiohttp.WSMsgType.CLOSE,
        aiohttp.WSMsgType.CLOSED,
        aiohttp.WSMsgType.ERROR,
    ):
        pass


class LongCall:
    """The call that runs through the whole churn, in real time."""

    def __init__(self) -> None:
        self.call = LeanCall(None)
        self.task: asyncio.Task[None] | None = None
        self.stopping = False

    async def start(self, http: aiohttp.ClientSession, url: str) -> None:
        await self.call.open(http, url)
        self.task = asyncio.create_task(self._stream())

    async def _stream(self) -> None:
        ws = self.call.ws
        assert ws is not None
        t0, n = time.monotonic(), 0
        while not self.stopping:
            await ws.send_str(self.call.frame(n, time.monotonic()))
            n += 1
            await asyncio.sleep(max(0.0, t0 + n * FRAME_S - time.monotonic()))

    async def finish(self) -> dict[str, Any]:
        self.stopping = True
        assert self.task is not None  # start() made it
        await asyncio.gather(self.task)
        await asyncio.sleep(0.5)  # the echo's tail
        await self.call.close()
        arrivals = np.array(self.call.arrivals)
        gaps = (
            np.diff(arrivals[arrivals > arrivals[0] + 1.0]) * 1000 if len(arrivals) > 60 else np.array([0.0])
        )
        return {
            "seconds": float(arrivals[-1] - arrivals[0]) if len(arrivals) else 0.0,
            "sent": self.call.sent,
            "echoed": len(arrivals),
            "lost": max(0, self.call.sent - len(arrivals) - 5),
            "gap_p50_ms": float(np.percentile(gaps, 50)),
            "gap_p99_ms": float(np.percentile(gaps, 99)),
            "gap_max_ms": float(gaps.max()),
        }


async def churn(url: str, calls: int, concurrency: int, endings: dict[str, int]) -> float:
    gate = asyncio.Semaphore(concurrency)
    rotation = itertools.cycle(ENDINGS)
    connector = aiohttp.TCPConnector(limit=0)
    t = time.monotonic()
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as http:

        async def one(ending: str) -> None:
            async with gate:
                try:
                    seen = await asyncio.wait_for(short_call(http, url, ending), 20)
                except Exception as exc:
                    seen = f"error {type(exc).__name__}"
                endings[seen] = endings.get(seen, 0) + 1

        await asyncio.gather(*(one(next(rotation)) for _ in range(calls)))
    return time.monotonic() - t


def fmt(fig: dict[str, Any]) -> str:
    return (
        f"fds {fig['fds']}  threads {fig['threads']}  tasks {fig['tasks']}  calls {fig['calls']}  "
        f"sockets {fig['sockets']}  RSS {fig['rss_mb']:.1f} MB"
    )


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    env = {
        "UPSTREAM": "echo",
        "LOG_LEVEL": "ERROR",
        "CHECK_MESSAGES": "0",
        "CALL_HISTORY": "50",
        "STREAM_IDLE_S": str(REAPER_S),
        "START_TIMEOUT_S": str(REAPER_S),
        "WEBHOOK_RATE": "0",
        "MAX_SOCKETS_PER_SOURCE": "0",
    }
    with tempfile.TemporaryDirectory() as tmp:
        node = ProcessNode(Path(tmp), "dev", [sys.executable, "run.py", "serve"], **env)
        try:
            node.wait_ready()
            pid = node.proc.pid
            out: dict[str, Any] = {"calls": args.calls, "concurrency": args.concurrency}
            warm: dict[str, int] = {}
            await churn(node.url, args.warmup, args.concurrency, warm)
            await asyncio.sleep(REAPER_S * 2 + 1)
            before = proc_figures(pid, node.url)
            print(f"before (after {args.warmup} warm-up calls): {fmt(before)}", flush=True)
            long = LongCall()
            async with aiohttp.ClientSession() as http:
                await long.start(http, node.url)
                endings: dict[str, int] = {}
                half = args.calls // 2
                seconds = await churn(node.url, half, args.concurrency, endings)
                await asyncio.sleep(REAPER_S * 2 + 1)
                mid = proc_figures(pid, node.url)
                seconds += await churn(node.url, args.calls - half, args.concurrency, endings)
                during = proc_figures(pid, node.url)
                print(
                    f"churned {args.calls} calls in {seconds:.1f} s ({args.calls / seconds:.0f} calls/s, "
                    f"at most {args.concurrency} at once): {json.dumps(endings, sort_keys=True)}",
                    flush=True,
                )
                print(f"right after the churn: {fmt(during)}", flush=True)
                await asyncio.sleep(REAPER_S * 2 + 1)  # the reaper's timeouts pass
                lc = await long.finish()
            await asyncio.sleep(1.0)
            after = proc_figures(pid, node.url)
            print(f"after: {fmt(after)}", flush=True)
            print(
                f"long call: {lc['seconds']:.0f} s, {lc['sent']} frames sent, {lc['echoed']} echoed, lost {lc['lost']}, "
                f"gap p50/p99/max {lc['gap_p50_ms']:.1f}/{lc['gap_p99_ms']:.1f}/{lc['gap_max_ms']:.0f} ms",
                flush=True,
            )
            growth = after["rss_mb"] - before["rss_mb"]
            first, second = mid["rss_mb"] - before["rss_mb"], after["rss_mb"] - mid["rss_mb"]
            if after["fds"] > before["fds"]:
                print(f"fds before: {before['fd_kinds']}\nfds after:  {after['fd_kinds']}", flush=True)
            checks = {
                **{k: after[k] <= before[k] for k in ("fds", "tasks", "threads", "calls", "sockets")},
                "rss levels off": second <= max(args.rss_slack_mb, first / 2),
                "long call smooth": lc["gap_p99_ms"] <= 100.0 and lc["lost"] == 0,
                "no driver errors": not any(k.startswith("error") for k in endings),
            }
            print(
                f"RSS {growth:+.1f} MB over {args.calls} calls: {first:+.1f} MB in the first half, "
                f"{second:+.1f} MB in the second",
                flush=True,
            )
            verdict = all(checks.values())
            print(
                "verdict: "
                + (
                    "OK, back to baseline"
                    if verdict
                    else "FAILED: " + ", ".join(k for k, ok in checks.items() if not ok)
                ),
                flush=True,
            )
            out.update(
                before=before,
                mid=mid,
                during=during,
                after=after,
                long_call=lc,
                endings=endings,
                checks=checks,
                ok=verdict,
                churn_s=seconds,
            )
            return out
        finally:
            node.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--calls", type=int, default=5000)
    p.add_argument("--concurrency", type=int, default=20)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--rss-slack-mb", type=float, default=5.0)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args()
    if args.quick:
        args.calls = min(args.calls, 1000)
    out = asyncio.run(main_async(args))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    sys.exit(0 if out["ok"] else 1)


if __name__ == "__main__":
    main()
