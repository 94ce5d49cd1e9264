"""Vapi's server-URL webhooks: authentication (pure), message types and answers (pure),
and delivery into a live call's timeline through the real gateway (a Vapi call made by
the simulator against a local Vapi)."""

from __future__ import annotations

import asyncio
import base64
import logging
import time

import aiohttp
import orjson
import pytest

from callbridge.config import ConfigError, Settings
from callbridge.gateway.limits import LogTally
from callbridge.gateway.vapi_auth import ReplayGuard, WebhookAuth, check
from callbridge.gateway.vapi_messages import SERVER_MESSAGE_TYPES, reply, tool_calls
from callbridge.sim.caller import SimulatedCall

from .fake_vapi import FakeVapi

SECRET = "whsec-test"
NOW = 1_800_000_000.0
BEARER = WebhookAuth("bearer", SECRET)
LEGACY = WebhookAuth("secret", SECRET)
HMAC = WebhookAuth("hmac", SECRET)


def body_of(kind: str = "status-update", call_id: str = "vapi-call-1", **fields) -> bytes:
    return orjson.dumps({"message": {"type": kind, "call": {"id": call_id}, **fields}})


# -- authentication, pure ---------------------------------------------------------------------


def test_bearer_is_the_default_and_checks_header_and_prefix():
    assert Settings().vapi_webhook.auth == "bearer"
    guard = ReplayGuard()
    body = body_of(timestamp=NOW * 1000)
    assert check(BEARER, {"Authorization": f"Bearer {SECRET}"}, body, NOW, guard) == ""
    assert check(BEARER, {"Authorization": f"Bearer {SECRET}"}, body, NOW + 1, guard) == "replayed"
    other = body_of(status="ended")
    for headers in (
        {},
        {"Authorization": SECRET},
        {"Authorization": "Bearer wrong"},
        {"X-Vapi-Secret": SECRET},
    ):
        assert "Authorization" in check(BEARER, headers, other, NOW, guard)
    custom = WebhookAuth("bearer", SECRET, bearer_header="X-Api-Key", bearer_prefix=False)
    assert check(custom, {"X-Api-Key": SECRET}, other, NOW, guard) == ""
    assert "X-Api-Key" in check(custom, {"X-Api-Key": f"Bearer {SECRET}"}, body_of(status="x"), NOW, guard)
    stale = body_of(status="old")
    assert check(BEARER, {"Authorization": f"Bearer {SECRET}"}, stale, NOW, guard, (NOW - 301) * 1000) == (
        "stale message timestamp"
    )
    assert check(WebhookAuth("bearer", ""), {"Authorization": "Bearer "}, other, NOW, guard) == (
        "VAPI_WEBHOOK_SECRET is not set"
    )


def test_legacy_x_vapi_secret():
    guard = ReplayGuard()
    body = body_of()
    assert check(LEGACY, {"X-Vapi-Secret": SECRET}, body, NOW, guard) == ""
    for headers in ({}, {"X-Vapi-Secret": "wrong"}, {"Authorization": f"Bearer {SECRET}"}):
        assert "X-Vapi-Secret" in check(LEGACY, headers, body_of(status="x"), NOW, guard)


@pytest.mark.parametrize("auth", [BEARER, LEGACY, HMAC], ids=lambda a: a.mode)
def test_non_ascii_or_oversized_credentials_are_refused_not_errors(auth):
    guard = ReplayGuard()
    for value in ("Bearer wh\u00e9c", "\u00b2", "x" * 5000, "Bearer \udcff"):
        headers = {"Authorization": value, "X-Vapi-Secret": value, "x-signature": value, "x-timestamp": value}
        assert check(auth, headers, body_of(), NOW, guard) != ""


