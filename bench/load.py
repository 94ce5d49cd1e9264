"""Load benchmark: how many real-time calls the bridge carries on this machine.

    python bench/load.py --mode prod                       # echo upstream: the bridge's own capacity
    python bench/load.py --mode prod --upstream embedded   # with the embedded voice agent
    python bench/load.py --mode dev --quick

The driver is Twilio at scale, in this (separate) process: for each call it signs and
posts the webhook, opens the stream with a signed handshake, and sends one ``media``
message every 20 ms on one shared monotonic schedule; it echoes marks and timestamps
every agent ``media`` message. Calls ramp up in steps; each step runs ``--seconds``. The
driver shares the machine with the server, so it runs on uvloop where installed
(``--driver-loop``), as lean as Twilio's side can be made here.

Per step: outbound frame gaps (time between consecutive agent media messages on each
call, after a warm-up second; p50/p99/max), frames lost (caller frames sent minus agent
frames received, past a 5-frame allowance: with the echo upstream every caller frame
comes back as one agent frame), echo latency (a loud frame sent once a second, until
its echo arrives: the bridge's added latency socket to socket, including the 20 ms
jitter-buffer floor), the server's CPU (all its processes) and memory per call (PSS
growth over the idle server, divided by the calls), and the driver's own CPU. The knee
is the largest step with p99 gap <= 40 ms and no frame lost.

With ``--upstream embedded`` each caller speaks a request every 8 s (synthesised
speech) and the agent answers: gaps are taken within the agent's utterances only
(gaps over 1 s are pauses between them), loss is not defined (the agent speaks less
than the caller), and the figure that matters is the knee of smooth agent speech.

Shard-kill recovery (prod): one call on the echo upstream; SIGKILL the shard carrying
it; the silence the caller hears = time from the kill to the first agent audio on the
resumed stream. Repeated ``--kills`` times.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._gateway import cpu_seconds, speech  # noqa: E402
from callbridge import eventloop  # noqa: E402
from callbridge.codecs import mediastreams as ms  # noqa: E402
from callbridge.codecs.g711 import ulaw_encode  # noqa: E402
from callbridge.gateway.security import SignatureChecker  # noqa: E402
from callbridge.sim.caller import SimulatedCall, new_sid, parse_stream_twiml  # noqa: E402
from callbridge.speech.tts import EspeakTTS  # noqa: E402
from tests.prodnode import AUTH_TOKEN, CONSOLE_TOKEN, PUBLIC_URL, ProcessNode, ProdNode  # noqa: E402

FRAME_S = 0.020
QUIET = base64.b64encode(ulaw_encode((np.random.default_rng(1).normal(0, 30, 160)).astype(np.int16))).decode()
LOUD = base64.b64encode(ulaw_encode((np.sin(np.arange(160) / 3) * 12000).astype(np.int16))).decode()
GAP_LIMIT_MS = 40.0
ACCOUNT_SID = "AC" + "0" * 32


# -- the server -----------------------------------------------------------------------------


@contextmanager
def server(mode: str, upstream: str, workers: int, log_dir: Path) -> Iterator[ProdNode]:
    env = {
        "UPSTREAM": upstream,
        "LOG_LEVEL": "WARNING",
        "CHECK_MESSAGES": "0",
        "CALL_HISTORY": "50",
        # The driver is one address opening hundreds of calls, each silent until all are open:
        # lift the per-source and capacity limits and the vanished-stream timeout.
        "WEBHOOK_RATE": "0",
        "MAX_SOCKETS_PER_SOURCE": "0",
        "MAX_CALLS": "0",
        "STREAM_IDLE_S": "600",
    }
    if mode == "prod":
        node = ProdNode(log_dir, workers=workers, **env)  # type: ignore[arg-type]  # env names: never port=
    else:
        node = ProcessNode(log_dir, "dev", [sys.executable, "run.py", "serve"], **env)
    try:
        node.wait_ready()
        yield node
    finally:
        node.close()


def pss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def tree_cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            total += cpu_seconds(pid)
        except OSError:
            pass
    return total


# -- the driver -----------------------------------------------------------------------------


class LeanCall:
    """One call's Twilio side, as cheap as possible (hundreds run in one process)."""

    def __init__(self, speech_frames: list[str] | None) -> None:
        self.call_sid, self.stream_sid = new_sid("CA"), new_sid("MZ")
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.arrivals: list[float] = []
        self.loud_sent: list[float] = []
        self.loud_heard: list[float] = []
        self.sent = 0
        self.speech = speech_frames
        self.reader: asyncio.Task[None] | None = None
        self.head = f'{{"event":"media","streamSid":"{self.stream_sid}","sequenceNumber":"'

    async def open(self, http: aiohttp.ClientSession, url: str) -> None:
        params = {
            "AccountSid": ACCOUNT_SID,
            "CallSid": self.call_sid,
            "From": "+15005550006",
            "To": "+15005550001",
            "Direction": "inbound",
            "CallStatus": "ringing",
        }
        sig = SignatureChecker.sign(AUTH_TOKEN, PUBLIC_URL + "/voice/inbound", params)
        async with http.post(
            url + "/voice/inbound", data=params, headers={"X-Twilio-Signature": sig}
        ) as resp:
            stream_url, parameters = parse_stream_twiml(await resp.text())
        headers = {"X-Twilio-Signature": SignatureChecker.sign(AUTH_TOKEN, stream_url, {})}
        ws_url = "ws://" + url.split("://", 1)[1] + "/media"
        self.ws = await http.ws_connect(ws_url, headers=headers, autoping=True, max_msg_size=1 << 16)
        await self.ws.send_str(ms.twilio_connected())
        await self.ws.send_str(ms.twilio_start(1, self.stream_sid, self.call_sid, ACCOUNT_SID, parameters))
        self.reader = asyncio.create_task(self.read())

    async def read(self) -> None:
        assert self.ws is not None
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            data = msg.data
            if data.startswith('{"event":"media"'):
                now = time.monotonic()
                self.arrivals.append(now)
                if self.loud_sent and len(self.loud_heard) < len(self.loud_sent) and _loud(data):
                    self.loud_heard.append(now)
            elif data.startswith('{"event":"mark"'):
                name = json.loads(data)["mark"]["name"]
                await self.ws.send_str(ms.twilio_mark(0, self.stream_sid, name))

    def frame(self, n: int, now: float) -> str:
        if self.speech is not None:
            payload = self.speech[n % len(self.speech)]
        elif n % 50 == 25:
            payload = LOUD
            self.loud_sent.append(now)
        else:
            payload = QUIET
        self.sent += 1
        return (
            f'{self.head}{n + 2}","media":{{"track":"inbound","chunk":"{n + 1}",'
            f'"timestamp":"{n * 20}","payload":"{payload}"}}}}'
        )

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.send_str(ms.twilio_stop(0, self.stream_sid, self.call_sid, ACCOUNT_SID))
            await self.ws.close()
        if self.reader is not None:
            await asyncio.gather(self.reader, return_exceptions=True)


