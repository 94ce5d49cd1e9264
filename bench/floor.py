"""The floor under the bridge's echo latency: a plain asyncio pass-through, same driver.

    python bench/floor.py                      # steps 1,50,150 calls, 15 s each
    python bench/floor.py --quick --json f.json
    python bench/floor.py --serve --port 8099  # only the pass-through server

The pass-through is the least a Media Streams server can do: a minimal aiohttp app that
answers the webhook with ``<Connect><Stream>`` and, on the WebSocket, parses each text
message as JSON and sends each ``media`` payload straight back in a ``media`` message
(no jitter buffer, no codec, no actors, no pacing). It runs in its own process, like the
bridge, and is driven by ``bench/load.py``'s ``LeanCall`` driver and ``run_step`` at the
same call counts, so its figures (echo latency p50/p99 of the loud marker frame sent
once a second, outbound gaps, loss, server CPU, memory per call) sit side by side with
``bench/load.py --upstream echo``: the bridge's added latency over the floor is the
difference, and ``python run.py bench`` reports the ratio.

Limits: loopback only; at most ``--max-calls`` (default 1000) calls per step; 64 KB per
message (the bridge's limit); no signatures checked (the driver signs; nothing is read).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from callbridge import eventloop
from callbridge.testing.load import GAP_LIMIT_MS, fmt, pss_mb, run_step
from callbridge.testing.nodes import ProcessNode

TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response><Connect><Stream url="{url}"/></Connect></Response>'


# -- the pass-through server ----------------------------------------------------------------


async def voice(request: web.Request) -> web.Response:
    await request.post()
    host = request.headers.get("Host", "127.0.0.1")
    return web.Response(text=TWIML.format(url=f"ws://{host}/media"), content_type="text/xml")


async def media(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(max_msg_size=1 << 16)
    await ws.prepare(request)
    async for msg in ws:
        if msg.type != WSMsgType.TEXT:
            break
        event = json.loads(msg.data)
        if event.get("event") == "media":
            await ws.send_str(
                json.dumps(
                    {
                        "event": "media",
                        "streamSid": event["streamSid"],
                        "media": {"payload": event["media"]["payload"]},
                    },
                    separators=(",", ":"),
                )
            )
        elif event.get("event") == "stop":
            break
    await ws.close()
    return ws


def serve(port: int) -> None:
    app = web.Application()
    app.router.add_post("/voice/inbound", voice)
    app.router.add_get("/media", media)
    web.run_app(
        app,
        host="127.0.0.1",
        port=port,
        print=lambda _: print(f"listening on {port}", flush=True),
        access_log=None,
        loop=eventloop.new_loop(),
    )  # the bridge's default loop: a like-for-like floor


# -- the driver -----------------------------------------------------------------------------


async def main_async(steps: list[int], seconds: float) -> dict[str, Any]:
    out: dict[str, Any] = {"mode": "floor", "upstream": "echo", "steps": []}
    with tempfile.TemporaryDirectory() as tmp:
        node = ProcessNode(Path(tmp), "floor", [sys.executable, str(Path(__file__).resolve()), "--serve"])  # noqa: ASYNC240 - once, before the run
        try:
            node.wait_ready(timeout_s=30)
            await asyncio.sleep(0.5)
            idle = pss_mb(node.pids())
            print(f"floor ({eventloop.resolve('auto')} pass-through): idle PSS {idle:.0f} MB", flush=True)
            for calls in steps:
                step = await run_step(node.url, calls, seconds, node, None, idle)
                out["steps"].append(step)
                print(fmt(step), flush=True)
                await asyncio.sleep(1.0)
        finally:
            node.close()
    good = [s["calls"] for s in out["steps"] if s["gap_p99_ms"] <= GAP_LIMIT_MS and s["lost"] == 0]
    out["knee"] = max(good) if good else 0
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--serve", action="store_true", help="run only the pass-through server")
    p.add_argument("--port", type=int, default=8099)
    p.add_argument("--calls", default="1,50,150", help="comma-separated steps")
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--max-calls", type=int, default=1000)
    p.add_argument("--quick", action="store_true", help="8 s per step")
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args()
    if args.serve:
        serve(args.port)
        return
    steps = [int(x) for x in args.calls.split(",")]
    if not steps or min(steps) < 1 or max(steps) > args.max_calls:
        p.error(f"--calls: steps between 1 and {args.max_calls} (--max-calls)")
    if args.quick:
        args.seconds = min(args.seconds, 8.0)
    out = eventloop.run(main_async(steps, args.seconds))  # the driver: as bench/load.py's
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