def test_hmac_default_plan_good_bad_replayed_stale():
    guard = ReplayGuard()
    body = body_of()
    stamp = str(int(NOW))
    good = {"x-timestamp": stamp, "x-signature": HMAC.sign(body, stamp)}
    assert (
        good["x-signature"]
        == __import__("hmac").new(SECRET.encode(), f"{stamp}.".encode() + body, "sha256").hexdigest()
    )  # Vapi's default payload
    assert check(HMAC, good, body, NOW + 10, guard) == ""
    assert check(HMAC, good, body, NOW + 11, guard) == "replayed"
    tampered = body_of(status="tampered")
    assert check(HMAC, good, tampered, NOW, guard) == "bad signature"
    other = WebhookAuth("hmac", "other")
    assert check(
        HMAC, {"x-timestamp": stamp, "x-signature": other.sign(tampered, stamp)}, tampered, NOW, guard
    ) == ("bad signature")
    old = str(int(NOW - 400))
    assert check(
        HMAC, {"x-timestamp": old, "x-signature": HMAC.sign(tampered, old)}, tampered, NOW, guard
    ) == ("stale timestamp")
    ms = str(int(NOW * 1000))  # milliseconds are understood too
    assert (
        check(HMAC, {"x-timestamp": ms, "x-signature": HMAC.sign(tampered, ms)}, tampered, NOW, guard) == ""
    )
    upper = body_of(status="upper")
    assert (
        check(HMAC, {"x-timestamp": stamp, "x-signature": HMAC.sign(upper, stamp).upper()}, upper, NOW, guard)
        == ""
    )
    for headers in ({}, {"x-timestamp": "soon", "x-signature": "ab"}, {"x-timestamp": stamp}):
        assert "malformed" in check(HMAC, headers, body, NOW, guard)


@pytest.mark.parametrize("algorithm", ["sha256", "sha512", "sha1"])
@pytest.mark.parametrize("encoding", ["hex", "base64"])
def test_hmac_algorithms_and_encodings(algorithm, encoding):
    auth = WebhookAuth(
        "hmac",
        SECRET,
        algorithm=algorithm,
        encoding=encoding,
        signature_prefix="sha=",
        signature_header="X-Hub-Signature",
        timestamp_header="X-Hub-Time",
    )
    body, stamp = body_of(), str(int(NOW))
    signature = auth.sign(body, stamp)
    assert signature.startswith("sha=")
    raw = bytes.fromhex(signature[4:]) if encoding == "hex" else base64.b64decode(signature[4:])
    assert len(raw) == {"sha256": 32, "sha512": 64, "sha1": 20}[algorithm]
    guard = ReplayGuard()
    assert check(auth, {"X-Hub-Time": stamp, "X-Hub-Signature": signature}, body, NOW, guard) == ""
    assert "malformed" in check(
        auth, {"X-Hub-Time": stamp, "X-Hub-Signature": signature[4:]}, body, NOW, guard
    )
    assert "malformed" in check(auth, {"x-timestamp": stamp, "x-signature": signature}, body, NOW, guard)
    wrong = WebhookAuth(
        "hmac",
        SECRET,
        algorithm="sha1" if algorithm != "sha1" else "sha256",
        encoding=encoding,
        signature_prefix="sha=",
        signature_header="X-Hub-Signature",
        timestamp_header="X-Hub-Time",
    )
    body2 = body_of(status="x")
    assert check(
        auth, {"X-Hub-Time": stamp, "X-Hub-Signature": wrong.sign(body2, stamp)}, body2, NOW, guard
    ) == ("bad signature")


