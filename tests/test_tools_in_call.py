"""Tools in real calls: the simulator calls the real gateway (``AGENT=openai``), whose agent
talks to the strict fake Chat Completions server; the user's tools are a real aiohttp
server at ``TOOLS_URL`` that checks each request's signature. All on loopback."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from callbridge.agents.signing import verify
from callbridge.cli import bundled_turns
from callbridge.codecs.marks import MarkName
from callbridge.sim.caller import SimulatedCall
from callbridge.sim.wavio import read_wav
from tests.conftest import events
from tests.test_agent_openai import FakeLLM, chunk, sse, tool_call_chunks

SECRET = "tools-secret"
STOP = [sse(chunk(finish="stop")), sse("[DONE]")]
SLOTS = {
    "name": "check_slots",
    "description": "Free appointment times on a day.",
    "parameters": {"type": "object", "properties": {"day": {"type": "string"}}, "required": ["day"]},
}
SLOW = {
    "name": "slow_lookup",
    "description": "Slow.",
    "timeout_s": 5,
    "filler": "Let me look that up for you.",
}
BROKEN = {"name": "broken", "description": "Always fails."}


class ToolServer:
    """The user's tools endpoint: ``GET`` lists the tools, ``POST`` runs one. Refuses (401)
    any request whose ``X-Callbridge-Signature`` does not sign its body."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.lists = 0
        self.bad_signatures = 0

    def signed(self, request: web.Request, body: bytes) -> bool:
        ok = verify(
            SECRET,
            request.headers.get("X-Callbridge-Timestamp"),
            body,
            request.headers.get("X-Callbridge-Signature"),
            time.time(),
        )
        self.bad_signatures += not ok
        return ok

    async def list_tools(self, request: web.Request) -> web.Response:
        if not self.signed(request, b""):
            return web.Response(status=401)
        self.lists += 1
        return web.json_response({"tools": [SLOTS, SLOW, BROKEN]})

    async def call(self, request: web.Request) -> web.Response:
        body = await request.read()
        if not self.signed(request, body):
            return web.Response(status=401)
        call = orjson.loads(body)
        self.calls.append(call)
        if call["name"] == "check_slots":
            return web.json_response({"result": {"day": call["arguments"]["day"], "free": ["3 PM"]}})
        if call["name"] == "slow_lookup":
            await asyncio.sleep(2.2)
            return web.json_response({"result": "found it"})
        return web.json_response({"error": "the database is down"})

    def app(self) -> web.Application:
        app = web.Application()
        app.add_routes([web.get("/tools", self.list_tools), web.post("/tools", self.call)])
        return app


@pytest.fixture
async def servers(aiohttp_server):
    llm, tools = FakeLLM(), ToolServer()
    llm_server = await aiohttp_server(llm.app())
    llm.base_url = str(llm_server.make_url("/v1"))
    tools_server = await aiohttp_server(tools.app())
    return llm, tools, str(tools_server.make_url("/tools"))


def calling(*calls: tuple[str, str, str], text: str = "") -> list[bytes]:
    """A model round that says ``text`` and then calls ``calls`` (id, name, arguments)."""
    out = [sse(chunk(text))] if text else []
    for index, (call_id, name, arguments) in enumerate(calls):
        out += tool_call_chunks(call_id, name, arguments, index=index)
    return [*out, sse(chunk(finish="tool_calls")), sse("[DONE]")]


