"""The OpenAI-compatible agent's function-calling loop against the strict fake Chat
Completions server (``tests/test_agent_openai.py``'s ``FakeLLM``, on loopback): streamed
tool calls put together, run, answered with ``role: "tool"`` messages OpenAI accepts, the
reply carried on; failures told to the model; the rounds bounded."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import orjson
import pytest

from callbridge.agents import AgentError, reply_text
from callbridge.agents.openai_chat import MAX_TOOL_ROUNDS, OpenAIChatAgent
from callbridge.tools import Tool
from tests.test_agent_openai import FakeLLM, chunk, llm, post, sse, tool_call_chunks, tool_problem

__all__ = ["llm"]  # the fixture, used by name

STOP = [sse(chunk(finish="stop")), sse("[DONE]")]


class CallContext:
    """A call as a tool sees it, recorded: what the agent's tools did to it. (The real
    one, the embedded back end's ``CallTools``, is exercised in test_tools_in_call.py.)"""

    call_sid = "CAtools"

    def __init__(self) -> None:
        self.acts: list[tuple[str, dict[str, Any]]] = []
        self.notes: list[tuple[str, dict[str, Any]]] = []
        self.said: list[str] = []

    async def act(self, kind: str, **args: Any) -> dict[str, Any]:
        self.acts.append((kind, args))
        return {"ok": True} if kind == "hang_up" else {"ok": False, "error": f"{kind}: not available"}

    def note(self, event: str, **data: Any) -> None:
        self.notes.append((event, data))

    def say(self, text: str) -> None:
        self.said.append(text)


async def _weather(args: dict[str, Any], ctx: Any) -> dict[str, Any]:
    if args["city"] == "Atlantis":
        raise LookupError("no such city")
    return {"city": args["city"], "sky": "sunny"}


class WeatherAgent(OpenAIChatAgent):
    def tools(self) -> list[Tool]:
        schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
        return [Tool("weather", "The weather in a city.", schema, _weather)]


def make(
    llm: FakeLLM, cls: type[OpenAIChatAgent] = WeatherAgent, **kw: Any
) -> tuple[OpenAIChatAgent, CallContext]:
    agent = cls(base_url=llm.base_url, model="tiny", **kw)
    ctx = CallContext()
    agent.bind(ctx)
    return agent, ctx


def answer_with_result(body: dict[str, Any]) -> list[bytes]:
    """The model's second round: it reads the tool's output and says it."""
    last = body["messages"][-1]
    assert last["role"] == "tool"
    out = orjson.loads(last["content"])
    text = f"It is {out['result']['sky']}." if out["ok"] else f"Sorry: {out['error']}."
    return [sse(chunk(text)), *STOP]


async def test_a_streamed_tool_call_is_run_and_the_reply_goes_on(llm):
    llm.scripts = [
        [
            sse(chunk("Let me check. ")),
            *tool_call_chunks("call_w1", "weather", '{"city": "Paris"}'),
            sse(chunk(finish="tool_calls")),
            sse("[DONE]"),
        ],
        answer_with_result,
    ]
    agent, ctx = make(llm)
    pieces = []
    async with contextlib.aclosing(agent.reply("what's the weather in paris")) as gen:
        async for piece in gen:
            pieces.append(piece)
    assert pieces == ["Let me check. ", "It is sunny."]  # what came before the call was spoken first
    first, second = (r["json"] for r in llm.requests)
    offered = {t["function"]["name"] for t in first["tools"]}
    assert offered == {"weather", "end_call", "transfer_call", "send_dtmf"}
    assert "tool_choice" not in first
    assert second["messages"][-2] == {
        "role": "assistant",
        "content": "Let me check. ",
        "tool_calls": [
            {
                "id": "call_w1",
                "type": "function",
                "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
            }
        ],
    }
    assert second["messages"][-1]["tool_call_id"] == "call_w1"
    assert [e for e, _ in ctx.notes] == ["tool.called"]
    assert ctx.notes[0][1]["name"] == "weather" and ctx.notes[0][1]["ok"] is True
    assert agent.state()["tool_calls"] == 1 and not agent.ended


