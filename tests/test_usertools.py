"""``TOOLS_URL``: the definitions read and checked, each call POSTed signed, the answers
bounded; against a real aiohttp server on loopback. Also what binding tools to an agent
leaves out of its checkpoint."""

from __future__ import annotations

import asyncio
import pickle
import time
from typing import Any

import orjson
import pytest
from aiohttp import web

from callbridge import usertools
from callbridge.agents import create_agent
from callbridge.agents.signing import verify
from callbridge.config import ToolOptions
from callbridge.tools import run_tool, toolbox
from callbridge.usertools import (
    MAX_ANSWER_BYTES,
    MAX_SERVED,
    ServedToolError,
    ServedTools,
    load_served,
    served_tools,
)

SECRET = "s3cret"


class Ctx:
    call_sid = "CAuser"

    def __init__(self) -> None:
        self.notes: list[tuple[str, dict[str, Any]]] = []

    async def act(self, kind: str, **args: Any) -> dict[str, Any]:
        return {"ok": False, "error": "none here"}

    def note(self, event: str, **data: Any) -> None:
        self.notes.append((event, data))

    def say(self, text: str) -> None:
        pass


class Endpoint:
    def __init__(self) -> None:
        self.listing: Any = {
            "tools": [{"name": "echo", "description": "Echo.", "parameters": {"type": "object"}}]
        }
        self.answer: Any = {"result": "pong"}
        self.status = 200
        self.received: list[bytes] = []
        self.gets = 0

    async def get(self, request: web.Request) -> web.Response:
        self.gets += 1
        assert verify(
            SECRET,
            request.headers.get("X-Callbridge-Timestamp"),
            b"",
            request.headers.get("X-Callbridge-Signature"),
            time.time(),
        )
        return web.json_response(self.listing, status=self.status)

    async def post(self, request: web.Request) -> web.Response:
        body = await request.read()
        assert verify(
            SECRET,
            request.headers.get("X-Callbridge-Timestamp"),
            body,
            request.headers.get("X-Callbridge-Signature"),
            time.time(),
        )
        self.received.append(body)
        if isinstance(self.answer, bytes):
            return web.Response(body=self.answer, content_type="application/json")
        return web.json_response(self.answer, status=self.status)


@pytest.fixture
async def endpoint(aiohttp_server):
    ep = Endpoint()
    app = web.Application()
    app.add_routes([web.get("/t", ep.get), web.post("/t", ep.post)])
    server = await aiohttp_server(app)
    return ep, str(server.make_url("/t"))


async def test_definitions_and_a_signed_call(endpoint):
    ep, url = endpoint
    (tool,) = await ServedTools(url, SECRET).load()
    assert tool.name == "echo" and tool.filler == "One moment, please." and tool.timeout_s == 10.0
    ctx = Ctx()
    outcome = await run_tool(toolbox([tool]), "echo", '{"x": 1}', ctx)
    assert outcome.ok and outcome.result == "pong"
    assert orjson.loads(ep.received[0]) == {"callSid": "CAuser", "name": "echo", "arguments": {"x": 1}}
    assert ctx.notes[0][0] == "tool.called"


@pytest.mark.parametrize(
    "answer, status, error",
    [
        ({"error": "no slots"}, 200, "no slots"),
        ({"nothing": 1}, 200, 'must answer {"result": ...}'),
        ({"result": 1}, 500, "answered HTTP 500"),
        (b"[1, 2]", 200, "must be a JSON object"),
        (b"{" + b" " * MAX_ANSWER_BYTES + b"}", 200, "over the"),
    ],
)
async def test_failed_calls_are_outcomes_for_the_model(endpoint, answer, status, error):
    ep, url = endpoint
    (tool,) = await ServedTools(url, SECRET).load()
    ep.answer, ep.status = answer, status
    outcome = await run_tool(toolbox([tool]), "echo", {}, Ctx())
    assert not outcome.ok and error in outcome.error


@pytest.mark.parametrize(
    "listing, error",
    [
        ({"tool": []}, 'must be {"tools"'),
        ([], "must be a JSON object"),
        ({"tools": [{"name": "bad name", "description": ""}]}, "tool name"),
        ({"tools": [{"name": "a", "parameters": {"type": "array"}}]}, "type object"),
        ({"tools": [{"name": "a", "timeout_s": 600}]}, "timeout_s"),
        ({"tools": [{"name": "a", "filler": 3}]}, "filler"),
        ({"tools": [{"name": "a", "url": "x"}]}, "unknown field(s) url"),
        ({"tools": [{"name": "a"}, {"name": "a"}]}, "two tools are called"),
        ({"tools": [{"name": f"t{i}"} for i in range(MAX_SERVED + 1)]}, f"at most {MAX_SERVED}"),
    ],
)
async def test_bad_definitions_are_refused_with_a_reason(endpoint, listing, error):
    ep, url = endpoint
    ep.listing = listing
    with pytest.raises(
        ServedToolError, match=error.replace("(", r"\(").replace(")", r"\)").replace("{", r"\{")
    ):
        await ServedTools(url, SECRET).load()


async def test_loaded_once_and_a_failure_is_retried_later(endpoint, monkeypatch):
    ep, url = endpoint
    ep.status = 503
    options = ToolOptions(url=url, secret=SECRET)
    assert await load_served(options) == ()
    assert served_tools(options) == ()  # tried just now: not again yet
    assert ep.gets == 1
    monkeypatch.setattr(usertools, "RELOAD_AFTER_S", 0.0)
    ep.status = 200
    assert served_tools(options) == ()  # this call goes without; a fetch starts
    for _ in range(100):
        if served_tools(options):
            break
        await asyncio.sleep(0.02)
    assert [t.name for t in served_tools(options)] == ["echo"]
    assert await load_served(options) is served_tools(options)  # kept: no new fetch
    assert ep.gets == 2
    assert served_tools(ToolOptions()) == ()


def test_an_agent_bound_to_a_call_still_pickles_without_it():
    agent = create_agent("openai", base_url="http://127.0.0.1:9/v1", model="m")

    served = ServedTools("http://127.0.0.1:9/t", SECRET).definitions({"tools": [{"name": "mine"}]})
    agent.bind(Ctx(), served)
    assert "mine" in agent.all_tools() and "end_call" in agent.all_tools()
    copy = pickle.loads(pickle.dumps(agent))
    assert copy.context is None and copy.served_tools == () and "mine" not in copy.all_tools()
