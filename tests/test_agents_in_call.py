"""Remote agents and signed call events in real calls: the user's webhook and event
receiver are real aiohttp servers on loopback."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest
from aiohttp import web

from callbridge.agents.signing import verify
from callbridge.cli import bundled_turns
from callbridge.sim.caller import SimulatedCall
from callbridge.sim.wavio import read_wav

SECRET = "events-secret"
AGENT_SECRET = "agent-secret"


async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


@pytest.mark.slow
@pytest.mark.alone
async def test_webhook_agent_and_signed_events(start_server):
    turns: list[dict] = []
    events: list[dict] = []
    bad_signatures = 0
    failures_left = 1

    async def on_turn(request: web.Request) -> web.Response:
        nonlocal failures_left, bad_signatures
        body = await request.read()
        if not verify(
            AGENT_SECRET,
            request.headers.get("X-Callbridge-Timestamp"),
            body,
            request.headers.get("X-Callbridge-Signature"),
            time.time(),
        ):
            bad_signatures += 1
            return web.Response(status=401)
        if failures_left:  # the first try fails: the caller hears the fallback, then the retry
            failures_left -= 1
            return web.Response(status=503, text="warming up")
        turn = orjson.loads(body)
        turns.append(turn)
        return web.json_response({"text": f"Your server heard: {turn['transcript']}.", "end_call": True})

    async def on_event(request: web.Request) -> web.Response:
        nonlocal bad_signatures
        body = await request.read()
        if not verify(
            SECRET,
            request.headers.get("X-Callbridge-Timestamp"),
            body,
            request.headers.get("X-Callbridge-Signature"),
            time.time(),
        ):
            bad_signatures += 1
            return web.Response(status=401)
        events.append(orjson.loads(body))
        return web.Response(status=204)

    app = web.Application()
    app.add_routes([web.post("/turn", on_turn), web.post("/events", on_event)])
    runner, user = await _serve(app)
    try:
        url = await start_server(
            greeting="Hi.",
            agent="webhook",
            agent_webhook_url=user + "/turn",
            agent_webhook_secret=AGENT_SECRET,
            events_url=user + "/events",
            events_secret=SECRET,
        )
        result = await SimulatedCall(url, audio=[read_wav(bundled_turns()[0])], polite=True, hold_s=8).run()
        for _ in range(100):  # events are posted in the background
            if any(e["event"] == "call.ended" for e in events):
                break
            await asyncio.sleep(0.05)
    finally:
        await runner.cleanup()

    assert bad_signatures == 0
    assert len(turns) == 1 and "appointment" in turns[0]["transcript"]
    assert turns[0]["callSid"] == result.call_sid
    timeline = result.record["timeline"]
    names = [e["event"] for e in timeline]
    assert "agent.error" in names and "fallback_synthesised" in names
    reply = next(e for e in timeline if e["event"] == "agent.reply")
    assert reply["text"].startswith("Your server heard: i would like to book")
    assert result.record["stop_reason"] == "the agent ended the call"  # end_call honoured
    assert [e["event"] for e in events] == ["call.started", "transcript.final", "agent.reply", "call.ended"]
    assert all(e["callSid"] == result.call_sid for e in events)
    assert events[1]["data"]["text"] == turns[0]["transcript"]