async def test_a_failing_tool_bad_arguments_and_an_unknown_tool_are_told_to_the_model(llm):
    calls = [
        {
            "index": 0,
            "id": "a",
            "type": "function",
            "function": {"name": "weather", "arguments": '{"city": "Atlantis"}'},
        },
        {
            "index": 1,
            "id": "b",
            "type": "function",
            "function": {"name": "weather", "arguments": '{"town": 1}'},
        },
        {"index": 2, "id": "c", "type": "function", "function": {"name": "horoscope", "arguments": "{}"}},
        {
            "index": 3,
            "id": "d",
            "type": "function",
            "function": {"name": "weather", "arguments": "{not json"},
        },
    ]
    llm.scripts = [
        [sse(chunk(tool_calls=calls)), sse(chunk(finish="tool_calls")), sse("[DONE]")],
        [sse(chunk("Hmm.")), *STOP],
    ]
    agent, ctx = make(llm)
    assert await reply_text(agent, "weather please") == "Hmm."
    told = {
        m["tool_call_id"]: orjson.loads(m["content"])
        for m in llm.requests[1]["json"]["messages"]
        if m["role"] == "tool"
    }
    assert told["a"] == {"ok": False, "error": "LookupError: no such city"}
    assert not told["b"]["ok"] and "city" in told["b"]["error"]
    assert not told["c"]["ok"] and "no tool called 'horoscope'" in told["c"]["error"]
    assert told["d"] == {"ok": False, "error": "arguments are not JSON"}
    assert [d["ok"] for _, d in ctx.notes] == [False] * 4


async def test_a_transfer_that_the_bridge_cannot_carry_out_is_told_to_the_model(llm):
    llm.scripts = [
        [
            *tool_call_chunks("t1", "transfer_call", '{"to": "+15551234567"}'),
            sse(chunk(finish="tool_calls")),
            sse("[DONE]"),
        ],
        lambda body: [
            sse(
                chunk("I can't transfer you." if "not available" in body["messages"][-1]["content"] else "?")
            ),
            *STOP,
        ],
    ]
    agent, ctx = make(llm)
    assert await reply_text(agent, "a human please") == "I can't transfer you."
    assert ctx.acts == [("transfer", {"to": "+15551234567"})]


async def test_end_call_ends_the_call_and_a_silent_model_still_says_goodbye(llm):
    llm.scripts = [
        [*tool_call_chunks("e1", "end_call", "{}"), sse(chunk(finish="tool_calls")), sse("[DONE]")],
        STOP,
    ]
    agent, ctx = make(llm)
    assert await reply_text(agent, "bye") == "Goodbye."
    assert agent.ended
    assert ctx.acts == [("hang_up", {"reason": None})]


async def test_tool_rounds_are_bounded_and_the_last_request_asks_for_words(llm):
    forever = [
        *tool_call_chunks("x", "weather", '{"city": "Rome"}'),
        sse(chunk(finish="tool_calls")),
        sse("[DONE]"),
    ]
    llm.scripts = [forever] * MAX_TOOL_ROUNDS + [forever]  # it would go on calling tools
    agent, ctx = make(llm)
    assert await reply_text(agent, "weather, again and again") == ""
    assert len(llm.requests) == MAX_TOOL_ROUNDS + 1
    assert llm.requests[-1]["json"]["tool_choice"] == "none"
    assert len(ctx.notes) == MAX_TOOL_ROUNDS  # the last round's calls are dropped, not run


async def test_parallel_calls_interleaved_by_index(llm):
    a = tool_call_chunks("p0", "weather", '{"city": "Oslo"}', index=0)
    b = tool_call_chunks("p1", "weather", '{"city": "Lima"}', index=1)
    interleaved = [x for pair in zip(a, b, strict=True) for x in pair]
    llm.scripts = [
        [*interleaved, sse(chunk(finish="tool_calls")), sse("[DONE]")],
        [sse(chunk("Both sunny.")), *STOP],
    ]
    agent, _ = make(llm)
    assert await reply_text(agent, "oslo and lima") == "Both sunny."
    sent = llm.requests[1]["json"]["messages"]
    assert [c["function"]["arguments"] for c in sent[-3]["tool_calls"]] == [
        '{"city": "Oslo"}',
        '{"city": "Lima"}',
    ]
    assert [m["tool_call_id"] for m in sent[-2:]] == ["p0", "p1"]