def test_hmac_without_timestamp_custom_payload_and_base64_secret():
    guard = ReplayGuard()
    body = body_of()
    bare = WebhookAuth("hmac", SECRET, include_timestamp=False)
    assert bare.payload == "{body}"
    assert check(bare, {"x-signature": bare.sign(body)}, body, NOW, guard) == ""
    assert check(bare, {"x-signature": bare.sign(body)}, body, NOW, guard) == "replayed"
    key = base64.b64encode(b"\x00\xffraw key").decode()
    svix = WebhookAuth(
        "hmac",
        key,
        encoding="base64",
        payload_format="{svix-id}.{timestamp}.{method} {url}.{body}",
        message_id_header="svix-id",
        secret_is_base64=True,
    )
    url = "https://bridge.example.com/webhook/vapi"
    stamp = str(int(NOW))
    headers = {
        "svix-id": "msg_1",
        "x-timestamp": stamp,
        "x-signature": svix.sign(body, stamp, "POST", url, "msg_1"),
    }
    assert check(svix, headers, body, NOW, guard, method="POST", url=url) == ""
    assert (
        check(svix, {**headers, "svix-id": "msg_2"}, body, NOW, guard, method="POST", url=url)
        == "bad signature"
    )
    assert check(svix, headers, body, NOW, guard, method="POST", url=url + "x") == "bad signature"
    assert "svix-id" in check(svix, {k: v for k, v in headers.items() if k != "svix-id"}, body, NOW, guard)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"vapi_webhook_auth": "oauth2"}, "VAPI_WEBHOOK_AUTH must be one of bearer, secret, hmac"),
        ({"vapi_webhook_bearer_header": "Bad Header:"}, "VAPI_WEBHOOK_BEARER_HEADER is not a header name"),
        ({"vapi_webhook_auth": "hmac", "vapi_webhook_hmac_algorithm": "md5"}, "VAPI_WEBHOOK_HMAC_ALGORITHM"),
        ({"vapi_webhook_auth": "hmac", "vapi_webhook_hmac_encoding": "base32"}, "VAPI_WEBHOOK_HMAC_ENCODING"),
        (
            {"vapi_webhook_auth": "hmac", "vapi_webhook_hmac_signature_header": ""},
            "SIGNATURE_HEADER is not a header",
        ),
        (
            {"vapi_webhook_auth": "hmac", "vapi_webhook_hmac_payload": "{timestamp}.{bdy}"},
            "unknown placeholders",
        ),
        ({"vapi_webhook_auth": "hmac", "vapi_webhook_hmac_payload": "{timestamp}"}, "must contain {body}"),
        (
            {
                "vapi_webhook_auth": "hmac",
                "vapi_webhook_hmac_include_timestamp": False,
                "vapi_webhook_hmac_payload": "{timestamp}.{body}",
            },
            "INCLUDE_TIMESTAMP is off",
        ),
        ({"vapi_webhook_auth": "hmac", "vapi_webhook_hmac_payload": "{svix-id}.{body}"}, "MESSAGE_ID_HEADER"),
        ({"vapi_webhook_auth": "hmac", "vapi_webhook_hmac_secret_base64": True}, "not base64"),
    ],
)
def test_webhook_auth_settings_are_checked_at_start(settings, message):
    with pytest.raises(ConfigError, match=message.replace("{", r"\{").replace("}", r"\}")):
        Settings(vapi_webhook_secret="not base64!", **settings)


def test_replay_guard_forgets_after_the_window_and_is_bounded():
    guard = ReplayGuard(window_s=10, max_seen=3)
    assert guard.first_time(b"a", 0) and not guard.first_time(b"a", 5)
    assert guard.first_time(b"a", 11)  # outside the window: a stale check refuses it anyway
    for key in (b"b", b"c", b"d"):
        assert guard.first_time(key, 12)
    assert len(guard._seen) <= 3


def test_log_tally_logs_powers_of_two_of_a_bounded_set_of_kinds():
    tally = LogTally(max_kinds=4)
    assert [n for n in (tally.count("a") for _ in range(100)) if n] == [1, 2, 4, 8, 16, 32, 64]
    for i in range(1000):
        tally.count(f"kind{i}")
    assert len(tally.counts) <= 5 and tally.counts["(other)"] == 997


# -- message types and answers, pure -------------------------------------------------------------


def test_tool_call_results_carry_name_and_tool_call_id():
    message = {
        "type": "tool-calls",
        "toolWithToolCallList": [{"name": "sendEmail", "toolCall": {"id": "abc123"}}],
        "toolCallList": [
            {"id": "abc123", "name": "sendEmail", "parameters": {}},
            {"id": "t2", "type": "function", "function": {"name": "book", "arguments": "{}"}},
            {"id": "t3"},
        ],
    }
    assert tool_calls(message) == [("abc123", "sendEmail"), ("t2", "book"), ("t3", "")]
    (first, second, third) = reply(message)["results"]
    assert first["name"] == "sendEmail" and first["toolCallId"] == "abc123" and first["error"]
    assert second["name"] == "book" and third["toolCallId"] == "t3"
    assert reply({"type": "knowledge-base-request"}) == {"documents": []}
    assert "error" in reply({"type": "transfer-destination-request"})
    assert reply({"type": "status-update"}) == {}


