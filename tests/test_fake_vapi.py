"""The fake Vapi refuses what Vapi refuses (one test per refusal), greets only when told
to, and tracks open calls; over real loopback HTTP and WebSocket."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from .fake_vapi import FakeVapi

AUDIO = {"format": "pcm_s16le", "container": "raw", "sampleRate": 16000}
GOOD = {"assistantId": "asst", "transport": {"provider": "vapi.websocket", "audioFormat": AUDIO}}


async def create(http: aiohttp.ClientSession, base: str, body, key: str | None = "vapi-test-key"):
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    async with http.post(f"{base}/call", json=body, headers=headers) as r:
        return r.status, await r.json()


@pytest.mark.parametrize(
    ("key", "status"),
    [(None, 401), ("wrong", 401), ("vapi-test-key", 201)],
    ids=["missing", "invalid", "good"],
)
async def test_bearer_key_is_required(key, status):
    fake = FakeVapi()
    async with fake.running() as base, aiohttp.ClientSession() as http:
        assert (await create(http, base, GOOD, key))[0] == status
    assert len(fake.created) == (status == 201)


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"firstMessageMode": "assistant-waits-for-user"}, "property firstMessageMode should not exist"),
        ({"assistant": {"firstMessage": "Hi"}}, "exactly one of assistantId or assistant"),
        ({"assistantId": None}, "exactly one of assistantId or assistant"),
        ({"phoneNumberId": "pn_1"}, "not permitted with the vapi.websocket transport"),
        (
            {"transport": {"provider": "twilio", "audioFormat": AUDIO}},
            "transport.provider must be vapi.websocket",
        ),
        ({"transport": None}, "transport must be an object"),
        (
            {"transport": {"provider": "vapi.websocket", "websocketCallUrl": "x"}},
            "transport.websocketCallUrl should not",
        ),
        (
            {"transport": {"provider": "vapi.websocket", "audioFormat": {**AUDIO, "format": "opus"}}},
            "format must be",
        ),
        (
            {"transport": {"provider": "vapi.websocket", "audioFormat": {**AUDIO, "container": "wav"}}},
            "container must be",
        ),
        (
            {"transport": {"provider": "vapi.websocket", "audioFormat": {"format": "mulaw"}}},
            "sampleRate must be",
        ),
        (
            {"transport": {"provider": "vapi.websocket", "audioFormat": {**AUDIO, "sampleRate": 500000}}},
            "sampleRate",
        ),
        (
            {"transport": {"provider": "vapi.websocket", "audioFormat": {**AUDIO, "channels": 1}}},
            "channels should not",
        ),
        (
            {"assistantOverrides": {"firstMessageMode": "wait"}},
            "assistantOverrides.firstMessageMode must be one of",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
async def test_create_call_refuses_what_vapi_refuses(change, complaint):
    body = {**GOOD, **change}
    body = {k: v for k, v in body.items() if v is not None or k == "transport"}
    fake = FakeVapi()
    async with fake.running() as base, aiohttp.ClientSession() as http:
        status, answer = await create(http, base, body)
    assert status == 400 and answer["statusCode"] == 400
    assert any(complaint in problem for problem in answer["message"]), answer
    assert fake.created == [] and fake.open_calls == set()


async def test_body_must_be_a_json_object():
    fake = FakeVapi()
    async with fake.running() as base, aiohttp.ClientSession() as http:
        assert (await create(http, base, ["not", "an", "object"]))[0] == 400
        async with http.post(
            f"{base}/call", data=b"{nope", headers={"Authorization": "Bearer vapi-test-key"}
        ) as r:
            assert r.status == 400


async def first_audio(ws: aiohttp.ClientWebSocketResponse, within_s: float) -> bool:
    try:
        while True:
            msg = await asyncio.wait_for(ws.receive(), within_s)
            if msg.type == aiohttp.WSMsgType.BINARY:
                return True
            if msg.type != aiohttp.WSMsgType.TEXT:
                return False
    except TimeoutError:
        return False


@pytest.mark.parametrize(
    ("overrides", "greets"),
    [
        ({}, True),
        ({"assistantOverrides": {"firstMessageMode": "assistant-speaks-first"}}, True),
        ({"assistantOverrides": {"firstMessageMode": "assistant-waits-for-user"}}, False),
        (
            {
                "assistantId": None,
                "assistant": {"firstMessage": "Hi", "firstMessageMode": "assistant-waits-for-user"},
            },
            False,
        ),
    ],
    ids=["default", "speaks-first", "waits-override", "waits-inline"],
)
async def test_greets_only_unless_told_to_wait(overrides, greets):
    body = {k: v for k, v in {**GOOD, **overrides}.items() if v is not None}
    fake = FakeVapi()
    async with fake.running() as base, aiohttp.ClientSession() as http:
        status, call = await create(http, base, body)
        assert status == 201
        async with http.ws_connect(call["transport"]["websocketCallUrl"]) as ws:
            assert await first_audio(ws, 0.8) is greets
    assert fake.greeted == (["vapi-call-1"] if greets else [])


async def test_one_socket_per_call_and_none_after_it_ended():
    fake = FakeVapi()
    async with fake.running() as base, aiohttp.ClientSession() as http:
        _, call = await create(http, base, GOOD)
        url, control = call["transport"]["websocketCallUrl"], call["monitor"]["controlUrl"]
        assert fake.open_calls == {call["id"]} and fake.max_open == 1
        async with http.ws_connect(url):
            with pytest.raises(aiohttp.WSServerHandshakeError) as second:
                await http.ws_connect(url)
            assert second.value.status == 409  # no documented reconnection
        _, other = await create(http, base, GOOD)
        assert fake.max_open == 2  # what the bridge's tests assert never happens
        async with http.post(control, json={"type": "end-call"}) as r:
            assert r.status == 200
        assert fake.open_calls == {other["id"]}
        async with http.ws_connect(other["transport"]["websocketCallUrl"]) as ws:
            await ws.send_str('{"type": "end-call"}')
            async for _ in ws:  # the greeting's start, then the close
                pass
            assert ws.closed
        assert fake.open_calls == set() and fake.hangups == [other["id"]]
        with pytest.raises(aiohttp.WSServerHandshakeError) as ended:
            await http.ws_connect(other["transport"]["websocketCallUrl"])
        assert ended.value.status == 404
        async with http.post(f"{base}/control/vapi-call-99", json={"type": "end-call"}) as r:
            assert r.status == 404
        async with http.post(control, json={"type": "end-call"}) as r:
            assert r.status == 404  # already ended
        for key, status, answer in ((None, 401, None), ("wrong", 401, None), ("vapi-test-key", 200, "ended")):
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            async with http.get(f"{base}/call/{call['id']}", headers=headers) as r:
                assert r.status == status
                if answer:
                    assert (await r.json())["status"] == answer
