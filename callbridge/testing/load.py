"""Twilio at scale for the load benchmarks: ``LeanCall`` (one call's Twilio side, as cheap
as can be, so hundreds run in one process) and ``run_step`` (that many calls on one shared
20 ms schedule for a while, measured: frame gaps, frames lost, echo latency, server CPU and
memory per call). ``bench/load.py`` drives the bridge with it, ``bench/floor.py`` a plain
pass-through, ``bench/soak.py`` short calls."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from callbridge.codecs import mediastreams as ms
from callbridge.codecs.framing import FRAME_S
from callbridge.codecs.g711 import ulaw_encode
from callbridge.gateway.security import SignatureChecker
from callbridge.sim.caller import new_sid, parse_stream_twiml
from callbridge.testing.nodes import AUTH_TOKEN, PUBLIC_URL, ProdNode, cpu_seconds

QUIET = base64.b64encode(ulaw_encode((np.random.default_rng(1).normal(0, 30, 160)).astype(np.int16))).decode()
LOUD = base64.b64encode(ulaw_encode((np.sin(np.arange(160) / 3) * 12000).astype(np.int16))).decode()
GAP_LIMIT_MS = 40.0
ACCOUNT_SID = "AC" + "0" * 32


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
    latency = [(h - s) * 1000 for c in lean for s, h in zip(c.loud_sent, c.loud_heard, strict=False)]
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
