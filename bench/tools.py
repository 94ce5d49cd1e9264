"""The bridge's own overhead per tool call, side by side in one run.

    python bench/tools.py           # ~5 s
    python bench/tools.py --quick   # ~1 s

Four ways to run the same tool, medians over repeats (µs per call, perf_counter_ns, GC off
during each repeat):

- ``direct``: the handler awaited by hand with a context whose ``act`` answers at once
  (what a tool costs with no bridge around it);
- ``run_tool``: through ``callbridge.tools.run_tool`` (arguments parsed from the model's
  JSON and checked against the schema, ``wait_for`` with the timeout, the filler timer, the
  result's size checked, ``tool.called`` noted), same context;
- ``actors``: the handler awaited with the embedded back end's real ``CallTools`` on a
  real ``Upstream`` actor, so its ``act`` is ``Port.act`` -> ``CallAction`` -> the real
  ``CallSupervisor`` -> ``CallIO.act`` -> ``ActionDone`` -> the Upstream's future (the
  CallIO answers on the next loop iteration, as the gateway's ``Call.act`` does at best);
- ``run_tool+actors``: both, the whole path an agent's tool call takes in a call.

The tool is ``send_dtmf`` (a telephony tool: its handler only calls ``ctx.act``), so what
is measured is the bridge, not the tool. ``overhead_us`` = ``run_tool+actors`` - ``direct``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

from callbridge import actions
from callbridge.actions import TELEPHONY_TOOLS
from callbridge.actors import messages as m
from callbridge.actors.runtime import Dispatcher
from callbridge.actors.supervisor import CallSupervisor
from callbridge.codecs.marks import MarkName
from callbridge.config import Settings
from callbridge.tools import run_tool, toolbox
from callbridge.upstreams.calltools import CallTools

ARGS = '{"digits": "1234#"}'


class InstantContext:
    """A call whose actions answer at once (no bridge)."""

    call_sid = "CAbench"

    async def act(self, kind: str, **args: Any) -> dict[str, Any]:
        return {"ok": True, "kind": kind}

    def note(self, event: str, **data: Any) -> None:
        pass

    def say(self, text: str) -> None:
        pass


class BenchIO:
    """The gateway side of a call: checks an action as ``Call.act`` does, answers it on the
    next loop iteration."""

    def send_frame(self, payload: bytes) -> None: ...
    def send_mark(self, mark: MarkName) -> None: ...
    def clear(self) -> float:
        return 0.0

    def notify_when_sent(self, utterance: int) -> None: ...
    def end(self, reason: str) -> None: ...
    def bind_upstream(self, provider: str, remote_id: str) -> None: ...
    def note(self, event: str, **data: Any) -> None: ...
    def outlive(self, closing: Coroutine[Any, Any, Any]) -> None:
        closing.close()

    def act(self, kind: str, args: dict[str, Any], done: Callable[[dict[str, Any]], None]) -> None:
        checked = actions.check(kind, args)
        asyncio.get_running_loop().call_soon(done, {"ok": True, "digits": checked.get("digits")})


async def per_call_us(fn: Callable[[], Awaitable[Any]], n: int, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        gc.disable()
        t = time.perf_counter_ns()
        for _ in range(n):
            await fn()
        times.append((time.perf_counter_ns() - t) / n / 1000)
        gc.enable()
    return statistics.median(times)


async def measure(n: int, repeats: int) -> dict[str, float]:
    tools = toolbox(TELEPHONY_TOOLS)
    tool = tools["send_dtmf"]
    instant = InstantContext()
    d = Dispatcher(time.monotonic, check_messages=False, name="CAbench")
    d.add(
        CallSupervisor,
        None,
        Settings(greeting="", upstream="echo"),
        BenchIO(),
        m.CallStarted("CAbench", "MZbench"),
    )
    upstream: Any = d.actors["upstream"]
    real = CallTools(upstream, "CAbench", lambda text: None, None)
    args = {"digits": "1234#"}

    async def direct() -> None:
        await tool.handler(args, instant)

    async def checked() -> None:
        outcome = await run_tool(tools, "send_dtmf", ARGS, instant)
        assert outcome.ok

    async def actors() -> None:
        await tool.handler(args, real)

    async def whole() -> None:
        outcome = await run_tool(tools, "send_dtmf", ARGS, real)
        assert outcome.ok, outcome.error

    await whole()  # warm: the path works end to end
    out = {}
    for name, fn in (
        ("direct", direct),
        ("run_tool", checked),
        ("actors", actors),
        ("run_tool+actors", whole),
    ):
        out[name] = await per_call_us(fn, n, repeats)
    d.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description="The bridge's own overhead per tool call.")
    parser.add_argument("--json", help="also write the figures (µs) to this file")
    parser.add_argument("--quick", action="store_true", help="fewer calls and repeats (~1 s)")
    args = parser.parse_args()
    us = asyncio.run(measure(*((2_000, 5) if args.quick else (20_000, 9))))
    print(f"{'per tool call (send_dtmf)':<40} {'µs':>8}")
    for name, value in us.items():
        print(f"{name:<40} {value:8.1f}")
    overhead = us["run_tool+actors"] - us["direct"]
    print(f"the bridge's overhead per tool call: {overhead:.1f} µs")
    if args.json:
        Path(args.json).write_text(json.dumps({"us_per_call": us, "overhead_us": overhead}, indent=2))


if __name__ == "__main__":
    main()