_PAYLOAD = re.compile(r'"payload":"([^"]+)"')


def _loud(message: str) -> bool:
    m = _PAYLOAD.search(message)
    if not m:
        return False
    raw = np.frombuffer(base64.b64decode(m.group(1)), np.uint8)
    return bool(np.any((raw & 0x7F) < 0x30))  # mu-law codes of large magnitude


async def run_step(
    url: str, calls: int, seconds: float, node: ProdNode, speech_frames: list[str] | None, idle_pss: float
) -> dict[str, Any]:
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as http:
        lean = [LeanCall(speech_frames) for _ in range(calls)]
        for i in range(0, calls, 20):  # open in batches: webhooks are answered at once
            await asyncio.gather(*(c.open(http, url) for c in lean[i : i + 20]))
        pids = node.pids()
        t0 = time.monotonic()
        cpu0, me0 = tree_cpu(pids), time.process_time()
        n = 0
        warm = t0 + 1.0
        while time.monotonic() - t0 < seconds:
            now = time.monotonic()
            for c in lean:
                await c.ws.send_str(c.frame(n, now))  # type: ignore[union-attr]  # open() set it; no check per frame
            n += 1
            await asyncio.sleep(max(0.0, t0 + n * FRAME_S - time.monotonic()))
        elapsed = time.monotonic() - t0
        cpu = tree_cpu(pids) - cpu0
        driver = time.process_time() - me0
        pss = pss_mb(node.pids())
        await asyncio.sleep(1.0)  # the tail of the echo
        await asyncio.gather(*(c.close() for c in lean))
    gaps = []
    for c in lean:
        a = np.array([t for t in c.arrivals if t >= warm])
        d = np.diff(a) * 1000 if len(a) > 1 else np.array([])
        gaps.append(d[d < 1000] if speech_frames is not None else d)
    g = np.concatenate(gaps) if gaps else np.array([0.0])
    lost = 0 if speech_frames is not None else sum(max(0, c.sent - len(c.arrivals) - 5) for c in lean)
    latency = [
        (h - s) * 1000 for c in lean for s, h in zip(c.loud_sent, c.loud_heard, strict=False)
    ]  # unheard: left out
    return {
        "calls": calls,
        "gap_p50_ms": float(np.percentile(g, 50)) if len(g) else 0.0,
        "gap_p99_ms": float(np.percentile(g, 99)) if len(g) else 0.0,
        "gap_max_ms": float(g.max()) if len(g) else 0.0,
        "lost": lost,
        "echo_p50_ms": float(np.percentile(latency, 50)) if latency else None,
        "echo_p99_ms": float(np.percentile(latency, 99)) if latency else None,
        "server_cpu_pct": 100 * cpu / elapsed,
        "driver_cpu_pct": 100 * driver / elapsed,
        "mb_per_call": (pss - idle_pss) / calls,
    }


