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

from callbridge import eventloop
from callbridge.codecs.g711 import ulaw_encode
from callbridge.sim.caller import SimulatedCall
from callbridge.speech.tts import EspeakTTS
from callbridge.testing.audio import speech
from callbridge.testing.load import GAP_LIMIT_MS, fmt, pss_mb, run_step
from callbridge.testing.nodes import AUTH_TOKEN, CONSOLE_TOKEN, PUBLIC_URL, ProcessNode, ProdNode

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