# -- through the gateway --------------------------------------------------------------------------


async def post(session, url, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
    async with session.post(
        url + "/webhook/vapi", data=body, headers={"Content-Type": "application/json", **headers}
    ) as r:
        return r.status, await r.text()


async def wait_bound(session, url, call_sid) -> None:
    for _ in range(200):
        async with session.get(f"{url}/calls/{call_sid}") as r:
            if r.status == 200 and any(e["event"] == "upstream.bound" for e in (await r.json())["timeline"]):
                return
        await asyncio.sleep(0.02)
    raise AssertionError("the call was never bound to a Vapi call")


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["bearer", "secret", "hmac"])
async def test_webhooks_land_in_the_call_timeline(start_server, mode):
    fake = FakeVapi()
    auth_plan = WebhookAuth(mode, SECRET)
    async with fake.running() as base:
        url = await start_server(
            upstream="vapi",
            vapi_api_url=base,
            vapi_api_key=fake.api_key,
            vapi_assistant_id="asst",
            vapi_webhook_secret=SECRET,
            vapi_webhook_auth=mode,
        )

        def auth(body: bytes, stamp: float | None = None, plan: WebhookAuth = auth_plan) -> dict[str, str]:
            if mode == "bearer":
                return {"Authorization": f"Bearer {plan.secret}"}
            if mode == "secret":
                return {"X-Vapi-Secret": plan.secret}
            ts = str(int(stamp or time.time()))
            return {"x-timestamp": ts, "x-signature": plan.sign(body, ts)}

        call = SimulatedCall(url, hold_s=1.5)
        running = asyncio.ensure_future(call.run())
        async with aiohttp.ClientSession() as http:
            await wait_bound(http, url, call.call_sid)
            now_ms = time.time() * 1000
            good = body_of(
                "transcript", role="user", transcriptType="final", transcript="hello there", timestamp=now_ms
            )
            headers = auth(good)
            assert (await post(http, url, good, headers))[0] == 200
            assert (await post(http, url, good, headers))[0] == 401  # replayed, byte for byte
            bad = body_of("status-update", status="in-progress", timestamp=now_ms)
            assert (await post(http, url, bad, auth(bad, plan=WebhookAuth(mode, "nope"))))[0] == 401
            stale = body_of("status-update", status="ringing", timestamp=now_ms - 600_000)
            assert (await post(http, url, stale, auth(stale, time.time() - 600)))[0] == 401
            unknown = body_of("status-update", call_id="someone-else", status="ended")
            assert (await post(http, url, unknown, auth(unknown)))[0] == 404
            tools = body_of("tool-calls", toolCallList=[{"id": "t1", "function": {"name": "book"}}])
            status, text = await post(http, url, tools, auth(tools))
            assert status == 200 and orjson.loads(text)["results"][0] == {
                "name": "book",
                "toolCallId": "t1",
                "error": "callbridge runs no tools; give this tool its own server URL",
            }
            final_only = body_of(
                'transcript[transcriptType="final"]',
                role="assistant",
                transcriptType="final",
                transcript="Booked for Monday.",
            )
            assert (await post(http, url, final_only, auth(final_only)))[0] == 200
            result = await running
            # After the call ended: the end-of-call report still finds it.
            report = body_of("end-of-call-report", endedReason="customer-ended-call", summary="Booked.")
            assert (await post(http, url, report, auth(report)))[0] == 200
            record = await call.fetch_record(http)
            garbage = b"not json"
            assert (await post(http, url, garbage, auth(garbage)))[0] == 400

    heard = [e for e in record["timeline"] if e["event"] == "vapi.transcript"]
    assert [(e["role"], e["transcript"]) for e in heard] == [
        ("user", "hello there"),
        ("assistant", "Booked for Monday."),
    ]
    assert [e["tools"] for e in result.record["timeline"] if e["event"] == "vapi.tool-calls"] == [["book"]]
    assert not [e for e in result.record["timeline"] if e["event"] == "vapi.status-update"]
    (ended,) = [e for e in record["timeline"] if e["event"] == "vapi.end-of-call-report"]
    assert ended["endedReason"] == "customer-ended-call" and ended["summary"] == "Booked."


