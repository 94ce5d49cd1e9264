"""The OpenAI-compatible streaming agent against a real chat-completions server on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from callbridge.agents import AgentError, Turn, create_agent, reply_text
from callbridge.agents.openai_chat import DEFAULT_SYSTEM_PROMPT, OpenAIChatAgent, SSEDecoder, says_goodbye
from callbridge.config import ConfigError, Settings
from callbridge.upstreams.embedded import agent_for as settings_agent


def chunk(content: str | None = None, finish: str | None = None, **delta: Any) -> dict[str, Any]:
    d = dict(delta)
    if content is not None:
        d["content"] = content
    return {
        "id": "c1",
        "object": "chat.completion.chunk",
        "model": "m",
        "choices": [{"index": 0, "delta": d, "finish_reason": finish}],
    }


def sse(obj: Any) -> bytes:
    data = obj if isinstance(obj, str) else orjson.dumps(obj).decode()
    return f"data: {data}\n\n".encode()


REASONING_MODEL = re.compile(r"o\d|gpt-5")
"""OpenAI's reasoning models (o1, o3-mini, o4-mini, gpt-5, gpt-5-mini...): they refuse
``max_tokens`` and any ``temperature`` but the default."""


def openai_error(message: str, param: str | None, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}


class FakeLLM:
    """A chat-completions endpoint. ``script`` is a list of raw byte writes (or
    ``"WAIT"``: wait for ``release``; ``"FOREVER"``: one chunk every 10 ms until the client
    goes away).

    As strict as OpenAI where it matters to us: with ``api_key`` set, a request without
    ``Authorization: Bearer <api_key>`` gets 401; reasoning models (``REASONING_MODEL``)
    refuse ``max_tokens`` and a non-default ``temperature`` with OpenAI's 400; with
    ``legacy``, a server that knows only ``max_tokens`` refuses ``max_completion_tokens``;
    malformed tools and tool messages get OpenAI's 400 (``tool_problem``).

    ``scripts``, when set, holds one script per request, in order (the last one is used
    again past its end); a script may be a function of the request body returning one."""

    def __init__(self) -> None:
        self.base_url = ""  # set once served
        self.requests: list[dict[str, Any]] = []
        self.script: list[Any] = []
        self.scripts: list[Any] = []
        self.status = 200
        self.error_body = b""
        self.content_type = "text/event-stream"
        self.delay_headers_s = 0.0
        self.api_key: str | None = None
        self.legacy = False
        self.release = asyncio.Event()
        self.reached_wait = asyncio.Event()
        self.disconnected = asyncio.Event()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.handle)
        return app

    def refusal(self, headers: Any, body: dict[str, Any]) -> web.Response | None:
        """OpenAI's answer to a request it refuses (None: accepted)."""
        if self.api_key is not None:
            auth = headers.get("Authorization", "")
            if not auth.startswith("Bearer "):
                return web.json_response(
                    openai_error(
                        "You didn't provide an API key. You need to provide your API key in an Authorization "
                        "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                        None,
                        None,
                    ),
                    status=401,
                )
            if auth != f"Bearer {self.api_key}":
                return web.json_response(
                    openai_error(f"Incorrect API key provided: {auth[7:11]}****.", None, "invalid_api_key"),
                    status=401,
                )
        model = str(body.get("model", ""))
        if REASONING_MODEL.match(model):
            if "max_tokens" in body:
                return web.json_response(
                    openai_error(
                        "Unsupported parameter: 'max_tokens' is not supported with this model. "
                        "Use 'max_completion_tokens' instead.",
                        "max_tokens",
                        "unsupported_parameter",
                    ),
                    status=400,
                )
            if "temperature" in body and body["temperature"] != 1:
                return web.json_response(
                    openai_error(
                        f"Unsupported value: 'temperature' does not support {body['temperature']} with this model. "
                        "Only the default (1) value is supported.",
                        "temperature",
                        "unsupported_value",
                    ),
                    status=400,
                )
        if self.legacy and "max_completion_tokens" in body:
            return web.json_response(
                openai_error("Unrecognized request argument supplied: max_completion_tokens", None, None),
                status=400,
            )
        problem = tool_problem(body)
        if problem is not None:
            return web.json_response(openai_error(*problem), status=400)
        return None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append({"headers": dict(request.headers), "json": body})
        refused = self.refusal(request.headers, body)
        if refused is not None:
            return refused
        if self.delay_headers_s:
            await asyncio.sleep(self.delay_headers_s)
        if self.status != 200:
            return web.Response(status=self.status, body=self.error_body, content_type="application/json")
        script = self.script
        if self.scripts:
            script = self.scripts[min(len(self.requests), len(self.scripts)) - 1]
            if callable(script):
                script = script(body)
        if self.content_type == "application/json":
            return web.Response(body=script[0], content_type="application/json")
        resp = web.StreamResponse(headers={"Content-Type": self.content_type, "Cache-Control": "no-cache"})
        await resp.prepare(request)
        try:
            for step in script:
                if step == "WAIT":
                    self.reached_wait.set()
                    await self.release.wait()
                elif step == "FOREVER":
                    n = 0
                    while True:
                        await resp.write(sse(chunk(f"word{n} ")))
                        n += 1
                        await asyncio.sleep(0.01)
                else:
                    await resp.write(step)
        except (ConnectionResetError, ConnectionError, asyncio.CancelledError):
            self.disconnected.set()
            raise
        await resp.write_eof()
        return resp


TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def tool_problem(body: dict[str, Any]) -> tuple[str, str | None, str | None] | None:
    """What OpenAI refuses in ``tools``, ``tool_choice`` and tool messages (its 400 message,
    param and code), or None."""
    tools = body.get("tools")
    if "tool_choice" in body and not tools:
        return (
            "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.",
            "tool_choice",
            None,
        )
    if body.get("tool_choice") not in (None, "none", "auto", "required"):
        return ("Invalid value for 'tool_choice'.", "tool_choice", "invalid_value")
    for i, tool in enumerate(tools or []):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or tool.get("type") != "function":
            return (
                f"Missing required parameter: 'tools[{i}].function'.",
                f"tools[{i}].function",
                "missing_required_parameter",
            )
        if not TOOL_NAME.match(str(fn.get("name", ""))):
            return (
                f"Invalid 'tools[{i}].function.name': string does not match pattern. Expected a string that "
                "matches the pattern '^[a-zA-Z0-9_-]+$'.",
                f"tools[{i}].function.name",
                "invalid_value",
            )
        if fn.get("parameters", {}).get("type") != "object":
            return (
                f"Invalid schema for function '{fn['name']}'.",
                f"tools[{i}].function.parameters",
                "invalid_function_parameters",
            )
    unanswered: list[str] = []
    for i, msg in enumerate(body.get("messages", [])):
        role = msg.get("role")
        if unanswered and role != "tool":
            return (
                "An assistant message with 'tool_calls' must be followed by tool messages responding to each "
                f"'tool_call_id'. The following tool_call_ids did not have response messages: {', '.join(unanswered)}",
                f"messages.[{i}].role",
                None,
            )
        if role == "assistant" and msg.get("tool_calls"):
            for j, call in enumerate(msg["tool_calls"]):
                fn = call.get("function") or {}
                if (
                    not call.get("id")
                    or call.get("type") != "function"
                    or not isinstance(fn.get("arguments"), str)
                ):
                    return (
                        f"Missing required parameter: 'messages[{i}].tool_calls[{j}]'.",
                        f"messages[{i}].tool_calls[{j}]",
                        "missing_required_parameter",
                    )
            unanswered = [c["id"] for c in msg["tool_calls"]]
        elif role == "tool":
            call_id = msg.get("tool_call_id")
            if not call_id:
                return (
                    f"Missing required parameter: 'messages[{i}].tool_call_id'.",
                    f"messages[{i}].tool_call_id",
                    "missing_required_parameter",
                )
            if call_id not in unanswered:
                return (
                    "Invalid parameter: messages with role 'tool' must be a response to a preceeding message "
                    "with 'tool_calls'.",
                    f"messages.[{i}].role",
                    None,
                )
            if not isinstance(msg.get("content"), str):
                return (
                    f"Invalid type for 'messages[{i}].content'.",
                    f"messages[{i}].content",
                    "invalid_type",
                )
            unanswered.remove(call_id)
    if unanswered:
        return (
            "An assistant message with 'tool_calls' must be followed by tool messages responding to each "
            f"'tool_call_id'. The following tool_call_ids did not have response messages: {', '.join(unanswered)}",
            "messages",
            None,
        )
    return None