def outputs(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The tool outputs the model was sent, by call id."""
    return {m["tool_call_id"]: orjson.loads(m["content"]) for m in body["messages"] if m["role"] == "tool"}


async def call_with(start_server, llm: FakeLLM, tools_url: str, **settings: Any) -> Any:
    url = await start_server(
        greeting="Hi.",
        agent="openai",
        openai_base_url=llm.base_url,
        openai_model="tiny",
        tools_url=tools_url,
        tools_secret=SECRET,
        **settings,
    )
    result = await SimulatedCall(url, audio=[read_wav(bundled_turns()[0])], polite=True, hold_s=10).run()
    return url, result


@pytest.mark.slow
async def test_the_model_calls_a_user_tool_over_tools_url(start_server, servers, aiohttp_server):
    llm, tools, tools_url = servers
    posted: list[dict[str, Any]] = []

    async def on_event(request: web.Request) -> web.Response:
        posted.append(orjson.loads(await request.read()))
        return web.Response(status=204)

    receiver = web.Application()
    receiver.add_routes([web.post("/events", on_event)])
    events_url = str((await aiohttp_server(receiver)).make_url("/events"))

    def answer(body: dict[str, Any]) -> list[bytes]:
        out = outputs(body)["c1"]
        return [sse(chunk(f"{out['result']['day']} at {out['result']['free'][0]} is free. Goodbye.")), *STOP]

    llm.scripts = [calling(("c1", "check_slots", '{"day": "Tuesday"}'), text="Let me check. "), answer]
    url, result = await call_with(start_server, llm, tools_url, events_url=events_url, events_secret="ev")

    assert tools.bad_signatures == 0 and tools.lists == 1
    assert tools.calls == [
        {"callSid": result.call_sid, "name": "check_slots", "arguments": {"day": "Tuesday"}}
    ]
    offered = {t["function"]["name"] for t in llm.requests[0]["json"]["tools"]}
    assert offered == {"check_slots", "slow_lookup", "broken", "end_call", "transfer_call", "send_dtmf"}
    (called,) = events(result, "tool.called")
    assert called["name"] == "check_slots" and called["ok"] is True and called["duration_ms"] >= 0
    (reply,) = events(result, "agent.reply")
    assert reply["text"] == "Let me check. Tuesday at 3 PM is free. Goodbye."
    assert result.record["stop_reason"] == "the agent ended the call"
    for _ in range(100):  # events are posted in the background
        if any(e["event"] == "call.ended" for e in posted):
            break
        await asyncio.sleep(0.05)
    tool_events = [e for e in posted if e["event"] == "tool.called"]
    assert [e["data"]["name"] for e in tool_events] == ["check_slots"]
    async with aiohttp.ClientSession() as http, http.get(url + "/metrics") as resp:
        metrics = await resp.text()
    assert 'callbridge_tool_calls_total{name="check_slots",ok="true"} 1.0' in metrics
    assert "callbridge_tool_call_seconds_count 1.0" in metrics


@pytest.mark.slow
async def test_end_call_ends_the_call_after_the_goodbye_has_played(start_server, servers):
    llm, _, tools_url = servers
    llm.scripts = [calling(("e1", "end_call", "{}"), text="You're all set for Tuesday."), STOP]
    _, result = await call_with(start_server, llm, tools_url)

    (reply,) = events(result, "agent.reply")
    assert reply["text"] == "You're all set for Tuesday."
    assert result.record["stop_reason"] == "the agent ended the call"
    (called,) = events(result, "tool.called")
    assert called["name"] == "end_call" and called["ok"] is True
    # the goodbye was played whole (its end mark came back) before the call ended
    assert str(MarkName(reply["utterance"])) in [name for _, name in result.marks_echoed]
    (synthesised,) = [e for e in events(result, "reply_synthesised") if e["utterance"] == reply["utterance"]]
    assert synthesised["audio_ms"] > 1000
    assert outputs(llm.requests[1]["json"])["e1"]["ok"] is True


@pytest.mark.slow
async def test_a_slow_tool_gets_the_filler_and_failures_are_told_to_the_model(start_server, servers):
    llm, tools, tools_url = servers

    def answer(body: dict[str, Any]) -> list[bytes]:
        out = outputs(body)
        assert out["s"] == {"ok": True, "result": "found it"}
        assert out["b"] == {"ok": False, "error": "ServedToolError: the database is down"}
        # no Twilio credentials here: the gateway refuses the transfer, and the model hears why
        assert out["t"]["ok"] is False and "TWILIO_ACCOUNT_SID" in out["t"]["error"]
        return [sse(chunk("Found it, but the rest is down, and I can't transfer you.")), *STOP]

    llm.scripts = [
        calling(
            ("s", "slow_lookup", "{}"),
            ("b", "broken", "{}"),
            ("t", "transfer_call", '{"to": "+15551234567", "mode": "cold"}'),
            text="One second.",
        ),
        answer,
    ]
    # the slow tool takes longer than AGENT_TIMEOUT_S: a tool's time is not the agent's
    _, result = await call_with(start_server, llm, tools_url, agent_timeout_s=1.5)

    assert len(llm.requests) == 2, "the model got the outcomes (its script asserts them)"
    assert not events(result, "agent.error")
    assert [(e["name"], e["ok"]) for e in events(result, "tool.called")] == [
        ("slow_lookup", True),
        ("broken", False),
        ("transfer_call", False),
    ]
    (reply,) = events(result, "agent.reply")
    assert reply["text"] == "One second.Found it, but the rest is down, and I can't transfer you."
    (spoken,) = [e for e in events(result, "reply_synthesised") if e["utterance"] == reply["utterance"]]
    assert "Let me look that up for you." in spoken["text"]  # the filler, within the reply
    assert [c["name"] for c in tools.calls] == ["slow_lookup", "broken"]
