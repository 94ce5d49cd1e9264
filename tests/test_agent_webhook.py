"""The webhook agent against a real HTTP endpoint on loopback, and the signing helpers."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import time
from typing import Any

import orjson
import pytest
from aiohttp import web

from callbridge.agents import AgentError, Turn, create_agent, reply_text
from callbridge.agents.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign, signed_headers, verify
from callbridge.agents.webhook import MAX_TEXT_CHARS, WebhookAgent, cap_text

SECRET = "s3cret-shared"


class Endpoint:
    """The user's webhook. ``answer(request_json)`` returns a ``web.Response``; with
    ``secret`` set it checks the signature first (401 if it does not verify)."""

    def __init__(self) -> None:
        self.url = self.base = ""  # set once served
        self.requests: list[dict[str, Any]] = []
        self.secret: str | None = None
        self.answer = lambda body: web.json_response({"text": "Okay."})
        self.verified: list[bool] = []
        self.disconnected = asyncio.Event()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        app.router.add_post("/slow", self.slow)
        app.router.add_post("/huge", self.huge)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        self.requests.append({"headers": dict(request.headers), "raw": raw, "json": orjson.loads(raw)})
        if self.secret is not None:
            ok = verify(
                self.secret,
                request.headers.get(TIMESTAMP_HEADER),
                raw,
                request.headers.get(SIGNATURE_HEADER),
                now=time.time(),
            )
            self.verified.append(ok)
            if not ok:
                return web.Response(status=401, text="bad signature")
        return self.answer(orjson.loads(raw))

    async def slow(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            self.disconnected.set()
            raise
        return web.json_response({"text": "late"})

    async def huge(self, request: web.Request) -> web.StreamResponse:
        """A chunked answer with no Content-Length that never stops on its own."""
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await resp.prepare(request)
        try:
            for _ in range(1000):
                await resp.write(b"blah " * 2000)
                await asyncio.sleep(0)
        except (ConnectionError, asyncio.CancelledError):
            self.disconnected.set()
            raise
        await resp.write_eof()
        return resp


@pytest.fixture
async def hook(aiohttp_server):
    ep = Endpoint()
    server = await aiohttp_server(ep.app())  # the test server cancels handlers on disconnect
    ep.url = str(server.make_url("/hook"))
    ep.base = str(server.make_url("/"))
    return ep


def agent_for(ep: Endpoint, **kw: Any) -> WebhookAgent:
    kw.setdefault("url", ep.url)
    agent = create_agent("webhook", call_sid="CA123", **kw)
    assert isinstance(agent, WebhookAgent)
    return agent


async def test_json_answer_state_round_trip_and_request_shape(hook):
    def answer(body: dict[str, Any]) -> web.Response:
        n = body["state"].get("n", 0) + 1
        return web.json_response({"text": f"Turn {n}. What else?", "end_call": False, "state": {"n": n}})

    hook.answer = answer
    agent = agent_for(hook)
    history = [Turn("agent", "Hello!"), Turn("caller", "hi")]
    pieces = [p async for p in agent.reply("book tuesday", history)]
    assert pieces == ["Turn 1. ", "What else?"]
    assert agent.state() == {"n": 1} and not agent.ended
    assert await reply_text(agent, "again", []) == "Turn 2. What else?"
    assert agent.state() == {"n": 2}
    first = hook.requests[0]
    assert first["json"] == {
        "callSid": "CA123",
        "transcript": "book tuesday",
        "history": [{"role": "agent", "text": "Hello!"}, {"role": "caller", "text": "hi"}],
        "state": {},
    }
    assert first["headers"]["Content-Type"] == "application/json"
    assert TIMESTAMP_HEADER not in first["headers"]  # no secret: unsigned
    assert hook.requests[1]["json"]["state"] == {"n": 1}


async def test_plain_text_answer(hook):
    hook.answer = lambda body: web.Response(text=f"You said {body['transcript']}. Bye for now.")
    agent = agent_for(hook)
    assert await reply_text(agent, "hello") == "You said hello. Bye for now."
    assert not agent.ended  # only end_call ends a webhook call


async def test_end_call_honoured(hook):
    hook.answer = lambda body: web.json_response({"text": "Thanks, goodbye.", "end_call": True})
    agent = agent_for(hook)
    assert await reply_text(agent, "bye") == "Thanks, goodbye."
    assert agent.ended


async def test_no_content_says_nothing(hook):
    hook.answer = lambda body: web.Response(status=204)
    assert [p async for p in agent_for(hook).reply("hm", [])] == []


async def test_signature_verified_by_the_endpoint(hook):
    hook.secret = SECRET
    agent = agent_for(hook, secret=SECRET)
    assert await reply_text(agent, "hi") == "Okay."
    assert hook.verified == [True]
    headers = hook.requests[0]["headers"]
    ts = headers[TIMESTAMP_HEADER]
    expected = hmac.new(
        SECRET.encode(), ts.encode() + b"." + hook.requests[0]["raw"], hashlib.sha256
    ).hexdigest()
    assert headers[SIGNATURE_HEADER] == f"v1={expected}"


async def test_wrong_secret_or_stale_clock_rejected(hook):
    hook.secret = SECRET
    with pytest.raises(AgentError, match="HTTP 401: bad signature"):
        await reply_text(agent_for(hook, secret="not-the-secret"), "hi")
    with pytest.raises(AgentError, match="HTTP 401"):
        await reply_text(agent_for(hook, secret=SECRET, clock=lambda: time.time() - 3600), "hi")
    assert hook.verified == [False, False]


async def test_oversized_response_with_content_length(hook):
    hook.answer = lambda body: web.json_response({"text": "x" * 70_000})
    with pytest.raises(AgentError, match="over the 65536-byte limit"):
        await reply_text(agent_for(hook), "hi")


async def test_oversized_chunked_response_is_cut_off(hook):
    agent = agent_for(hook, url=hook.base + "huge", max_body_bytes=50_000)
    with pytest.raises(AgentError, match="over the 50000-byte limit"):
        await reply_text(agent, "hi")
    await asyncio.wait_for(hook.disconnected.wait(), 2.0)


async def test_long_text_truncated_at_a_sentence(hook):
    sentence = "This is a sentence of about fifty characters long. "
    hook.answer = lambda body: web.json_response({"text": sentence * 40})
    text = await reply_text(agent_for(hook), "hi")
    assert len(text) <= MAX_TEXT_CHARS and text.endswith("long.")
    assert text == (sentence * (MAX_TEXT_CHARS // len(sentence))).strip()


@pytest.mark.parametrize(
    "response, message",
    [
        (
            lambda: web.Response(status=500, text="Traceback: KeyError 'x'"),
            "HTTP 500: Traceback: KeyError 'x'",
        ),
        (lambda: web.Response(status=302, headers={"Location": "http://example.com/"}), "HTTP 302"),
        (lambda: web.Response(body=b"{oops", content_type="application/json"), "invalid JSON"),
        (lambda: web.json_response(["a"]), "expected an object"),
        (lambda: web.json_response({"text": 5}), "'text' must be a string"),
        (lambda: web.json_response({"text": "hi", "end_call": "yes"}), "'end_call' must be true or false"),
        (lambda: web.json_response({"text": "hi", "state": [1]}), "'state' must be an object"),
        (lambda: web.Response(text="<html>hi</html>", content_type="text/html"), "expected application/json"),
    ],
)
async def test_bad_answers_raise_agent_error(hook, response, message):
    hook.answer = lambda body: response()
    agent = agent_for(hook)
    with pytest.raises(AgentError, match=message):
        await reply_text(agent, "hi")
    assert agent.state() == {} and not agent.ended


async def test_timeout_and_cancellation_close_the_connection(hook):
    agent = agent_for(hook, url=hook.base + "slow", timeout_s=0.2)
    with pytest.raises(AgentError, match=r"no answer from webhook .* within 0.2 s"):
        await reply_text(agent, "hi")
    await asyncio.wait_for(hook.disconnected.wait(), 2.0)

    hook.disconnected.clear()
    agent = agent_for(hook, url=hook.base + "slow")

    async def consume() -> None:
        async with contextlib.aclosing(agent.reply("hi", [])) as gen:
            async for _ in gen:
                pass

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(hook.disconnected.wait(), 2.0)


async def test_unreachable_webhook():
    agent = create_agent("webhook", url="http://127.0.0.1:9/hook?token=abc")
    with pytest.raises(AgentError, match=r"cannot reach webhook http://127.0.0.1:9/hook") as err:
        await reply_text(agent, "hi")
    assert "token" not in str(err.value)


# -- signing and text cap --------------------------------------------------------------------


def test_sign_and_verify():
    body = b'{"transcript": "hi"}'
    sig = sign(SECRET, 1_700_000_000, body)
    expected = hmac.new(SECRET.encode(), b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sig == f"v1={expected}"
    assert sign(SECRET.encode(), "1700000000", body.decode()) == sig
    now = 1_700_000_100
    assert verify(SECRET, "1700000000", body, sig, now)
    assert verify(SECRET, 1_700_000_000, body, f"v1=deadbeef, {sig}", now)  # rotation: any match
    assert not verify(SECRET, "1700000000", body + b" ", sig, now)  # tampered body
    assert not verify("other", "1700000000", body, sig, now)  # wrong secret
    assert not verify(SECRET, "1700000001", body, sig, now)  # timestamp not signed
    assert not verify(SECRET, "1700000000", body, sig, now + 301)  # outside the window
    assert verify(SECRET, "1700000000", body, sig, now + 301, window_s=600)
    assert not verify(SECRET, "1700000000", body, sig, 1_699_999_000)  # from the future
    for bad_ts in (None, "", "abc", "-5", "1.5e9", "17000000000000000000"):
        assert not verify(SECRET, bad_ts, body, sig, now)
    for bad_sig in (None, "", expected, "v1=", "v0=" + expected, "v1=" + expected.upper(), "v1=\u00e9"):
        assert not verify(SECRET, "1700000000", body, bad_sig, now)
    assert not verify("", "1700000000", body, sig, now)
    with pytest.raises(ValueError):
        sign("", 1, body)
    headers = signed_headers(SECRET, body, 1_700_000_000.7)
    assert headers == {TIMESTAMP_HEADER: "1700000000", SIGNATURE_HEADER: sig}


def test_cap_text():
    assert cap_text("  short.  ") == "short."
    text = "First sentence here. Second one is longer than the limit allows"
    assert cap_text(text, 40) == "First sentence here."
    assert cap_text("word " * 100, 42) == ("word " * 8).strip()
    assert cap_text("x" * 100, 10) == "x" * 10
    assert len(cap_text("Hi! " * 500)) <= MAX_TEXT_CHARS
