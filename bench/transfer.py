"""From an agent's transfer decision to Twilio's REST request: the bridge's own time.

    python bench/transfer.py            # 30 calls, ~40 s
    python bench/transfer.py --quick    # 10 calls

Each call is a real one: the gateway (in this process, dev mode, embedded agent), the
simulator playing Twilio's side over real sockets, and the local REST fake
(``callbridge/testing/fake_twilio.py``) standing in for ``api.twilio.com`` on loopback. Once the call's
greeting has played, a ``CallAction(transfer, cold)`` goes to the call's supervisor, as
the Upstream actor sends it when an agent's tool asks for a transfer (``Port.act``); the
clock stops when the ``Calls/{CallSid}.json`` request with the ``<Dial>`` TwiML reaches
the fake. What is measured: the actors' hop, ``Call.act`` (checks), the telephony's
handover check (the greeting has played, so no wait: this is not the handover line's
length), building the TwiML and the ``twilio`` library's request over a kept-alive
connection. Then the simulator runs the ``<Dial>`` and the call ends. Target: <= 50 ms.
Also reported: the same for ``send_dtmf`` (``<Play digits>`` + ``<Connect><Stream>``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path

from aiohttp import web

from callbridge.actors import messages as m
from callbridge.cli import Server
from callbridge.config import Settings
from callbridge.gateway.context import GATEWAY
from callbridge.sim.caller import SimulatedCall
from callbridge.testing.fake_twilio import ACCOUNT, TOKEN, FakeTwilioApi

TARGET_MS = 50.0


class TimedApi(FakeTwilioApi):
    """The fake, noting when each request arrives (before it is read)."""

    def __init__(self) -> None:
        super().__init__()
        self.arrived: list[tuple[float, str]] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.arrived.append((time.perf_counter(), request.path))
        return await super().handle(request)


async def one(url: str, server: Server, api: TimedApi, kind: str) -> float:
    """One call, one action once the greeting has played: ms from the CallAction to the request."""
    call = SimulatedCall(url, auth_token=TOKEN, hold_s=20.0, max_s=30.0, to_number="+15550001111")
    call.dial_hold_s = 0.05
    api.attach(call)
    running = asyncio.create_task(call.run())
    assert server.app is not None
    gw = server.app[GATEWAY]
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        live = gw.registry.live.get(call.call_sid)
        if live is not None and live.marks_played and live.played_out():
            break
        await asyncio.sleep(0.01)
    else:
        raise RuntimeError("the greeting never finished playing")
    args = {"mode": "cold"} if kind == "transfer" else {"digits": "1w2"}
    path = f"/Calls/{call.call_sid}.json"
    before = len(api.arrived)
    t0 = time.perf_counter()
    live.dispatcher.tell("supervisor", m.CallAction(1, kind, args))
    while not any(p.endswith(path) for _, p in api.arrived[before:]):
        if time.perf_counter() - t0 > 5:
            raise RuntimeError(f"no REST request for {kind}")
        await asyncio.sleep(0.0005)
    t1 = next(t for t, p in api.arrived[before:] if p.endswith(path))
    if kind == "send_dtmf":  # the call resumed on a new stream: end it
        while len(call.result.streams) < 2 and time.perf_counter() - t0 < 10:  # noqa: ASYNC110 - polled
            await asyncio.sleep(0.01)
        resumed = gw.registry.live.get(call.call_sid)
        if resumed is not None:
            resumed.end("the agent ended the call")
    await asyncio.wait_for(running, 30)
    return (t1 - t0) * 1000.0


async def run(n: int) -> dict[str, object]:
    api = TimedApi()
    runner = web.AppRunner(api.app(), handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host = f"127.0.0.1:{runner.addresses[0][1]}"
    server = Server(
        Settings(
            host="127.0.0.1",
            port=0,
            twilio_auth_token=TOKEN,
            twilio_account_sid=ACCOUNT,
            twilio_api_url=f"http://{host}",
            transfer_to="+15557654321",
            log_level="WARNING",
        )
    )
    url = await server.start()
    try:
        out: dict[str, object] = {"calls": n, "target_ms": TARGET_MS}
        for kind in ("transfer", "send_dtmf"):
            await one(url, server, api, kind)  # warm-up: first connection, imports
            ms = [await one(url, server, api, kind) for _ in range(n)]
            out[kind] = {
                "median_ms": round(statistics.median(ms), 2),
                "p90_ms": round(sorted(ms)[int(0.9 * (len(ms) - 1))], 2),
                "max_ms": round(max(ms), 2),
                "min_ms": round(min(ms), 2),
            }
        return out
    finally:
        await server.stop()
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--calls", type=int, default=0)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    n = args.calls or (10 if args.quick else 30)
    result = asyncio.run(run(n))
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
