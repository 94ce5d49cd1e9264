"""The long fuzz campaign (outside CI): every target of ``callbridge/testing/fuzz_targets.py``.

    python bench/fuzz.py --examples 20000                 # parsers 20000 each, sockets 2000 each
    python bench/fuzz.py --examples 2000 --socket-examples 500 --seed 7

Pure parsers (Media Streams inbound and outbound, stream tokens, actor frames) take
``--examples`` inputs each; the webhook (forms and raw bodies over HTTP) and the media
socket (fuzzed message sequences on real sockets, a bystander call streaming alongside)
take ``--socket-examples`` (default a tenth). Prints, per target, the inputs tried and
the crashes found (a crash: any outcome other than a result or the parser's own error;
hypothesis shrinks it and it is printed), then the bystander's figures. Exit status 1
if anything crashed.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import seed as seed_of

from callbridge.testing import fuzz_targets as ft


def campaign(
    name: str, strategy: Any, check: Callable[..., None], examples: int, seed: int
) -> tuple[int, int]:
    tried = 0

    def counted(value: Any) -> None:
        nonlocal tried
        tried += 1
        check(value)

    run = seed_of(seed)(
        settings(
            max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )(given(strategy)(counted))
    )
    t = time.monotonic()
    crashes = 0
    try:
        run()
    except Exception:
        crashes = 1
        traceback.print_exc()
    print(f"{name:<34} {tried:>7} inputs  {crashes} crashes  {time.monotonic() - t:6.1f} s", flush=True)
    return tried, crashes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--examples", type=int, default=20_000)
    p.add_argument("--socket-examples", type=int)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    logging.basicConfig(level=logging.ERROR)  # refusals are expected by the thousand: keep them quiet
    socket_examples = args.socket_examples or max(1, args.examples // 10)
    total_tried = total_crashes = 0
    for name, (strategy, check) in sorted(ft.TARGETS.items()):
        tried, crashes = campaign(name, strategy, check, args.examples, args.seed)
        total_tried, total_crashes = total_tried + tried, total_crashes + crashes
    gw = ft.GatewayThread()
    try:
        bystander = ft.Bystander(gw)
        for name, strategy, check in (
            ("webhook forms (HTTP)", ft.forms, lambda form: ft.check_webhook_form(gw, form)),
            ("webhook raw bodies (HTTP)", ft.raw_bodies, lambda body: ft.check_webhook_raw(gw, body)),
            ("media socket (WebSocket)", ft.media_inputs(), lambda case: ft.check_media_socket(gw, *case)),
        ):
            tried, crashes = campaign(name, strategy, check, socket_examples, args.seed)
            total_tried, total_crashes = total_tried + tried, total_crashes + crashes
        sent, echoed, worst = bystander.finish()
        health = gw.health()
        print(
            f"bystander call: {sent} frames sent, {echoed} echoed, worst gap {worst * 1000:.0f} ms; "
            f"gateway {health['status']}, {health['calls']} live calls, {health['tasks']} tasks",
            flush=True,
        )
        if echoed < sent - 5:
            total_crashes += 1
            print("the bystander call lost audio", flush=True)
    finally:
        gw.close()
    print(f"total: {total_tried} inputs tried, {total_crashes} crashes", flush=True)
    sys.exit(1 if total_crashes else 0)


if __name__ == "__main__":
    main()
