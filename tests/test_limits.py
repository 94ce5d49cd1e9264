"""Abuse limits: each one against a real gateway over real loopback sockets (plus the pure
logic behind them), and each time a good call on the same server carries on unaffected."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
import time

import aiohttp
import orjson
import pytest

from callbridge.codecs import mediastreams as ms
from callbridge.gateway.limits import (
    PAUSE_GRACE_S,
    InboundRate,
    SourceRates,
    SourceSlots,
    TokenBucket,
    source_address,
)
from callbridge.gateway.reaper import Limits, Liveness
from callbridge.gateway.store import StoreBook
from callbridge.sim.caller import (
    SimulatedCall,
    new_sid,
    parse_stream_twiml,
    parse_twiml,
)
from callbridge.timeline import MAX_EVENT_TEXT, MAX_ITEMS, Timeline

from .test_gateway_security import _close_code, _started_socket, _stream_token

SILENCE = b"\xff" * 160


# --- the pure logic ---------------------------------------------------------------------------


def test_token_bucket_refills_up_to_its_burst():
    b = TokenBucket(rate=2.0, burst=3.0, now=0.0)
    assert [b.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert b.retry_after() == pytest.approx(0.5)
    assert b.take(0.5) and not b.take(0.5)
    assert b.take(100.0) and b.tokens == pytest.approx(2.0)  # capped at the burst
    b.spend(100.0, 5.0)  # spent whether there or not, down to nothing
    assert b.tokens == 0.0 and not b.take(100.0)


def test_source_rates_are_per_source_and_bounded():
    rates = SourceRates(rate=1.0, burst=2, max_sources=100)
    assert rates.allow("a", 0) and rates.allow("a", 0) and not rates.allow("a", 0)
    assert rates.allow("b", 0) and rates.refused == 1
    for i in range(1000):
        rates.allow(f"10.0.{i // 256}.{i % 256}", 1.0)
    assert len(rates.buckets) == 100
    assert SourceRates(rate=0, burst=1).allow("x", 0)  # 0: no limit


def test_source_slots():
    slots = SourceSlots(2)
    assert slots.acquire("a") and slots.acquire("a") and not slots.acquire("a") and slots.acquire("b")
    slots.release("a")
    assert slots.acquire("a")
    for _ in range(3):
        slots.release("a")
        slots.release("b")
    assert slots.open == {}
    assert all(SourceSlots(0).acquire("a") for _ in range(100))


def test_inbound_rate_lets_a_catch_up_burst_through_but_not_a_sustained_flood():
    rate = InboundRate(factor=3.0, burst_s=2.0, now=0.0)
    t = 0.0
    for _ in range(50 * 60):  # a minute of real time
        t += 0.02
        assert rate.allow(160, t)
    t += 2.0  # a 2 s stall, then everything queued arrives at once, then real time again
    assert all(rate.allow(160, t) for _ in range(100))
    for _ in range(500):
        t += 0.02
        assert rate.allow(160, t)
    flood = InboundRate(factor=3.0, burst_s=2.0, now=0.0)
    allowed = sum(flood.allow(160, i * 0.005) for i in range(800))  # 4x real time for 4 s
    assert allowed < 800
    empty = InboundRate(factor=3.0, burst_s=2.0, now=0.0)
    # Tiny messages cost a frame each; the bank is burst_s plus the grace for the server's pauses.
    assert sum(empty.allow(0, 0.0) for _ in range(400)) == round((2.0 + PAUSE_GRACE_S) / 0.02)
    assert all(InboundRate(0, 2.0, 0.0).allow(160, 0.0) for _ in range(1000))


def test_source_address_trusts_forwarding_only_with_trust_proxy():
    headers = {"X-Forwarded-For": "6.6.6.6, 203.0.113.9"}
    assert source_address("10.0.0.2", headers, trust_proxy=False) == "10.0.0.2"
    assert source_address("10.0.0.2", headers, trust_proxy=True) == "203.0.113.9"  # what the proxy saw
    assert source_address("10.0.0.2", {}, trust_proxy=True) == "10.0.0.2"
    assert source_address(None, {}, trust_proxy=False) == "?"


def test_liveness_verdicts():
    limits = Limits(start_timeout_s=10, idle_s=15, send_stall_s=5)
    live = Liveness(now=0.0)
    assert live.verdict(9.0, 1, False, None, limits) is None
    assert live.verdict(10.5, 1, False, None, limits)[0] == "close"
    live = Liveness(now=0.0)
    assert live.verdict(1.0, 5, True, None, limits) is None
    assert live.verdict(15.0, 600, True, None, limits) is None  # messages keep coming
    assert live.verdict(20.0, 600, True, 14.0, limits)[0] == "abort"  # stuck in a send
    how, why = live.verdict(31.0, 600, True, None, limits)  # quiet since 15.0
    assert how == "abort" and "vanished" in why
    live = Liveness(now=0.0)
    assert live.verdict(1.0, 1, True, None, limits, backlog=100) is None  # a backlog since 1.0
    assert live.verdict(5.0, 2, True, None, limits, backlog=50) is None
    assert live.verdict(6.0, 3, True, None, limits, backlog=0) is None  # drained: reset
    assert live.verdict(10.0, 4, True, None, limits, backlog=10) is None
    assert live.verdict(15.5, 5, True, None, limits, backlog=10)[0] == "abort"


def test_store_claims_each_token_once_and_forgets_it_after_expiry():
    book = StoreBook(history=10, max_tokens=3)
    assert book.claim_token("k1", keep_s=120, now=0.0)
    assert not book.claim_token("k1", keep_s=120, now=60.0)
    assert book.claim_token("k1", keep_s=120, now=200.0)  # expired: forgotten
    for i in range(10):
        book.claim_token(f"x{i}", 120, 200.0)
    assert len(book.used_tokens) <= 3


def test_timeline_events_are_bounded_whatever_their_data():
    timeline = Timeline(0.0, max_events=3)
    entry = timeline.add(
        1.0,
        "started",
        streamSid="MZ1",
        parameters={f"k{i}": "v" * 10_000 for i in range(100)},
        nested=[[[[[[["deep"]]]]]]],
        blob=b"x" * 10_000,
        n=7,
    )
    assert len(orjson.dumps(entry)) < MAX_EVENT_TEXT + 2_000
    assert entry["n"] == 7 and entry["streamSid"] == "MZ1" and len(entry["parameters"]) <= MAX_ITEMS
    small = {"t_ms": 2000.0, "event": "dtmf", "digit": "5"}
    assert timeline.add(2.0, "dtmf", digit="5") == small  # plain data kept as is
    timeline.add(3.0, "x" * 1000)
    assert timeline.events[-1]["event"] == "x" * 64
    assert timeline.add(4.0, "dtmf", digit="5") is None and timeline.dropped == 1


# --- over real sockets ---------------------------------------------------------------------


def _busy(twiml: str) -> bool:
    """A spoken "busy" and a hang-up, and nothing else."""
    return [v[0] for v in parse_twiml(twiml)] == ["hangup"] and "<Say>" in twiml and "busy" in twiml


def _good_call(url: str, **kwargs) -> asyncio.Task:
    return asyncio.create_task(SimulatedCall(url, dtmf="4", hold_s=1.0, **kwargs).run())


async def _assert_good(task: asyncio.Task) -> None:
    result = await asyncio.wait_for(task, 60)
    assert result.close_code == 1000 and result.ended_by == "caller" and not result.drops
    assert "first_audio_sent" in result.timeline_events()


async def test_webhook_rate_limit_per_source(start_server, caplog):
    url = await start_server(webhook_rate=2, webhook_burst=4)
    async with aiohttp.ClientSession() as http:
        statuses = []
        for _ in range(6):
            async with http.post(url + "/voice/inbound", data={"CallSid": new_sid("CA")}) as resp:
                statuses.append(resp.status)
                retry = resp.headers.get("Retry-After")
        assert statuses == [200] * 4 + [429] * 2
        assert retry is not None and int(retry) >= 1
        assert "requests/s" in caplog.text
        # Without TRUST_PROXY a forwarded address is a client's claim: same bucket.
        async with http.post(
            url + "/voice/inbound",
            data={"CallSid": new_sid("CA")},
            headers={"X-Forwarded-For": "198.51.100.7"},
        ) as resp:
            assert resp.status == 429
        await asyncio.sleep(0.6)  # one request's worth refills
        async with http.post(url + "/voice/inbound", data={"CallSid": new_sid("CA")}) as resp:
            assert resp.status == 200


async def test_webhook_rate_limit_behind_a_trusted_proxy_keys_by_forwarded_address(start_server):
    url = await start_server(webhook_rate=1, webhook_burst=2, trust_proxy=True)
    async with aiohttp.ClientSession() as http:

        async def post(client: str) -> int:
            headers = {"X-Forwarded-For": f"6.6.6.6, {client}"}
            async with http.post(
                url + "/voice/inbound", data={"CallSid": new_sid("CA")}, headers=headers
            ) as resp:
                return resp.status

        assert [await post("203.0.113.1") for _ in range(3)] == [200, 200, 429]
        assert await post("203.0.113.2") == 200  # another caller's proxy-seen address


async def test_stream_token_is_single_use_but_a_resume_gets_a_new_one(start_server, caplog):
    url = await start_server(upstream="echo")
    call_sid = new_sid("CA")
    async with aiohttp.ClientSession() as http:
        token = await _stream_token(http, url, call_sid)
        ws = await http.ws_connect(url + "/media")
        stream_sid = new_sid("MZ")
        await ws.send_str(ms.twilio_start(1, stream_sid, call_sid, "AC1", {"token": token}))
        await ws.send_str(ms.twilio_media(2, stream_sid, 1, 0, SILENCE))
        await asyncio.sleep(0.2)
        ws._response.connection.transport.abort()  # the stream drops: the call is resumable
        await asyncio.sleep(0.3)
        # A replay of the first token (even once the stream is gone) is refused.
        replay = await http.ws_connect(url + "/media")
        await replay.send_str(ms.twilio_start(1, new_sid("MZ"), call_sid, "AC1", {"token": token}))
        assert await _close_code(replay) == 1008
        assert "stream token already used" in caplog.text
        # Twilio follows the redirect: a fresh token, with resume=1, and the call goes on.
        async with http.post(url + "/voice/inbound?attempt=1", data={"CallSid": call_sid}) as resp:
            _stream_url, params = parse_stream_twiml(await resp.text())
        assert params["resume"] == "1" and params["token"] != token
        again = await http.ws_connect(url + "/media")
        await again.send_str(ms.twilio_start(1, new_sid("MZ"), call_sid, "AC1", params))
        await again.send_str(ms.twilio_stop(2, stream_sid, call_sid, "AC1"))
        assert await _close_code(again) == 1000
        async with http.get(f"{url}/calls/{call_sid}") as resp:
            record = await resp.json()
        assert record["resumes"] == 1


async def test_max_calls_answers_busy_and_hangs_up(start_server, caplog):
    url = await start_server(max_calls=1, upstream="echo")
    async with aiohttp.ClientSession() as http:
        early_sid = new_sid("CA")
        early_token = await _stream_token(http, url, early_sid)  # answered while there was room
        ws, _ = await _started_socket(http, url)
        async with http.get(url + "/healthz") as resp:
            assert (await resp.json())["calls"] == 1
        async with http.post(url + "/voice/inbound", data={"CallSid": new_sid("CA")}) as resp:
            assert resp.status == 200
            assert _busy(await resp.text())
        assert "turned away: busy" in caplog.text
        # A stream whose webhook came before the limit was reached: 1013, then its
        # redirect hangs up instead of trying again.
        late = await http.ws_connect(url + "/media")
        await late.send_str(ms.twilio_start(1, new_sid("MZ"), early_sid, "AC1", {"token": early_token}))
        assert await _close_code(late) == 1013
        async with http.post(url + "/voice/inbound?attempt=1", data={"CallSid": early_sid}) as resp:
            assert [v[0] for v in parse_twiml(await resp.text())] == ["hangup"]
        await ws.close()
        await asyncio.sleep(0.2)
        async with http.post(url + "/voice/inbound", data={"CallSid": new_sid("CA")}) as resp:
            assert "<Connect " in await resp.text()  # room again


async def test_a_stream_that_never_starts_cannot_loop_through_redirects(start_server):
    url = await start_server()
    call_sid = new_sid("CA")
    async with aiohttp.ClientSession() as http:
        attempt_url = url + "/voice/inbound"
        for attempt in range(3):
            async with http.post(attempt_url, data={"CallSid": call_sid}) as resp:
                verbs = parse_twiml(await resp.text())
            assert verbs[0][0] == "stream"  # (Twilio's stream would fail here)
            assert verbs[-1][0] == "action" and verbs[-1][1].endswith(f"?attempt={attempt + 1}")
            attempt_url = url + "/voice/inbound?" + verbs[-1][1].split("?")[1]
        async with http.post(attempt_url, data={"CallSid": call_sid}) as resp:
            assert _busy(await resp.text())


async def test_sockets_per_source_are_capped(start_server, caplog):
    url = await start_server(max_sockets_per_source=2)
    async with aiohttp.ClientSession() as http:
        a = await http.ws_connect(url + "/media")
        b = await http.ws_connect(url + "/media")
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(url + "/media")
        assert refused.value.status == 429
        assert "MAX_SOCKETS_PER_SOURCE" in caplog.text
        await a.close()
        await asyncio.sleep(0.1)
        c = await http.ws_connect(url + "/media")
        await b.close()
        await c.close()


@pytest.mark.slow
async def test_a_socket_that_never_starts_is_closed(start_server, caplog):
    url = await start_server(start_timeout_s=0.5)
    good = _good_call(url)
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(url + "/media")
        await ws.send_str(ms.twilio_connected())
        t = time.monotonic()
        assert await _close_code(ws) == 1008
        assert time.monotonic() - t < 2.0
    assert "no start within 0.5 s" in caplog.text
    await _assert_good(good)


@pytest.mark.slow
async def test_inbound_flood_is_cut_and_a_catch_up_burst_is_not(start_server, caplog):
    url = await start_server(upstream="echo", inbound_rate=3, inbound_burst_s=2)
    good = _good_call(url)
    async with aiohttp.ClientSession() as http:
        # A mobile line after a 2 s stall: 100 queued frames at once, then real time.
        ws, stream_sid = await _started_socket(http, url)
        for n in range(100):
            await ws.send_str(ms.twilio_media(n + 2, stream_sid, n + 1, n * 20, SILENCE))
        for n in range(100, 150):
            await ws.send_str(ms.twilio_media(n + 2, stream_sid, n + 1, n * 20, SILENCE))
            await asyncio.sleep(0.02)
        assert not ws.closed
        await ws.send_str(ms.twilio_stop(200, stream_sid, "CA", "AC1"))
        assert await _close_code(ws) == 1000
        # A flood: 10x real time, sustained (read as Twilio does, to see the close).
        ws, stream_sid = await _started_socket(http, url)
        closed = asyncio.create_task(_close_code(ws))
        for n in range(2000):
            if closed.done():
                break
            try:
                await ws.send_str(ms.twilio_media(n + 2, stream_sid, n + 1, n * 20, SILENCE))
            except ConnectionError:
                break
            if n % 10 == 0:
                await asyncio.sleep(0.02)
        code = await closed
        assert code == 1008
    assert "INBOUND_RATE" in caplog.text
    await _assert_good(good)


@pytest.mark.slow
async def test_a_stream_that_goes_silent_is_reaped_and_stays_resumable(start_server, caplog):
    url = await start_server(upstream="echo", stream_idle_s=1.0)
    good = _good_call(url)
    async with aiohttp.ClientSession() as http:
        call_sid = new_sid("CA")
        ws, stream_sid = await _started_socket(http, url, call_sid)
        for n in range(10):
            await ws.send_str(ms.twilio_media(n + 2, stream_sid, n + 1, n * 20, SILENCE))
        t = time.monotonic()
        # The peer says nothing more (as a socket whose other end vanished).
        while not ws.closed and time.monotonic() - t < 5:
            await ws.receive(timeout=5)
        assert 0.9 < time.monotonic() - t < 3.0
        async with http.get(f"{url}/calls/{call_sid}") as resp:
            record = await resp.json()
        assert "socket vanished" in record["stop_reason"]
        async with http.post(url + "/voice/inbound?attempt=1", data={"CallSid": call_sid}) as resp:
            assert 'name="resume"' in await resp.text()
    await _assert_good(good)


def _ws_frame(text: str) -> bytes:
    """A masked client text frame (RFC 6455), written by hand for the raw-socket peer."""
    data = text.encode()
    mask = os.urandom(4)
    n = len(data)
    head = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack("!H", n))
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data))


@pytest.mark.slow
async def test_a_peer_that_stops_reading_is_dropped_and_others_carry_on(start_server, caplog):
    url = await start_server(upstream="echo", send_stall_s=1.0, stream_idle_s=60)
    host, port = url.split("//")[1].split(":")
    async with aiohttp.ClientSession() as http:
        call_sid = new_sid("CA")
        token = await _stream_token(http, url, call_sid)
        # A raw TCP peer with a tiny receive buffer: it completes the handshake, streams
        # audio in real time (so the echo flows back), and never reads a byte again.
        loop = asyncio.get_running_loop()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)  # the server runs on this loop: never block it
        await loop.sock_connect(sock, (host, int(port)))
        key = base64.b64encode(os.urandom(16)).decode()
        await loop.sock_sendall(
            sock,
            (
                f"GET /media HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode(),
        )
        assert b"101" in await asyncio.wait_for(loop.sock_recv(sock, 12), 5)
        stream_sid = new_sid("MZ")
        await loop.sock_sendall(
            sock, _ws_frame(ms.twilio_start(1, stream_sid, call_sid, "AC1", {"token": token}))
        )
        good = _good_call(url)
        t0 = time.monotonic()
        dropped_at = None
        for n in range(50 * 30):
            try:
                await loop.sock_sendall(
                    sock, _ws_frame(ms.twilio_media(n + 2, stream_sid, n + 1, n * 20, SILENCE))
                )
            except (ConnectionError, OSError):
                dropped_at = time.monotonic() - t0
                break
            await asyncio.sleep(max(0.0, t0 + (n + 1) * 0.02 - time.monotonic()))
        sock.close()
        assert dropped_at is not None and dropped_at < 12, dropped_at
        assert "not reading" in caplog.text
        await _assert_good(good)
        async with http.get(f"{url}/calls/{call_sid}") as resp:
            record = await resp.json()
        assert "not reading" in record["stop_reason"] and record["stats"]["frames_out"] > 0
        async with http.get(url + "/healthz") as resp:
            health = await resp.json()
        assert health["calls"] == 0 and health["sockets"] == 0
