"""The OpenAI-compatible streaming agent against a real chat-completions server on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from callbridge.agents import AgentError, Turn, create_agent, reply_text
from callbridge.agents.openai_chat import DEFAULT_SYSTEM_PROMPT, OpenAIChatAgent, SSEDecoder, says_goodbye


def chunk(content: str | None = None, finish: str | None = None, **delta: Any) -> dict[str, Any]:
    d = dict(delta)
    if content is not None:
        d["content"] = content
    return {"id": "c1", "object": "chat.completion.chunk", "model": "m",
            "choices": [{"index": 0, "delta": d, "finish_reason": finish}]}


def sse(obj: Any) -> bytes:
    data = obj if isinstance(obj, str) else orjson.dumps(obj).decode()
    return f"data: {data}\n\n".encode()


class FakeLLM:
    """A chat-completions endpoint. ``script`` is a list of raw byte writes (or
    ``"WAIT"``: wait for ``release``; ``"FOREVER"``: one chunk every 10 ms until the client
    goes away)."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.script: list[Any] = []
        self.status = 200
        self.error_body = b""
        self.content_type = "text/event-stream"
        self.delay_headers_s = 0.0
        self.release = asyncio.Event()
        self.reached_wait = asyncio.Event()
        self.disconnected = asyncio.Event()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append({"headers": dict(request.headers), "json": await request.json()})
        if self.delay_headers_s:
            await asyncio.sleep(self.delay_headers_s)
        if self.status != 200:
            return web.Response(status=self.status, body=self.error_body, content_type="application/json")
        if self.content_type == "application/json":
            return web.Response(body=self.script[0], content_type="application/json")
        resp = web.StreamResponse(headers={"Content-Type": self.content_type, "Cache-Control": "no-cache"})
        await resp.prepare(request)
        try:
            for step in self.script:
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


@pytest.fixture
async def llm(aiohttp_server):
    fake = FakeLLM()
    server = await aiohttp_server(fake.app())
    fake.base_url = str(server.make_url("/v1"))  # type: ignore[attr-defined]
    return fake


def agent_for(llm: FakeLLM, **kw: Any) -> OpenAIChatAgent:
    kw.setdefault("model", "tiny")
    agent = create_agent("openai", base_url=llm.base_url, **kw)  # type: ignore[attr-defined]
    assert isinstance(agent, OpenAIChatAgent)
    return agent


HISTORY = [Turn("caller", "hi"), Turn("agent", "Hello! How can I help?"), Turn("caller", "book me in")]


async def test_streams_pieces_incrementally_and_sends_the_conversation(llm):
    llm.script = [sse(chunk(role="assistant")), sse(chunk("Sure")), sse(chunk(", Tuesday")), "WAIT",
                  sse(chunk(" at 3 PM works.")), sse(chunk(finish="stop")), sse("[DONE]")]
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
    raw = (b": keep-alive\r\n\r\nevent: message\r\ndata: " + orjson.dumps(chunk("Hel"))
           + b"\r\n\r\ndata:" + orjson.dumps(chunk("lo.")) + b"\r\n\r\n"
           + b'data: {"choices": [], "usage": {"total_tokens": 5}}\r\n\r\ndata: [DONE]\r\n\r\n')
    llm.script = [raw[i:i + 7] for i in range(0, len(raw), 7)]
    assert await reply_text(agent_for(llm), "hi") == "Hello."


async def test_goodbye_heuristic_sets_ended(llm):
    llm.script = [sse(chunk("You're all set for Tuesday. ")), sse(chunk("Thanks for calling, goodbye!")),
                  sse(chunk(finish="stop")), sse("[DONE]")]
    agent = agent_for(llm)
    await reply_text(agent, "that's all, thanks")
    assert agent.ended


async def test_end_call_tool_call(llm):
    call = {"index": 0, "id": "t1", "type": "function", "function": {"name": "end_call", "arguments": ""}}
    llm.script = [sse(chunk(tool_calls=[call])), sse(chunk(finish="tool_calls")), sse("[DONE]")]
    agent = agent_for(llm, end_call_tool=True)
    assert await reply_text(agent, "bye") == "Goodbye."
    assert agent.ended
    assert llm.requests[0]["json"]["tools"][0]["function"]["name"] == "end_call"


async def test_non_streaming_json_answer_accepted(llm):
    llm.content_type = "application/json"
    llm.script = [orjson.dumps({"choices": [{"index": 0, "finish_reason": "stop",
                                             "message": {"role": "assistant", "content": "Hi there. Bye!"}}]})]
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
    with pytest.raises(AgentError, match="no response .* within 0.2 s"):
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
    while len(pieces) < 3:
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
    [("Goodbye!", True), ("Thanks, bye.", True), ("All booked. Have a great day!", True),
     ("Should I say goodbye?", False), ("Goodbye for now, see you. What else?", False),
     ("Bye. Actually, one more thing: what time suits you", False), ("Hello.", False), ("", False)],
)
def test_goodbye_heuristic(text, ended):
    assert says_goodbye(text) is ended
