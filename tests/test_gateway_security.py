"""Signatures, tokens and bad input against a real gateway over real sockets."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from callbridge.codecs import mediastreams as ms
from callbridge.gateway.security import SignatureChecker, StreamTokens, TokenError, public_base, stream_url
from callbridge.sim.caller import SimulatedCall, WebhookRefused, new_sid, parse_stream_twiml

AUTH = "test-auth-token-0123456789abcdef"


# --- tokens and URLs (pure) ---------------------------------------------------------------


def test_token_binds_call_and_expiry():
    tokens = StreamTokens(b"k" * 32, ttl_s=60)
    token = tokens.issue("CA1", now=1000.0)
    tokens.verify(token, "CA1", now=1059.0)
    with pytest.raises(TokenError, match="expired"):
        tokens.verify(token, "CA1", now=1061.0)
    with pytest.raises(TokenError, match="another call"):
        tokens.verify(token, "CA2", now=1001.0)
    with pytest.raises(TokenError, match="signature"):
        StreamTokens(b"x" * 32, 60).verify(token, "CA1", now=1001.0)
    forged = token.replace(".1060.", ".9999999999.")
    with pytest.raises(TokenError, match="signature"):
        tokens.verify(forged, "CA1", now=1001.0)
    for bad in (None, "", "v1.CA1", "v2.CA1.1060.x", "v1.CA1.abc.x", "v1." + "A" * 300):
        with pytest.raises(TokenError):
            tokens.verify(bad, "CA1", now=1001.0)


def test_public_base_honours_proxy_headers_only_when_trusted():
    fwd = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "voice.example.com"}
    assert public_base(fwd, "http", "10.0.0.5:8080", "", trust_proxy=False) == "http://10.0.0.5:8080"
    assert public_base(fwd, "http", "10.0.0.5:8080", "", trust_proxy=True) == "https://voice.example.com"
    # PUBLIC_URL wins, path prefix and all (a proxy strips it before us).
    assert (
        public_base(fwd, "http", "x", "https://pub.example.com/voice-bridge/", True)
        == "https://pub.example.com/voice-bridge"
    )
    # WebSocket upgrades through Traefik say wss: the base is still https (and ws: http).
    for proto, base in (
        ("wss", "https"),
        ("https", "https"),
        ("ws", "http"),
        ("http", "http"),
        ("WSS", "https"),
    ):
        assert public_base({"X-Forwarded-Proto": proto}, "http", "h", "", True) == f"{base}://h", proto
        assert stream_url(public_base({"X-Forwarded-Proto": proto}, "http", "h", "", True)).startswith(
            "wss://" if base == "https" else "ws://"
        )
    assert public_base({"X-Forwarded-Proto": "gopher"}, "http", "h", "", True) == "http://h"  # unknown: ours


def test_signature_matches_twilio_reference_vector():
    # The known-answer vector of Twilio's own SDK test suites.
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    params = {
        "Digits": "1234",
        "CallSid": "CA1234567890ABCDE",
        "To": "+18005551212",
        "Caller": "+14158675309",
        "From": "+14158675309",
    }
    checker = SignatureChecker("12345")
    assert SignatureChecker.sign("12345", url, params) == "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    assert checker.valid(url, params, "RSOYDt4T1cUTdK1PDd93/VVr8B8=")
    assert checker.valid(
        url.replace("mycompany.com", "mycompany.com:443"), params, "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    )
    assert not checker.valid(url, {**params, "Digits": "4321"}, "RSOYDt4T1cUTdK1PDd93/VVr8B8=")
    assert not checker.valid(url, params, None)
    assert SignatureChecker("").valid(url, params, None)  # checks off without a token


# --- the webhook --------------------------------------------------------------------------


async def test_webhook_requires_a_valid_signature(start_server, caplog):
    url = await start_server(twilio_auth_token=AUTH)
    with pytest.raises(WebhookRefused) as refused:
        await SimulatedCall(url, auth_token="wrong-token").run()
    assert refused.value.status == 403
    assert "bad or missing X-Twilio-Signature" in caplog.text
    with pytest.raises(WebhookRefused):
        await SimulatedCall(url, auth_token="").run()  # no signature at all
    result = await SimulatedCall(url, auth_token=AUTH, hold_s=0.2).run()
    assert result.close_code == 1000 and "greeting_audio" in result.timeline_events()


async def test_webhook_answers_twiml_with_token_and_no_query_string(start_server):
    url = await start_server()
    call = SimulatedCall(url)
    async with aiohttp.ClientSession() as http:
        stream_url, params = parse_stream_twiml(await call.post_webhook(http))
    assert stream_url == url.replace("http://", "ws://") + "/media"
    assert "?" not in stream_url
    assert set(params) == {"token", "line"} and params["token"].startswith(f"v1.{call.call_sid}.")
    assert params["line"] == call.to_number  # the number called: a warm transfer calls from it
    assert "<Connect action=" in call.result.twiml and "<Stream url=" in call.result.twiml


async def test_webhook_behind_tls_proxy(start_server):
    url = await start_server(twilio_auth_token=AUTH, trust_proxy=True)
    call = SimulatedCall(url, auth_token=AUTH, public_url="https://voice.example.com")
    params = call.webhook_params()
    sig = SignatureChecker.sign(AUTH, "https://voice.example.com/voice/inbound", params)
    headers = {
        "X-Twilio-Signature": sig,
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "voice.example.com",
    }
    async with aiohttp.ClientSession() as http:
        async with http.post(url + "/voice/inbound", data=params, headers=headers) as resp:
            assert resp.status == 200
            stream_url, _ = parse_stream_twiml(await resp.text())
        assert stream_url == "wss://voice.example.com/media"
        # The same request without the forwarded headers is signed for another URL.
        async with http.post(
            url + "/voice/inbound", data=params, headers={"X-Twilio-Signature": sig}
        ) as resp:
            assert resp.status == 403


async def test_webhook_limits(start_server):
    url = await start_server()
    async with aiohttp.ClientSession() as http:
        async with http.post(url + "/voice/inbound", data={"From": "+1"}) as resp:
            assert resp.status == 400  # no CallSid
        async with http.post(url + "/voice/inbound", data={"CallSid": "CA1", "Big": "x" * 100_000}) as resp:
            assert resp.status == 413


# --- the media socket ---------------------------------------------------------------------


async def _stream_token(http: aiohttp.ClientSession, url: str, call_sid: str) -> str:
    async with http.post(url + "/voice/inbound", data={"CallSid": call_sid}) as resp:
        return parse_stream_twiml(await resp.text())[1]["token"]


async def _close_code(ws: aiohttp.ClientWebSocketResponse) -> int | None:
    while True:
        msg = await asyncio.wait_for(ws.receive(), 5)
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
            return ws.close_code
        # ignore agent media sent before the close


async def _started_socket(http, url, call_sid=None):
    call_sid = call_sid or new_sid("CA")
    token = await _stream_token(http, url, call_sid)
    ws = await http.ws_connect(url + "/media")
    await ws.send_str(ms.twilio_connected())
    stream_sid = new_sid("MZ")
    await ws.send_str(ms.twilio_start(1, stream_sid, call_sid, "AC1", {"token": token}))
    return ws, stream_sid


BAD_MESSAGES = [
    ("not json {", 1007),
    ('["a list"]', 1007),
    ('{"event": "media", "media": {"chunk": "1", "timestamp": "0", "payload": "!!notbase64"}}', 1007),
    ('{"event": "media", "media": {"chunk": "x", "timestamp": "0", "payload": ""}}', 1007),
    ('{"event": "dtmf", "dtmf": {"digit": "xyz"}}', 1007),
    (ms.twilio_start(2, "MZ2", "CA2", "AC1", {}), 1008),  # a second start
]


@pytest.mark.slow
@pytest.mark.parametrize("text,code", BAD_MESSAGES)
async def test_bad_messages_close_that_socket_only(start_server, text, code, caplog):
    url = await start_server()
    good = SimulatedCall(url, dtmf="4", hold_s=1.0)
    good_task = asyncio.create_task(good.run())
    async with aiohttp.ClientSession() as http:
        ws, _ = await _started_socket(http, url)
        await ws.send_str(text)
        assert await _close_code(ws) == code
    result = await good_task
    assert result.close_code == 1000
    assert "dtmf_reply_audio" in result.timeline_events()
    assert "media socket" in caplog.text


async def test_binary_oversized_and_early_media(start_server):
    url = await start_server()
    async with aiohttp.ClientSession() as http:
        ws, _ = await _started_socket(http, url)
        await ws.send_bytes(b"\x00\x01")
        assert await _close_code(ws) == 1003

        ws, _ = await _started_socket(http, url)
        await ws.send_str('{"event":"media","pad":"' + "x" * (ms.MAX_MESSAGE_BYTES + 10) + '"}')
        assert await _close_code(ws) == 1009

        ws = await http.ws_connect(url + "/media")  # media before start
        await ws.send_str(ms.twilio_media(1, "MZ1", 1, 0, b"\xff" * 160))
        assert await _close_code(ws) == 1008

        async with http.get(url + "/healthz") as resp:
            assert (await resp.json())["status"] == "ok"


async def test_unknown_events_are_ignored(start_server):
    url = await start_server()
    async with aiohttp.ClientSession() as http:
        ws, stream_sid = await _started_socket(http, url)
        await ws.send_str('{"event": "futureThing", "futureThing": {}}')
        await ws.send_str(ms.twilio_media(2, stream_sid, 1, 0, b"\xff" * 160))
        await ws.send_str(ms.twilio_stop(3, stream_sid, "CA", "AC1"))
        assert await _close_code(ws) == 1000


@pytest.mark.slow
async def test_start_token_is_checked(start_server):
    url = await start_server(stream_token_ttl_s=1)
    async with aiohttp.ClientSession() as http:
        # No token.
        ws = await http.ws_connect(url + "/media")
        await ws.send_str(ms.twilio_start(1, "MZ1", "CA1", "AC1", {}))
        assert await _close_code(ws) == 1008
        # A token issued for another call.
        token = await _stream_token(http, url, "CAother")
        ws = await http.ws_connect(url + "/media")
        await ws.send_str(ms.twilio_start(1, "MZ1", "CA1", "AC1", {"token": token}))
        assert await _close_code(ws) == 1008
        # An expired token.
        token = await _stream_token(http, url, "CAlate")
        await asyncio.sleep(2.1)
        ws = await http.ws_connect(url + "/media")
        await ws.send_str(ms.twilio_start(1, "MZ1", "CAlate", "AC1", {"token": token}))
        assert await _close_code(ws) == 1008
        # A second live stream for the same call (once the first one is live: its greeting
        # arrives; otherwise the two starts race and either may be the one refused).
        ws1, _ = await _started_socket(http, url, "CAtwice")
        first = await ws1.receive(timeout=10)
        assert first.type == aiohttp.WSMsgType.TEXT, first
        ws2, _ = await _started_socket(http, url, "CAtwice")
        assert await _close_code(ws2) == 1008
        await ws1.close()


async def test_handshake_signature_is_checked(start_server):
    url = await start_server(twilio_auth_token=AUTH)
    stream_url = url.replace("http://", "ws://") + "/media"
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(stream_url)
        assert await _close_code(ws) == 1008
        bad = SignatureChecker.sign("other-token", stream_url, {})
        ws = await http.ws_connect(stream_url, headers={"X-Twilio-Signature": bad})
        assert await _close_code(ws) == 1008
    # The simulator signs like Twilio and gets through.
    result = await SimulatedCall(url, auth_token=AUTH, hold_s=0.2).run()
    assert result.close_code == 1000


def test_token_expiry_uses_wall_clock_seconds():
    tokens = StreamTokens(b"k", ttl_s=120)
    token = tokens.issue("CA9", time.time())
    tokens.verify(token, "CA9", time.time())