@pytest.mark.slow
async def test_every_documented_type_is_accepted_and_future_ones_acknowledged(start_server, caplog):
    fake = FakeVapi()
    headers = {"Authorization": f"Bearer {SECRET}"}
    async with fake.running() as base:
        url = await start_server(
            upstream="vapi",
            vapi_api_url=base,
            vapi_api_key=fake.api_key,
            vapi_assistant_id="asst",
            vapi_webhook_secret=SECRET,
        )
        call = SimulatedCall(url, hold_s=3.0)
        running = asyncio.ensure_future(call.run())
        async with aiohttp.ClientSession() as http:
            await wait_bound(http, url, call.call_sid)
            for kind in sorted(SERVER_MESSAGE_TYPES):
                status, text = await post(http, url, body_of(kind, n=kind), headers)
                assert status == 200, (kind, status, text)
                without_call = orjson.dumps({"message": {"type": kind, "chat": {"id": "c"}, "n": kind}})
                assert (await post(http, url, without_call, headers))[0] == 200, kind
            with caplog.at_level(logging.INFO, logger="callbridge.gateway"):
                for i in range(50):
                    status, text = await post(http, url, body_of("call.future-thing", i=i), headers)
                    assert status == 200 and orjson.loads(text) == {}
                for i in range(300):
                    assert (await post(http, url, body_of(f"other.kind{i}"), headers))[0] == 200
                for bad in ("", "has space", "x" * 65, "ünïcode", 7):
                    assert (await post(http, url, body_of(bad), headers))[0] == 400
        result = await running
    lines = [r for r in caplog.records if "undocumented message type" in r.getMessage()]
    future = [r for r in lines if "call.future-thing" in r.getMessage()]
    assert 1 <= len(future) <= 6  # 1st, 2nd, 4th, ... of 50
    assert len(lines) <= 64 + 9 + 6  # one per kind for a bounded set of kinds, then powers of two
    timeline = {e["event"] for e in result.record["timeline"]}
    assert "vapi.status-update" in timeline and "vapi.call.future-thing" not in timeline


async def test_bad_credentials_give_401_and_bounded_log_lines(start_server, caplog):
    url = await start_server(vapi_webhook_secret=SECRET)
    async with aiohttp.ClientSession() as http:
        with caplog.at_level(logging.INFO, logger="callbridge.gateway"):
            for i in range(300):
                value = ["Bearer wh\u00e9c", "Bearer \u00b2" * 50, "Bearer nope", "x" * 3000][i % 4]
                status, _ = await post(http, url, body_of(i=i), {"Authorization": value})
                assert status == 401
            raw = (
                b"POST /webhook/vapi HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xc3\xa9\xff\r\n"
                b"Content-Length: 2\r\nConnection: close\r\n\r\n{}"
            )
            host, port = url.removeprefix("http://").split(":")
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(raw)
            await writer.drain()
            answer = await reader.read()
            writer.close()
            assert answer.startswith(b"HTTP/1.1 401")
    refused = [r for r in caplog.records if "refused" in r.getMessage()]
    assert 1 <= len(refused) <= 10  # 301 refusals: the 1st, 2nd, 4th, ... of each reason
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_webhook_refused_without_a_secret(start_server):
    url = await start_server()
    async with aiohttp.ClientSession() as http:
        status, text = await post(http, url, body_of(), {"Authorization": "Bearer "})
    assert status == 401 and "not set" in text
