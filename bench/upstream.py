"""Added latency of the bridge itself with a remote back end (loopback; not a timed test).

    python bench/upstream.py            # 1 and 100 calls, 10 s each: openai-realtime, vapi, vapi-mulaw
    python bench/upstream.py --quick    # 1 and 100 calls, 4 s each

The gateway runs in its own process (``UPSTREAM=openai-realtime`` or ``vapi``, the latter
also with ``VAPI_AUDIO=mulaw``: "vapi-mulaw"); this process plays Twilio's side (webhook,
then one media frame every 20 ms per call) and a third one a minimal server for the
provider; all on loopback, one monotonic clock. Every 200 ms a call sends a probe frame;
the fake provider answers each probe it receives with 100 ms of agent audio at once.
Measured per probe:

- in: the probe leaves Twilio's socket (the bench's send) -> the provider's socket has it
  (the fake's receive): the Dejitter (for the mu-law back ends, openai-realtime and
  vapi-mulaw, the in-order path: no wait; for vapi's PCM, the jitter buffer:
  ``JITTER_MIN_MS``, 20 ms playout depth), Codec, Upstream, the provider's framing;
- out: the fake sends the answer -> its first frame arrives on Twilio's socket: Codec,
  framing, the outbound writer.

One loop sends every call's frames (woken every 5 ms; a probe's send time is taken when it
is written), to keep the load generator's own CPU down.

OpenAI Realtime passes mu-law through untouched, so its probes carry their send time in
the payload; for Vapi probes are loud frames after quiet, matched in order per call, the
fake's session found by the Vapi call id the gateway records.
Figures are medians and 99th percentiles over all probes after the first second of each
call; with 100 calls the three processes share the machine's cores, so the 100-call
figures include CPU contention (gateway CPU is reported too).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import multiprocessing
import os
import struct
import sys
import time
from collections import defaultdict
from pathlib import Path

import aiohttp
import numpy as np
import orjson
from aiohttp import WSMsgType, web

from callbridge.codecs import mediastreams as ms
from callbridge.codecs.g711 import ulaw_decode, ulaw_encode
from callbridge.sim.caller import SimulatedCall, parse_stream_twiml
from callbridge.testing.nodes import cpu_seconds, gateway

PROBE_EVERY = 10  # frames
WARMUP_S = 1.0
SILENCE = b"\xff" * 160
LOUD = ulaw_encode((8000 * np.sin(2 * np.pi * 500 * np.arange(160) / 8000)).astype(np.int16))
PROBE_TAG, ECHO_TAG = b"\x00PRB", b"\x00ECH"
LOUD_RMS = 2000.0


def tagged(tag: bytes, t: float) -> bytes:
    return (tag + struct.pack("<d", t)).ljust(160, b"\x80")


def tag_time(payload: bytes, tag: bytes) -> float | None:
    return struct.unpack("<d", payload[4:12])[0] if payload[:4] == tag else None


def loud(pcm: np.ndarray) -> bool:
    x = pcm.astype(np.float64)
    return bool(len(x)) and float(np.sqrt(np.mean(x * x))) > LOUD_RMS


class Fake:
    """The provider's side: minimal handshake, probe detection, immediate answers."""

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self.host = ""
        self.inbound: dict[float, float] = {}  # realtime: probe send time -> in-latency, exact
        self.recv: dict[str, list[float]] = defaultdict(list)  # vapi: per call id
        self.sent: dict[str, list[float]] = defaultdict(list)
        self.calls = 0
        self.mulaw: dict[str, bool] = {}

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/realtime", self.realtime)
        app.router.add_post("/call", self.create)
        app.router.add_get("/ws/{call_id}", self.vapi)
        return app

    async def realtime(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str('{"type":"session.created","session":{}}')
        items = 0
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            event = orjson.loads(msg.data)
            kind = event.get("type")
            if kind == "session.update":
                await ws.send_str('{"type":"session.updated","session":{}}')
            elif kind == "input_audio_buffer.append":
                now = time.monotonic()
                sent_at = tag_time(base64.b64decode(event["audio"]), PROBE_TAG)
                if sent_at is not None:
                    self.inbound[sent_at] = now - sent_at
                    items += 1
                    echo = (ECHO_TAG + struct.pack("<dd", time.monotonic(), sent_at)).ljust(160, b"\x80")
                    answer = base64.b64encode(echo + LOUD * 4).decode()
                    await ws.send_str(
                        orjson.dumps(
                            {"type": "response.output_audio.delta", "item_id": f"i{items}", "delta": answer}
                        ).decode()
                    )
                    await ws.send_str(
                        orjson.dumps({"type": "response.output_audio.done", "item_id": f"i{items}"}).decode()
                    )
        return ws

    async def create(self, request: web.Request) -> web.Response:
        self.calls += 1
        call_id = f"bench-{self.calls}"
        body = await request.json()
        self.mulaw[call_id] = body["transport"]["audioFormat"]["format"] == "mulaw"
        return web.json_response(
            {"id": call_id, "transport": {"websocketCallUrl": f"ws://{self.host}/ws/{call_id}"}}
        )

    async def vapi(self, request: web.Request) -> web.WebSocketResponse:
        call_id = request.match_info["call_id"]
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        quiet = True
        mulaw = self.mulaw.get(call_id, False)
        answer = (
            LOUD * 5
            if mulaw
            else (8000 * np.sin(2 * np.pi * 500 * np.arange(1600) / 16000)).astype("<i2").tobytes()
        )
        async for msg in ws:
            if msg.type != WSMsgType.BINARY:
                continue
            now = time.monotonic()
            is_loud = loud(ulaw_decode(msg.data) if mulaw else np.frombuffer(msg.data, "<i2"))
            if is_loud and quiet:
                self.recv[call_id].append(now)
                self.sent[call_id].append(time.monotonic())
                await ws.send_bytes(answer)
                await ws.send_str('{"type":"speech-update","status":"stopped","role":"assistant"}')
            quiet = not is_loud
        return ws


class _Stream:
    """One call's outbound media, sent by the shared ``Sender`` on the call's own schedule."""

    def __init__(self, ws, stream_sid, provider, t0, n, sends, done) -> None:
        self.ws, self.stream_sid, self.provider = ws, stream_sid, provider
        self.t0, self.n, self.sends, self.done = t0, n, sends, done
        self.k = 0


class Sender:
    """Sends every call's media frames from one loop (one wake-up per 5 ms, not one timer
    per call per frame), so the load generator costs less than the gateway it measures."""

    def __init__(self) -> None:
        self.streams: list[_Stream] = []
        self.task: asyncio.Task[None] | None = None

    def add(self, stream: _Stream) -> None:
        self.streams.append(stream)
        if self.task is None or self.task.done():
            self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while self.streams:
            now = time.monotonic()
            for st in list(self.streams):
                while st.k < st.n and st.t0 + st.k * 0.020 <= now:
                    k = st.k
                    st.k += 1
                    if k % PROBE_EVERY == PROBE_EVERY - 1:
                        t = time.monotonic()
                        payload = tagged(PROBE_TAG, t) if st.provider == "openai-realtime" else LOUD
                        st.sends.append(t)
                    else:
                        payload = SILENCE
                    try:
                        await st.ws.send_str(ms.twilio_media(k + 2, st.stream_sid, k + 1, k * 20, payload))
                    except (ConnectionError, RuntimeError):
                        st.k = st.n
                if st.k >= st.n:
                    self.streams.remove(st)
                    if not st.done.done():
                        st.done.set_result(None)
            await asyncio.sleep(0.005)


async def one_call(url: str, provider: str, seconds: float, out: dict, sender: Sender) -> None:
    call = SimulatedCall(url)
    r = call.result
    async with aiohttp.ClientSession() as http:
        stream_url, params = parse_stream_twiml(await call.post_webhook(http))
        async with http.ws_connect(stream_url) as ws:
            await ws.send_str(ms.twilio_connected())
            await ws.send_str(ms.twilio_start(1, r.stream_sid, r.call_sid, call.account_sid, params))
            sends: list[float] = []
            backs: list[float] = []
            outbound: dict[float, float] = {}  # probe send time -> out-latency
            # (the jitter buffer may conceal a late frame with a faded copy of a probe: the
            # fake then answers a probe time that was never sent; those are left out)
            last_loud = 0.0

            async def receive() -> None:
                nonlocal last_loud
                async for msg in ws:
                    if msg.type != WSMsgType.TEXT:
                        break
                    event = orjson.loads(msg.data)
                    if event.get("event") == "media":
                        now = time.monotonic()
                        payload = base64.b64decode(event["media"]["payload"])
                        if provider == "openai-realtime":
                            if payload[:4] == ECHO_TAG:
                                answered_at, probe_at = struct.unpack("<dd", payload[4:20])
                                if probe_at - t0 >= WARMUP_S:
                                    outbound.setdefault(probe_at, now - answered_at)
                        else:
                            if loud(ulaw_decode(payload)):
                                if now - last_loud > 0.1:  # a new answer (answers are 200 ms apart)
                                    backs.append(now)
                                last_loud = now
                    elif event.get("event") == "mark":
                        await ws.send_str(ms.twilio_mark(0, r.stream_sid, event["mark"]["name"]))

            t0 = time.monotonic()
            receiver = asyncio.ensure_future(receive())
            n = int(seconds / 0.020)
            done = asyncio.get_running_loop().create_future()
            sender.add(_Stream(ws, r.stream_sid, provider, t0, n, sends, done))
            await done
            await asyncio.sleep(0.3)
            await ws.send_str(ms.twilio_stop(n + 2, r.stream_sid, r.call_sid, call.account_sid))
            await asyncio.wait_for(receiver, 5)
        record = await call.fetch_record(http)
    remote = next(
        (e["remote_id"] for e in (record or {}).get("timeline", []) if e["event"] == "upstream.bound"), ""
    )
    out["calls"].append({"t0": t0, "sends": sends, "backs": backs, "outbound": outbound, "remote": remote})


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000 if values else float("nan")


def _fake_process(provider: str, conn) -> None:
    """The fake provider in its own process (same monotonic clock): serves until told to
    stop, then sends back what it measured."""

    async def main() -> None:
        fake = Fake(provider)
        runner = web.AppRunner(fake.app(), handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        fake.host = f"127.0.0.1:{runner.addresses[0][1]}"
        conn.send(fake.host)
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)
        await runner.cleanup()
        conn.send((fake.inbound, dict(fake.recv), dict(fake.sent)))

    asyncio.run(main())


async def measure(provider: str, calls: int, seconds: float) -> dict:
    ctx = multiprocessing.get_context("spawn")
    ours, theirs = ctx.Pipe()
    proc = ctx.Process(target=_fake_process, args=(provider, theirs), daemon=True)
    proc.start()
    loop = asyncio.get_running_loop()
    host = await loop.run_in_executor(None, ours.recv)
    env = {
        "UPSTREAM": provider.removesuffix("-mulaw"),
        "OPENAI_REALTIME_URL": f"ws://{host}/v1/realtime",
        "VAPI_AUDIO": "mulaw" if provider.endswith("-mulaw") else "pcm_s16le",
        "VAPI_API_URL": f"http://{host}",
        "VAPI_API_KEY": "bench",
        "VAPI_ASSISTANT_ID": "bench",
    }
    env["OPENAI_API_KEY"] = "bench"  # required with UPSTREAM=openai-realtime
    out: dict = {"calls": []}
    try:
        with gateway(**env) as (server, url):
            cpu0, wall0 = cpu_seconds(server.pid), time.monotonic()
            stagger = min(1.0, calls * 0.01)
            sender = Sender()
            await asyncio.gather(
                *(
                    _later(i * stagger / calls, one_call(url, provider, seconds, out, sender))
                    for i in range(calls)
                )
            )
            cpu, wall = cpu_seconds(server.pid) - cpu0, time.monotonic() - wall0
    finally:
        ours.send("stop")
        inbound, fake_recv, fake_sent = await loop.run_in_executor(None, ours.recv)
        proc.join(10)
    ins: list[float] = []
    outs: list[float] = []
    probes = 0
    for c in out["calls"]:
        keep = [i for i, t in enumerate(c["sends"]) if t - c["t0"] >= WARMUP_S]
        probes += len(keep)
        if provider == "openai-realtime":
            continue
        recv, sent = fake_recv.get(c["remote"], []), fake_sent.get(c["remote"], [])
        for i in keep:
            if i < len(recv):
                ins.append(recv[i] - c["sends"][i])
            if i < len(sent) and i < len(c["backs"]):
                outs.append(c["backs"][i] - sent[i])
    if provider == "openai-realtime":
        kept = {t for c in out["calls"] for t in c["sends"] if t - c["t0"] >= WARMUP_S}
        ins = [lat for sent_at, lat in inbound.items() if sent_at in kept]
        outs = [x for c in out["calls"] for t, x in c["outbound"].items() if t in kept]
    return {
        "provider": provider,
        "calls": calls,
        "in": ins,
        "out": outs,
        "probes": probes,
        "answered": len(outs),
        "cpu_pct_per_call": 100 * cpu / max(wall * calls, 1e-9),
    }


async def _later(delay: float, coro) -> None:
    await asyncio.sleep(delay)
    await coro


async def run(seconds: float, counts: list[int], providers: list[str], json_path: str | None = None) -> int:
    print(
        f"python {sys.version.split()[0]} | cpus {os.cpu_count()} | {seconds:.0f} s per call, "
        f"probe every {PROBE_EVERY * 20} ms, loopback"
    )
    print(
        "\n| provider | calls | in p50 | in p99 | out p50 | out p99 | probes answered / sent | gateway CPU per call |"
    )
    print("|---|---|---|---|---|---|---|---|")
    figures: dict[str, dict[str, float]] = {}
    for provider in providers:
        for calls in counts:
            r = await measure(provider, calls, seconds)
            print(
                f"| {provider} | {calls} | {pct(r['in'], 50):.1f} ms | {pct(r['in'], 99):.1f} ms | "
                f"{pct(r['out'], 50):.1f} ms | {pct(r['out'], 99):.1f} ms | {r['answered']}/{r['probes']} | "
                f"{r['cpu_pct_per_call']:.1f}% |",
                flush=True,
            )
            figures[f"{provider} x{calls}"] = {
                "in_p50_ms": pct(r["in"], 50),
                "in_p99_ms": pct(r["in"], 99),
                "out_p50_ms": pct(r["out"], 50),
                "out_p99_ms": pct(r["out"], 99),
                "answered": r["answered"],
                "probes": r["probes"],
                "cpu_pct_per_call": r["cpu_pct_per_call"],
            }
    if json_path:
        import json

        Path(json_path).write_text(json.dumps(figures, indent=2))  # noqa: ASYNC240 - once, after the run
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="4 s calls instead of 10 s")
    parser.add_argument("--calls", default="1,100", help="concurrency levels, comma-separated")
    parser.add_argument("--provider", choices=["openai-realtime", "vapi", "vapi-mulaw", "all"], default="all")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    counts = [max(1, min(200, int(c))) for c in args.calls.split(",")]
    providers = ["openai-realtime", "vapi", "vapi-mulaw"] if args.provider == "all" else [args.provider]
    return asyncio.run(run(4.0 if args.quick else 10.0, counts, providers, args.json))


if __name__ == "__main__":
    sys.exit(main())