async def test_calls_all_numbered_0_are_told_apart_by_id(llm):
    """Ollama's OpenAI-compatible endpoint gives every parallel call index 0."""
    a = tool_call_chunks("o1", "weather", '{"city": "Bern"}', index=0)
    b = tool_call_chunks("o2", "weather", '{"city": "Graz"}', index=0)
    llm.scripts = [[*a, *b, sse(chunk(finish="tool_calls")), sse("[DONE]")], [sse(chunk("Both.")), *STOP]]
    agent, ctx = make(llm)
    assert await reply_text(agent, "bern and graz") == "Both."
    assert [d["ok"] for _, d in ctx.notes] == [True, True]
    assert [m["tool_call_id"] for m in llm.requests[1]["json"]["messages"][-2:]] == ["o1", "o2"]


@pytest.mark.slow
async def test_a_slow_tool_gets_its_filler(llm):
    async def slow(args: dict[str, Any], ctx: Any) -> str:
        await asyncio.sleep(1.3)
        return "done"

    class Slow(OpenAIChatAgent):
        def tools(self) -> list[Tool]:
            return [Tool("slow", "Slow.", {"type": "object"}, slow, filler="Bear with me.")]

    llm.scripts = [
        [*tool_call_chunks("s", "slow", "{}"), sse(chunk(finish="tool_calls")), sse("[DONE]")],
        [sse(chunk("Done.")), *STOP],
    ]
    agent, ctx = make(llm, Slow)
    assert await reply_text(agent, "do the slow thing") == "Done."
    assert ctx.said == ["Bear with me."]


async def test_non_streamed_tool_calls_and_no_tools_offered(llm):
    llm.content_type = "application/json"
    message = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "j1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Nice"}'}}
        ],
    }
    whole = {"choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}]}
    done = {
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "Sunny."}, "finish_reason": "stop"}
        ]
    }
    llm.scripts = [[orjson.dumps(whole)], [orjson.dumps(done)]]
    agent, _ = make(llm)
    assert await reply_text(agent, "nice?") == "Sunny."
    assert llm.requests[1]["json"]["messages"][-1]["tool_call_id"] == "j1"

    plain, _ = make(llm, tools=False)
    llm.scripts = [[orjson.dumps(done)]]
    llm.requests.clear()
    await reply_text(plain, "hi")
    assert "tools" not in llm.requests[0]["json"]


@pytest.mark.parametrize(
    "calls, message",
    [
        ("nope", "tool_calls is not a list"),
        ([{"index": 99, "function": {"name": "weather"}}], "tool call index 99"),
        ([{"index": 0, "id": "n", "function": {"arguments": "{}"}}], "has no function name"),
    ],
)
async def test_malformed_tool_calls_are_agent_errors(llm, calls, message):
    llm.script = [sse(chunk(tool_calls=calls)), sse(chunk(finish="tool_calls")), sse("[DONE]")]
    agent, _ = make(llm)
    with pytest.raises(AgentError, match=message):
        await reply_text(agent, "x")


async def test_the_fake_refuses_tool_messages_as_openai_does(llm):
    llm.script = [sse(chunk("ok")), *STOP]
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    orphan = [{"role": "user", "content": "hi"}, {"role": "tool", "tool_call_id": "c9", "content": "{}"}]
    status, body = await post(llm, {"model": "tiny", "messages": orphan}, key=None)
    assert (
        status == 400
        and "must be a response to a preceeding message with 'tool_calls'" in body["error"]["message"]
    )
    unanswered = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
    ]
    status, body = await post(llm, {"model": "tiny", "messages": unanswered}, key=None)
    assert status == 400 and "did not have response messages: c1" in body["error"]["message"]
    choice = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "tool_choice": "none"}
    assert (await post(llm, choice, key=None))[0] == 400
    assert (
        tool_problem({"messages": [*unanswered, {"role": "tool", "tool_call_id": "c1", "content": "{}"}]})
        is None
    )
