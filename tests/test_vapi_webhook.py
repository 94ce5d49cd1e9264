"""Vapi's server-URL webhooks: authentication (pure), and delivery into a live call's
timeline through the real gateway (a Vapi call made by the simulator against a local Vapi)."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import orjson
import pytest

from callbridge.gateway.vapi_auth import ReplayGuard, check, sign
from callbridge.sim.caller import SimulatedCall

from .remote_fakes import FakeVapi

SECRET = "whsec-test"
NOW = 1_800_000_000.0


def body_of(kind: str = "status-update", call_id: str = "vapi-call-1", **fields) -> bytes:
    return orjson.dumps({"message": {"type": kind, "call": {"id": call_id}, **fields}})


# -- authentication, pure ---------------------------------------------------------------------


def test_secret_header_good_bad_replayed_stale():
    guard = ReplayGuard()
    body = body_of(timestamp=NOW * 1000)
    assert check("secret", SECRET, {"X-Vapi-Secret": SECRET}, body, NOW, guard) == ""
    assert check("secret", SECRET, {"X-Vapi-Secret": SECRET}, body, NOW + 1, guard) == "replayed"
    other = body_of(status="ended")
    assert "X-Vapi-Secret" in check("secret", SECRET, {"X-Vapi-Secret": "wrong"}, other, NOW, guard)
    assert "X-Vapi-Secret" in check("secret", SECRET, {}, other, NOW, guard)
    stale = body_of(status="x")
    assert check("secret", SECRET, {"X-Vapi-Secret": SECRET}, stale, NOW, guard, (NOW - 301) * 1000) == (
        "stale message timestamp"
    )
    assert check("secret", "", {"X-Vapi-Secret": ""}, other, NOW, guard) == "VAPI_WEBHOOK_SECRET is not set"


def test_hmac_good_bad_replayed_stale():
    guard = ReplayGuard()
    body = body_of()
    stamp = str(int(NOW))
    good = {"X-Timestamp": stamp, "X-Signature": sign(SECRET, stamp, body)}
    assert check("hmac", SECRET, good, body, NOW + 10, guard) == ""
    assert check("hmac", SECRET, good, body, NOW + 11, guard) == "replayed"
    body2 = body_of(status="ended")
    prefixed = {"X-Timestamp": stamp, "X-Signature": "sha256=" + sign(SECRET, stamp, body2)}
    assert check("hmac", SECRET, prefixed, body2, NOW, guard) == ""
    tampered = body_of(status="tampered")
    assert check("hmac", SECRET, {**good}, tampered, NOW, guard) == "bad signature"
    assert check("hmac", SECRET, {"X-Timestamp": stamp, "X-Signature": sign("other", stamp, tampered)},
                 tampered, NOW, guard) == "bad signature"
    old = str(int(NOW - 400))
    assert check("hmac", SECRET, {"X-Timestamp": old, "X-Signature": sign(SECRET, old, tampered)},
                 tampered, NOW, guard) == "stale timestamp"
    ms = str(int(NOW * 1000))  # milliseconds are understood too
    assert check("hmac", SECRET, {"X-Timestamp": ms, "X-Signature": sign(SECRET, ms, tampered)},
                 tampered, NOW, guard) == ""
    for headers in ({}, {"X-Timestamp": "soon", "X-Signature": "ab"}, {"X-Timestamp": stamp}):
        assert "malformed" in check("hmac", SECRET, headers, body, NOW, guard)


def test_replay_guard_forgets_after_the_window_and_is_bounded():
    guard = ReplayGuard(window_s=10, max_seen=3)
    assert guard.first_time(b"a", 0) and not guard.first_time(b"a", 5)
    assert guard.first_time(b"a", 11)  # outside the window: a stale check refuses it anyway
    for key in (b"b", b"c", b"d"):
        assert guard.first_time(key, 12)
    assert len(guard._seen) <= 3


# -- through the gateway --------------------------------------------------------------------------


async def post(session, url, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
    async with session.post(url + "/webhook/vapi", data=body, headers={"Content-Type": "application/json", **headers}) as r:
        return r.status, await r.text()


async def wait_bound(session, url, call_sid) -> None:
    for _ in range(200):
        async with session.get(f"{url}/calls/{call_sid}") as r:
            if r.status == 200 and any(e["event"] == "upstream.bound" for e in (await r.json())["timeline"]):
                return
        await asyncio.sleep(0.02)
    raise AssertionError("the call was never bound to a Vapi call")


@pytest.mark.parametrize("mode", ["secret", "hmac"])
async def test_webhooks_land_in_the_call_timeline(start_server, mode):
    fake = FakeVapi()
    async with fake.running() as base:
        url = await start_server(
            upstream="vapi", vapi_api_url=base, vapi_api_key=fake.api_key, vapi_assistant_id="asst",
            vapi_webhook_secret=SECRET, vapi_webhook_auth=mode,
        )

        def auth(body: bytes, stamp: float | None = None) -> dict[str, str]:
            if mode == "secret":
                return {"X-Vapi-Secret": SECRET}
            ts = str(int(stamp or time.time()))
            return {"X-Timestamp": ts, "X-Signature": sign(SECRET, ts, body)}

        call = SimulatedCall(url, hold_s=1.5)
        running = asyncio.ensure_future(call.run())
        async with aiohttp.ClientSession() as http:
            await wait_bound(http, url, call.call_sid)
            now_ms = time.time() * 1000
            good = body_of("transcript", role="user", transcriptType="final", transcript="hello there",
                           timestamp=now_ms)
            assert (await post(http, url, good, auth(good)))[0] == 200
            assert (await post(http, url, good, auth(good)))[0] == 401  # replayed
            bad = body_of("status-update", status="in-progress", timestamp=now_ms)
            wrong = {"X-Vapi-Secret": "nope"} if mode == "secret" else {
                "X-Timestamp": str(int(time.time())), "X-Signature": sign("nope", str(int(time.time())), bad)}
            assert (await post(http, url, bad, wrong))[0] == 401
            stale = body_of("status-update", status="ringing", timestamp=now_ms - 600_000)
            assert (await post(http, url, stale, auth(stale, time.time() - 600)))[0] == 401
            unknown = body_of("status-update", call_id="someone-else", status="ended")
            assert (await post(http, url, unknown, auth(unknown)))[0] == 404
            tools = body_of("tool-calls", toolCallList=[{"id": "t1", "function": {"name": "book"}}])
            status, text = await post(http, url, tools, auth(tools))
            assert status == 200 and orjson.loads(text)["results"][0]["toolCallId"] == "t1"
            result = await running
            # After the call ended: the end-of-call report still finds it.
            report = body_of("end-of-call-report", endedReason="customer-ended-call", summary="Booked.")
            assert (await post(http, url, report, auth(report)))[0] == 200
            record = await call.fetch_record(http)
            garbage = b"not json"
            assert (await post(http, url, garbage, auth(garbage)))[0] == 400

    (heard,) = [e for e in result.record["timeline"] if e["event"] == "vapi.transcript"]
    assert heard["transcript"] == "hello there" and heard["role"] == "user"
    assert [e["tools"] for e in result.record["timeline"] if e["event"] == "vapi.tool-calls"] == [["book"]]
    assert not [e for e in result.record["timeline"] if e["event"] == "vapi.status-update"]
    (ended,) = [e for e in record["timeline"] if e["event"] == "vapi.end-of-call-report"]
    assert ended["endedReason"] == "customer-ended-call" and ended["summary"] == "Booked."


async def test_webhook_refused_without_a_secret(start_server):
    url = await start_server()
    async with aiohttp.ClientSession() as http:
        status, text = await post(http, url, body_of(), {"X-Vapi-Secret": ""})
    assert status == 401 and "not set" in text