def tool_call_chunks(call_id: str, name: str, arguments: str, index: int = 0, pieces: int = 3) -> list[bytes]:
    """A tool call streamed as OpenAI streams it: the id, type and name first (with empty
    arguments), then the arguments in fragments."""
    first = {"index": index, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}
    out = [sse(chunk(tool_calls=[first]))]
    step = max(1, -(-len(arguments) // pieces))
    for i in range(0, len(arguments), step):
        out.append(
            sse(chunk(tool_calls=[{"index": index, "function": {"arguments": arguments[i : i + step]}}]))
        )
    return out


@pytest.fixture
async def llm(aiohttp_server):
    fake = FakeLLM()
    server = await aiohttp_server(fake.app())
    fake.base_url = str(server.make_url("/v1"))
    return fake


def agent_for(llm: FakeLLM, **kw: Any) -> OpenAIChatAgent:
    kw.setdefault("model", "tiny")
    agent = create_agent("openai", base_url=llm.base_url, **kw)
    assert isinstance(agent, OpenAIChatAgent)
    return agent


HISTORY = [Turn("caller", "hi"), Turn("agent", "Hello! How can I help?"), Turn("caller", "book me in")]


async def test_streams_pieces_incrementally_and_sends_the_conversation(llm):
    llm.script = [
        sse(chunk(role="assistant")),
        sse(chunk("Sure")),
        sse(chunk(", Tuesday")),
        "WAIT",
        sse(chunk(" at 3 PM works.")),
        sse(chunk(finish="stop")),
        sse("[DONE]"),
    ]
    agent = agent_for(llm, api_key="sk-test", max_history_turns=2, temperature=0.2)
    got: list[str] = []
    async with contextlib.aclosing(agent.reply("tuesday at three", HISTORY)) as gen:
        got.append(await gen.__anext__())
        got.append(await gen.__anext__())
        # both pieces arrived while the server is still holding back the rest
        assert llm.reached_wait.is_set() and not llm.release.is_set()
        assert got == ["Sure", ", Tuesday"]
        llm.release.set()
        got += [p async for p in gen]
    assert got == ["Sure", ", Tuesday", " at 3 PM works."]
    assert not agent.ended
    req = llm.requests[0]
    assert req["headers"]["Authorization"] == "Bearer sk-test"
    body = req["json"]
    assert body["model"] == "tiny" and body["stream"] is True and body["temperature"] == 0.2
    assert body["messages"] == [
        {"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "book me in"},
        {"role": "user", "content": "tuesday at three"},
    ]
    assert agent.state() == {"model": "tiny", "turns": 1, "finish_reason": "stop"}


async def test_custom_prompt_no_key_no_history_duplication(llm):
    llm.script = [sse(chunk("Okay.")), sse("[DONE]")]
    agent = agent_for(llm, system_prompt="Be brief.")
    history = [Turn("agent", "Hi!"), Turn("caller", "what now")]
    assert await reply_text(agent, "what now", history) == "Okay."
    req = llm.requests[0]
    assert "Authorization" not in req["headers"]
    assert req["json"]["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "assistant", "content": "Hi!"},
        {"role": "user", "content": "what now"},
    ]


async def test_sse_split_across_writes_crlf_comments_and_usage_chunk(llm):
    raw = (
        b": keep-alive\r\n\r\nevent: message\r\ndata: "
        + orjson.dumps(chunk("Hel"))
        + b"\r\n\r\ndata:"
        + orjson.dumps(chunk("lo."))
        + b"\r\n\r\n"
        + b'data: {"choices": [], "usage": {"total_tokens": 5}}\r\n\r\ndata: [DONE]\r\n\r\n'
    )
    llm.script = [raw[i : i + 7] for i in range(0, len(raw), 7)]
    assert await reply_text(agent_for(llm), "hi") == "Hello."


async def test_goodbye_heuristic_sets_ended(llm):
    llm.script = [
        sse(chunk("You're all set for Tuesday. ")),
        sse(chunk("Thanks for calling, goodbye!")),
        sse(chunk(finish="stop")),
        sse("[DONE]"),
    ]
    agent = agent_for(llm)
    await reply_text(agent, "that's all, thanks")
    assert agent.ended


async def test_non_streaming_json_answer_accepted(llm):
    llm.content_type = "application/json"
    llm.script = [
        orjson.dumps(
            {
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": "Hi there. Bye!"},
                    }
                ]
            }
        )
    ]
    agent = agent_for(llm)
    assert await reply_text(agent, "hello") == "Hi there. Bye!"
    assert agent.ended


@pytest.mark.parametrize("status", [400, 401, 500, 503])
async def test_http_errors(llm, status):
    llm.status = status
    llm.error_body = b'{"error": {"message": "model tiny is not loaded"}}'
    with pytest.raises(AgentError, match=rf"HTTP {status}: .*model tiny is not loaded"):
        await reply_text(agent_for(llm), "hi")


@pytest.mark.parametrize(
    "script, message",
    [
        ([sse(chunk("ok")), b"data: {not json\n\n"], "malformed"),
        ([sse(chunk("ok")), sse([1, 2])], "expected a JSON object"),
        ([sse({"choices": "nope"})], "choices is not a list"),
        ([sse({"choices": [{"delta": {"content": 5}}]})], "content is not a string"),
        ([sse(chunk("ok")), sse({"error": {"message": "out of memory"}})], "out of memory"),
        ([sse(chunk("half a sent"))], "ended before"),
        ([b"data: " + b"x" * (1 << 20 + 1)], "larger than"),
    ],
)
async def test_malformed_streams(llm, script, message):
    llm.script = script
    with pytest.raises(AgentError, match=message):
        await reply_text(agent_for(llm), "hi")


async def test_unreachable_server():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    agent = create_agent("openai", base_url=f"http://127.0.0.1:{port}/v1", model="m", api_key="secret")
    with pytest.raises(AgentError, match=r"cannot reach http://127.0.0.1:\d+/v1/chat/completions") as err:
        await reply_text(agent, "hi")
    assert "secret" not in str(err.value)


async def test_first_byte_timeout(llm):
    llm.delay_headers_s = 2.0
    loop = asyncio.get_running_loop()
    t = loop.time()
    with pytest.raises(AgentError, match=r"no response .* within 0.2 s"):
        await reply_text(agent_for(llm, timeout_s=0.2), "hi")
    assert loop.time() - t < 1.5


async def test_cancellation_closes_the_request(llm):
    llm.script = [sse(chunk("Let me see. ")), "FOREVER"]
    agent = agent_for(llm)
    pieces: list[str] = []

    async def consume() -> None:
        async with contextlib.aclosing(agent.reply("hi", [])) as gen:
            async for piece in gen:
                pieces.append(piece)

    task = asyncio.create_task(consume())
    while len(pieces) < 3:  # noqa: ASYNC110 - polls the consumer's progress
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(llm.disconnected.wait(), 2.0)


async def test_abandoning_the_reply_closes_the_request_but_not_a_shared_session(llm):
    llm.script = [sse(chunk("one ")), "FOREVER"]
    async with aiohttp.ClientSession() as session:
        agent = agent_for(llm, session=session)
        async with contextlib.aclosing(agent.reply("hi", [])) as gen:
            assert await gen.__anext__() == "one "
            assert await gen.__anext__() == "word0 "
        await asyncio.wait_for(llm.disconnected.wait(), 2.0)
        assert not session.closed
        llm.script = [sse(chunk("again")), sse("[DONE]")]
        llm.disconnected.clear()
        assert await reply_text(agent, "hi") == "again"


def test_sse_decoder_units():
    d = SSEDecoder()
    assert d.feed(b"data: a\n") == []
    assert d.feed(b"data: b\n\ndata: c\r") == ["a\nb"]
    assert d.feed(b"\n\r\n") == ["c"]
    assert d.feed(b"id: 1\nretry: 5\n: comment\ndata:x\n") == []
    assert d.close() == ["x"]


@pytest.mark.parametrize(
    "text, ended",
    [
        ("Goodbye!", True),
        ("Thanks, bye.", True),
        ("All booked. Have a great day!", True),
        ("Should I say goodbye?", False),
        ("Goodbye for now, see you. What else?", False),
        ("Bye. Actually, one more thing: what time suits you", False),
        ("Hello.", False),
        ("", False),
    ],
)
def test_goodbye_heuristic(text, ended):
    assert says_goodbye(text) is ended


# -- the reply's token limit, and the fake's OpenAI refusals --------------------------------

DONE = [sse(chunk("Sure.")), sse(chunk(finish="stop")), sse("[DONE]")]


async def post(llm: FakeLLM, body: dict[str, Any], key: str | None = "sk-test") -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    async with (
        aiohttp.ClientSession() as http,
        http.post(llm.base_url + "/chat/completions", json=body, headers=headers) as resp,
    ):
        return resp.status, (await resp.json() if resp.content_type == "application/json" else {})


MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize("model", ["o1", "o3-mini", "o4-mini", "gpt-5", "gpt-5-mini"])
async def test_fake_refuses_max_tokens_for_reasoning_models_as_openai_does(llm, model):
    llm.api_key = "sk-test"
    llm.script = DONE
    status, body = await post(llm, {"model": model, "messages": MESSAGES, "max_tokens": 300})
    assert status == 400
    assert body == {
        "error": {
            "message": "Unsupported parameter: 'max_tokens' is not supported with this model. "
            "Use 'max_completion_tokens' instead.",
            "type": "invalid_request_error",
            "param": "max_tokens",
            "code": "unsupported_parameter",
        }
    }
    status, _ = await post(llm, {"model": model, "messages": MESSAGES, "max_completion_tokens": 300})
    assert status == 200
    status, _ = await post(llm, {"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": 300})
    assert status == 200  # older models still take it


async def test_fake_refuses_a_temperature_reasoning_models_do_not_take(llm):
    llm.api_key = "sk-test"
    status, body = await post(llm, {"model": "gpt-5", "messages": MESSAGES, "temperature": 0.2})
    assert status == 400 and body["error"]["param"] == "temperature"
    assert body["error"]["code"] == "unsupported_value"


@pytest.mark.parametrize("key, code", [(None, None), ("sk-wrong", "invalid_api_key")])
async def test_fake_refuses_a_missing_or_wrong_bearer_key(llm, key, code):
    llm.api_key = "sk-test"
    llm.script = DONE
    status, body = await post(llm, {"model": "gpt-4o", "messages": MESSAGES}, key=key)
    assert status == 401
    assert body["error"]["type"] == "invalid_request_error" and body["error"]["code"] == code
    with pytest.raises(AgentError, match="HTTP 401"):
        await reply_text(agent_for(llm, model="gpt-4o", api_key=key), "hi")


async def test_fake_legacy_server_refuses_max_completion_tokens(llm):
    llm.legacy = True
    status, body = await post(llm, {"model": "local", "messages": MESSAGES, "max_completion_tokens": 9})
    assert status == 400 and "max_completion_tokens" in body["error"]["message"]


@pytest.mark.parametrize("model", ["gpt-5-mini", "o4-mini", "gpt-4o-mini"])
async def test_the_limit_goes_as_max_completion_tokens_so_openai_models_answer(llm, model):
    llm.api_key = "sk-test"
    llm.script = DONE
    agent = agent_for(llm, model=model, api_key="sk-test")
    assert await reply_text(agent, "hi") == "Sure."
    (req,) = llm.requests
    assert req["json"]["max_completion_tokens"] == 300 and "max_tokens" not in req["json"]


async def test_the_limit_from_settings_zero_sends_none(llm):
    llm.script = DONE
    settings = Settings(
        agent="openai",
        openai_base_url=llm.base_url,
        openai_model="gpt-5",
        openai_max_tokens=0,
    )
    assert await reply_text(settings_agent(settings, "CA1"), "hi") == "Sure."
    settings = Settings(
        agent="openai",
        openai_base_url=llm.base_url,
        openai_model="local",
        openai_max_tokens=120,
        openai_max_tokens_param="max_tokens",
    )
    assert await reply_text(settings_agent(settings, "CA2"), "hi") == "Sure."
    first, second = (r["json"] for r in llm.requests)
    assert "max_tokens" not in first and "max_completion_tokens" not in first
    assert second["max_tokens"] == 120 and "max_completion_tokens" not in second


@pytest.mark.parametrize(
    "legacy, sent, then",
    [(False, "max_tokens", "max_completion_tokens"), (True, "max_completion_tokens", "max_tokens")],
)
async def test_a_refused_limit_name_is_retried_once_with_the_other_and_kept(llm, legacy, sent, then):
    """OpenAI's gpt-5 refusing ``max_tokens``, or an old server refusing
    ``max_completion_tokens``: one more request with the other name, kept for the call."""
    llm.legacy = legacy
    llm.script = DONE
    agent = agent_for(llm, model="local" if legacy else "gpt-5", max_tokens_param=sent)
    assert await reply_text(agent, "hi") == "Sure."
    assert await reply_text(agent, "again") == "Sure."
    bodies = [r["json"] for r in llm.requests]
    assert [sent in b for b in bodies] == [True, False, False]
    assert [b.get(then) for b in bodies] == [None, 300, 300]


async def test_other_400s_are_not_retried(llm):
    llm.api_key = "sk-test"
    with pytest.raises(AgentError, match=r"HTTP 400: .*temperature"):
        await reply_text(agent_for(llm, model="gpt-5", api_key="sk-test", temperature=0.2), "hi")
    assert len(llm.requests) == 1
    llm.legacy, llm.api_key = True, None
    with pytest.raises(AgentError, match="HTTP 400"):  # refused again after the switch: no loop
        await reply_text(agent_for(llm, model="gpt-5", max_tokens_param="max_tokens"), "hi")
    assert len(llm.requests) == 3


def test_max_tokens_settings_are_checked():
    for bad in ({"openai_max_tokens": -1}, {"openai_max_tokens_param": "n_predict"}):
        with pytest.raises(ConfigError):
            Settings(**bad)