async def kill_recovery(node: ProdNode, kills: int) -> list[float]:
    silences = []
    for _ in range(kills):
        call = SimulatedCall(
            node.url,
            audio=[],
            auth_token=AUTH_TOKEN,
            public_url=PUBLIC_URL,
            hold_s=6.0,
            console_token=CONSOLE_TOKEN,
        )
        task = asyncio.create_task(call.run())
        await call.started.wait()
        await asyncio.sleep(2.0)
        async with (
            aiohttp.ClientSession(headers={"Authorization": f"Bearer {CONSOLE_TOKEN}"}) as http,
            http.get(f"{node.url}/calls/{call.call_sid}") as resp,
        ):
            pid = (await resp.json())["pid"]
        killed = time.monotonic() - call._t0
        os.kill(pid, signal.SIGKILL)
        result = await task
        if len(result.streams) < 2:
            raise RuntimeError("the call did not resume")
        after = [t for t in result.media_received if t > result.streams[1][0]]
        silences.append((after[0] - killed) * 1000 if after else float("nan"))
        await asyncio.sleep(3.0)  # the pool replaces the shard
    return silences


def fmt(step: dict[str, Any]) -> str:
    echo = (
        ""
        if step["echo_p50_ms"] is None
        else f"  echo p50/p99 {step['echo_p50_ms']:.0f}/{step['echo_p99_ms']:.0f} ms"
    )
    ok = "ok " if step["gap_p99_ms"] <= GAP_LIMIT_MS and step["lost"] == 0 else "BAD"
    return (
        f"{ok} {step['calls']:>4} calls  gap p50/p99/max {step['gap_p50_ms']:.1f}/{step['gap_p99_ms']:.1f}/"
        f"{step['gap_max_ms']:.0f} ms  lost {step['lost']}{echo}  server CPU {step['server_cpu_pct']:.0f}% "
        f"(driver {step['driver_cpu_pct']:.0f}%)  {step['mb_per_call']:.2f} MB/call"
    )


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    steps = [int(x) for x in args.calls.split(",")]
    speech_frames = None
    if args.upstream == "embedded":
        tts = EspeakTTS(rate_wpm=150)
        said = ulaw_encode(speech(tts, "I would like to book an appointment on Monday at three pm."))
        pcm = said + bytes([0xFF]) * (8000 * 8 - len(said) % 160)
        speech_frames = [base64.b64encode(pcm[i : i + 160]).decode() for i in range(0, len(pcm) - 159, 160)]
    out: dict[str, Any] = {"mode": args.mode, "upstream": args.upstream, "steps": [], "kill_silence_ms": []}
    with (
        tempfile.TemporaryDirectory() as tmp,
        server(args.mode, args.upstream, args.workers, Path(tmp)) as node,
    ):
        await asyncio.sleep(1.0)
        idle = pss_mb(node.pids())
        print(
            f"{args.mode} mode, upstream {args.upstream}: {len(node.pids())} server processes, "
            f"idle PSS {idle:.0f} MB",
            flush=True,
        )
        for calls in steps:
            step = await run_step(node.url, calls, args.seconds, node, speech_frames, idle)
            out["steps"].append(step)
            print(fmt(step), flush=True)
            if step["gap_p99_ms"] > GAP_LIMIT_MS * 2 or step["lost"] > calls * 10:
                break  # far past the knee
            await asyncio.sleep(2.0)
        good = [s["calls"] for s in out["steps"] if s["gap_p99_ms"] <= GAP_LIMIT_MS and s["lost"] == 0]
        out["knee"] = max(good) if good else 0
        print(
            f"knee: {out['knee']} concurrent calls (p99 gap <= {GAP_LIMIT_MS:.0f} ms, no frame lost)",
            flush=True,
        )
        if args.mode == "prod" and args.kills and args.upstream == "echo":
            out["kill_silence_ms"] = await kill_recovery(node, args.kills)
            s = out["kill_silence_ms"]
            print(
                f"shard kill -> agent audio again: median {statistics.median(s):.0f} ms, max {max(s):.0f} ms "
                f"over {len(s)} kills",
                flush=True,
            )
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mode", choices=["dev", "prod"], default="prod")
    p.add_argument("--upstream", choices=["echo", "embedded"], default="echo")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--calls", help="comma-separated steps")
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--kills", type=int, default=3)
    p.add_argument("--quick", action="store_true")
    p.add_argument(
        "--driver-loop",
        choices=["auto", "uvloop", "asyncio"],
        default="auto",
        help="the driver's own event loop (auto: uvloop where installed; it shares the 2 cores)",
    )
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args()
    if args.calls is None:
        if args.upstream == "embedded":
            args.calls = "2,4,8" if args.quick else "2,4,8,12,16,20,24"
        else:
            args.calls = "50,150" if args.quick else "50,100,200,300,350,400,500"
    if args.quick:
        args.seconds, args.kills = min(args.seconds, 8.0), min(args.kills, 1)
    out = eventloop.run(main_async(args), args.driver_loop)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
