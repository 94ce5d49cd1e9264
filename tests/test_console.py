"""The console's server side: access, the live feed, softphone calls, over real sockets."""

from __future__ import annotations

import asyncio

import aiohttp
import orjson
import pytest

from callbridge.codecs import mediastreams as ms
from callbridge.gateway.access import COOKIE, ConsoleAccess, same_origin
from callbridge.gateway.hub import Hub
from callbridge.sim.caller import SimulatedCall

TOKEN = "console-token-0123456789"
TWILIO = "test-auth-token-0123456789abcdef"


# --- pure -----------------------------------------------------------------------------------


def test_access_rules():
    dev = ConsoleAccess("", "dev")
    assert dev.refusal("127.0.0.1", {}, None) is None
    assert dev.refusal("::1", {}, None) is None
    assert dev.refusal("10.0.0.5", {}, None) == "without CONSOLE_TOKEN the console is open to loopback only"
    assert dev.refusal("127.0.0.1", {"X-Forwarded-For": "203.0.113.9"}, None) is not None  # a local tunnel
    assert dev.refusal(None, {}, None) is not None
    assert ConsoleAccess("", "prod").refusal("127.0.0.1", {}, None) == "the console is off: set CONSOLE_TOKEN"
    guarded = ConsoleAccess(TOKEN, "dev")
    assert guarded.refusal("127.0.0.1", {}, None) == "console token required"  # a token set: always required
    assert guarded.refusal("10.0.0.5", {"Authorization": f"Bearer {TOKEN}"}, None) is None
    assert guarded.refusal("10.0.0.5", {"Authorization": "Bearer wrong"}, None) is not None
    assert guarded.refusal("10.0.0.5", {}, guarded.cookie_value) is None
    assert guarded.refusal("10.0.0.5", {}, TOKEN) is not None  # the cookie is not the token
    assert guarded.sign_in(TOKEN) and not guarded.sign_in("nope") and not dev.sign_in("")
    assert same_origin(None, ("h:1",)) and same_origin("http://h:1", ("h:1",))
    assert not same_origin("http://evil.example", ("h:1",))


def test_hub_drops_slow_clients_and_caps_clients():
    hub = Hub(max_clients=2, max_pending=3)
    hub.publish("note", {"x": 1})  # nobody listening: nothing kept
    fast, slow = hub.subscribe(), hub.subscribe()
    assert hub.subscribe() is None
    for i in range(3):
        hub.publish("note", {"i": i})
        fast.take()
    assert not slow.overflowed and len(slow.pending) == 3
    hub.publish("note", {"i": 3})
    assert slow.overflowed and hub.subscribers == [fast] and hub.dropped_clients == 1
    assert fast.take() == [b'event: note\ndata: {"i":3}\n\n']


# --- over real sockets ----------------------------------------------------------------------


async def _sse(resp: aiohttp.ClientResponse):
    """Yield (event, data) from a Server-Sent Events response."""
    kind = None
    async for raw in resp.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: "):
            yield kind, orjson.loads(line[6:])


@pytest.mark.slow
async def test_live_feed_follows_a_call(start_server):
    url = await start_server()
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{url}/console/events") as feed:
            assert feed.headers["Content-Type"] == "text/event-stream"
            events = _sse(feed)
            kind, snapshot = await anext(events)
            assert kind == "snapshot" and snapshot["live"] == [] and snapshot["ended"] == []
            call = SimulatedCall(url, dtmf="5", hold_s=1.5)
            running = asyncio.ensure_future(call.run())
            seen: dict[str, list] = {"call": [], "note": [], "tick": []}

            async def follow() -> None:
                async for kind, data in events:
                    seen[kind].append(data)
                    if kind == "call" and data["state"] == "ended":
                        return

            await asyncio.wait_for(follow(), 30)
            result = await running
        async with http.get(f"{url}/calls") as resp:
            listing = await resp.json()
    assert [c["state"] for c in seen["call"]] == ["live", "ended"]
    assert seen["call"][1]["callSid"] == call.call_sid and seen["call"][1]["stop_reason"] == "twilio stop"
    notes = [n for n in seen["note"] if n["callSid"] == call.call_sid]
    assert [n["i"] for n in notes] == list(range(len(notes)))  # every event, in order, numbered
    assert [n["e"] for n in notes] == result.record["timeline"]
    ticks = [t[call.call_sid] for t in seen["tick"] if call.call_sid in t]
    assert ticks and max(t["out_db"] for t in ticks) > -40  # the greeting on the agent's meter
    assert listing["calls"] == [] and listing["ended"][0]["callSid"] == call.call_sid


