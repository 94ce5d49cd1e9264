"""Call events POSTed to a real local receiver: retried under ``events.RETRY`` (a 5xx is
tried again after 0.5 then 1 s), dropped and counted after the third try."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable

from aiohttp import web

from callbridge.agents.signing import verify
from callbridge.gateway.events import RETRY, EventPoster

from .remote_fakes import serve

SECRET = "events-secret"


def receiver(answers: list[int], got: list[tuple[float, bytes]]) -> web.Application:
    """Answers each signed POST with the next status of ``answers`` (then 204)."""

    async def on_event(request: web.Request) -> web.Response:
        body = await request.read()
        headers = request.headers
        signed = verify(
            SECRET,
            headers.get("X-Callbridge-Timestamp"),
            body,
            headers.get("X-Callbridge-Signature"),
            time.time(),
        )
        got.append((time.monotonic(), body))
        return web.Response(status=(answers.pop(0) if answers else 204) if signed else 401)

    app = web.Application()
    app.router.add_post("/events", on_event)
    return app


async def _until(check: Callable[[], bool], limit_s: float = 10.0) -> None:
    deadline = time.monotonic() + limit_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_a_refused_event_is_retried_after_each_pause_then_delivered() -> None:
    got: list[tuple[float, bytes]] = []
    async with serve(receiver([503, 502], got)) as host:
        poster = EventPoster(f"http://{host}/events", SECRET)
        poster.start()
        poster.publish("started", "CA1", {"from": "+1555"})
        await _until(lambda: poster.sent == 1)
        await poster.stop()
    assert len(got) == 3 and got[0][1] == got[1][1] == got[2][1]  # the same event each time
    pauses = [b[0] - a[0] for a, b in itertools.pairwise(got)]
    assert RETRY.pauses_s == (0.5, 1.0)
    assert all(p <= took < p + 0.4 for p, took in zip(RETRY.pauses_s, pauses, strict=True))
    assert poster.dropped == 0


async def test_an_event_nobody_takes_is_dropped_after_the_last_try_and_the_next_goes_out() -> None:
    got: list[tuple[float, bytes]] = []
    async with serve(receiver([500, 500, 500], got)) as host:
        poster = EventPoster(f"http://{host}/events", SECRET)
        poster.start()
        poster.publish("started", "CA1", {})
        poster.publish("stopped", "CA1", {"reason": "twilio stop"})
        await _until(lambda: poster.sent == 1)
        await poster.stop()
    assert poster.dropped == 1 and len(got) == RETRY.attempts + 1
    assert b'"call.ended"' in got[-1][1]