async def test_token_protects_console_calls_and_metrics(start_server):
    url = await start_server(console_token=TOKEN)
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        for path in ("/calls", "/calls/CA1", "/metrics", "/console/events"):
            async with http.get(url + path) as resp:
                assert resp.status == 401, path
                assert resp.headers["WWW-Authenticate"] == "Bearer"
        async with http.get(url + "/metrics", headers=bearer) as resp:
            assert resp.status == 200
        async with http.get(url + "/console") as resp:
            assert resp.status == 401 and 'name="token"' in await resp.text()  # the sign-in form
        async with http.post(url + "/console/login", data={"token": "wrong-token-000000"}) as resp:
            assert resp.status == 401
        assert not http.cookie_jar.filter_cookies(url).get(COOKIE)
        async with http.post(url + "/console/call", json={}) as resp:
            assert resp.status == 401
        async with http.post(url + "/console/login", data={"token": TOKEN}, allow_redirects=False) as resp:
            assert resp.status == 303 and resp.headers["Location"] == "/console"
            cookie = resp.cookies[COOKIE]
            assert cookie["httponly"] and cookie["samesite"] == "Strict" and TOKEN not in cookie.value
        async with http.get(url + "/console") as resp:  # signed in by the cookie
            assert resp.status == 200 and "softphone" in await resp.text()
        async with http.get(url + "/calls") as resp:
            assert resp.status == 200
        async with http.post(url + "/console/call", data="{}") as resp:  # not JSON: a form could send it
            assert resp.status == 415
        async with http.post(
            url + "/console/call", json={}, headers={"Origin": "http://evil.example"}
        ) as resp:
            assert resp.status == 403
        async with http.post(url + "/console/call", json={}) as resp:
            assert resp.status == 200


async def test_console_is_loopback_only_without_token_and_off_in_prod(start_server):
    dev = await start_server()
    prod = await start_server(mode="prod", twilio_auth_token=TWILIO)
    async with aiohttp.ClientSession() as http:
        async with http.get(dev + "/console/static/console.js") as resp:
            assert resp.status == 200 and "EventSource" in await resp.text()
        async with http.get(dev + "/calls", headers={"X-Forwarded-For": "203.0.113.9"}) as resp:
            assert resp.status == 403  # through a tunnel on this host: not a loopback user
        for path in ("/calls", "/metrics", "/console"):
            async with http.get(prod + path) as resp:
                assert resp.status == 403, path
                assert "CONSOLE_TOKEN" in await resp.text()


async def test_softphone_stream_uses_the_console_socket_and_its_own_tokens(start_server):
    url = await start_server(twilio_auth_token=TWILIO)  # Twilio's /media needs a signature
    async with aiohttp.ClientSession() as http:
        async with http.post(url + "/console/call", json={}) as resp:
            minted = await resp.json()
        start = ms.twilio_start(
            1, minted["streamSid"], minted["callSid"], minted["accountSid"], minted["customParameters"]
        )
        # The console's token is no good on Twilio's socket (nor is the handshake).
        ws = await http.ws_connect(url + "/media")
        await ws.send_str(start)
        msg = await ws.receive()
        assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1008
        # A webhook-style token is no good on the console's socket.
        ws = await http.ws_connect(url + minted["path"])
        forged = dict(
            minted["customParameters"], token=minted["customParameters"]["token"].replace("v1.", "v1.x")
        )
        await ws.send_str(ms.twilio_start(1, minted["streamSid"], minted["callSid"], "AC1", forged))
        msg = await ws.receive()
        assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1008
        # The real thing: the same Media Streams session, the agent greets.
        ws = await http.ws_connect(url + minted["path"])
        await ws.send_str(ms.twilio_connected())
        await ws.send_str(start)
        media = 0
        while media < 10:
            msg = await asyncio.wait_for(ws.receive(), 10)
            assert msg.type == aiohttp.WSMsgType.TEXT
            media += orjson.loads(msg.data)["event"] == "media"
        async with http.get(f"{url}/calls/{minted['callSid']}") as resp:
            record = await resp.json()
        assert record["source"] == "console" and record["state"] == "live"
        assert "token" not in record["timeline"][0]["parameters"]
        await ws.send_str(orjson.dumps({"event": "stop", "stop": {"callSid": minted["callSid"]}}).decode())
        await ws.close()
        async with http.get(url + "/console/media", headers={"Origin": "http://evil.example"}) as resp:
            assert resp.status == 403


async def test_softphone_calls_are_bounded(start_server):
    from callbridge.gateway.console import MAX_CONSOLE_CALLS

    url = await start_server()
    async with aiohttp.ClientSession() as http:
        sockets = []
        for _ in range(MAX_CONSOLE_CALLS):
            async with http.post(url + "/console/call", json={}) as resp:
                minted = await resp.json()
            ws = await http.ws_connect(url + minted["path"])
            await ws.send_str(
                ms.twilio_start(1, minted["streamSid"], minted["callSid"], "AC1", minted["customParameters"])
            )
            sockets.append(ws)
        for _ in range(50):
            async with http.get(url + "/calls") as resp:
                if len((await resp.json())["calls"]) == MAX_CONSOLE_CALLS:
                    break
            await asyncio.sleep(0.05)
        async with http.post(url + "/console/call", json={}) as resp:
            assert resp.status == 429
        for ws in sockets:
            await ws.close()
