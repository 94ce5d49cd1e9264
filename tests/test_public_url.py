"""The public URL as Twilio sees it, over real sockets: behind a proxy that says ``wss``
on WebSocket upgrades, under a ``PUBLIC_URL`` with a path prefix (the proxy strips it),
and requests signed with a Twilio SharedKey (HMAC-SHA256)."""

from __future__ import annotations

import asyncio
import logging
import re

import aiohttp
import orjson
import pytest

from callbridge.codecs import mediastreams as ms
from callbridge.config import ConfigError, Settings
from callbridge.gateway.console import STATIC_FILES
from callbridge.gateway.security import SIGNATURE_SETTINGS, SignatureChecker
from callbridge.sim.caller import SimulatedCall, new_sid, parse_stream_twiml

from .stripproxy import StripProxy

AUTH = "test-auth-token-0123456789abcdef"
SHARED = "shared-key-secret-0123456789abcdef"
HOST = "voice.example.com"


def _params(call_sid: str) -> dict[str, str]:
    return {"AccountSid": "AC" + "0" * 32, "CallSid": call_sid, "From": "+15005550006", "To": "+15005550001"}


async def _webhook(
    http: aiohttp.ClientSession,
    url: str,
    signed_url: str,
    params: dict[str, str],
    headers: dict[str, str],
    secret: str = AUTH,
    algorithm: str = "HMAC_SHA1",
) -> tuple[int, str]:
    """POST the voice webhook to ``url`` as Twilio would, signed over ``signed_url``."""
    headers = {"X-Twilio-Signature": SignatureChecker.sign(secret, signed_url, params, algorithm), **headers}
    async with http.post(url + "/voice/inbound", data=params, headers=headers) as resp:
        return resp.status, await resp.text()


async def _greeted(ws: aiohttp.ClientWebSocketResponse, call_sid: str, token: str) -> int | None:
    """Start the stream; wait for the agent's first audio, then hang up. Returns the close
    code (1000 when the stream was accepted)."""
    stream_sid = new_sid("MZ")
    await ws.send_str(ms.twilio_connected())
    await ws.send_str(ms.twilio_start(1, stream_sid, call_sid, "AC" + "0" * 32, {"token": token}))
    while True:
        msg = await asyncio.wait_for(ws.receive(), 10)
        if msg.type != aiohttp.WSMsgType.TEXT:
            return ws.close_code
        if orjson.loads(msg.data)["event"] == "media":
            break
    await ws.send_str(ms.twilio_stop(2, stream_sid, call_sid, "AC" + "0" * 32))
    while (await asyncio.wait_for(ws.receive(), 10)).type == aiohttp.WSMsgType.TEXT:
        pass
    return ws.close_code


# --- behind a proxy (TRUST_PROXY) -------------------------------------------------------------


@pytest.mark.parametrize("upgrade_proto", ["wss", "https"])
async def test_stream_behind_a_proxy_that_forwards_wss(start_server, upgrade_proto):
    """Traefik sends ``X-Forwarded-Proto: wss`` on the upgrade (nginx: ``https``); Twilio
    signed the ``wss://`` Stream URL with no parameters either way."""
    url = await start_server(twilio_auth_token=AUTH, trust_proxy=True)
    call_sid = new_sid("CA")
    params = _params(call_sid)
    async with aiohttp.ClientSession() as http:
        status, twiml = await _webhook(
            http,
            url,
            f"https://{HOST}/voice/inbound",
            params,
            {"X-Forwarded-Proto": "https", "X-Forwarded-Host": HOST},
        )
        assert status == 200
        stream_url, parameters = parse_stream_twiml(twiml)
        assert stream_url == f"wss://{HOST}/media"
        headers = {
            "X-Twilio-Signature": SignatureChecker.sign(AUTH, stream_url, {}),
            "X-Forwarded-Proto": upgrade_proto,
            "X-Forwarded-Host": HOST,
        }
        async with http.ws_connect(url.replace("http://", "ws://") + "/media", headers=headers) as ws:
            assert await _greeted(ws, call_sid, parameters["token"]) == 1000


@pytest.mark.parametrize("proto,scheme", [("wss", "https"), ("ws", "http"), ("https", "https")])
async def test_webhook_behind_a_proxy_maps_websocket_schemes(start_server, proto, scheme):
    url = await start_server(twilio_auth_token=AUTH, trust_proxy=True)
    params = _params(new_sid("CA"))
    forwarded = {"X-Forwarded-Proto": proto, "X-Forwarded-Host": HOST}
    async with aiohttp.ClientSession() as http:
        status, twiml = await _webhook(http, url, f"{scheme}://{HOST}/voice/inbound", params, forwarded)
        assert status == 200
        assert parse_stream_twiml(twiml)[0] == f"{'wss' if scheme == 'https' else 'ws'}://{HOST}/media"
        if proto != scheme:  # signed over the forwarded scheme taken literally: not Twilio's URL
            assert (await _webhook(http, url, f"{proto}://{HOST}/voice/inbound", params, forwarded))[0] == 403


async def test_forwarded_host_that_makes_no_url_is_refused_not_500(start_server, caplog):
    url = await start_server(twilio_auth_token=AUTH, trust_proxy=True)
    async with aiohttp.ClientSession() as http:
        for host in ("[h", "h:99999"):
            forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": host}
            status, _ = await _webhook(
                http, url, f"https://{host}/voice/inbound", _params(new_sid("CA")), forwarded
            )
            assert status == 403, host
            async with http.ws_connect(
                url.replace("http://", "ws://") + "/media",
                headers={"X-Twilio-Signature": "x" * 28, **forwarded},
            ) as ws:
                msg = await asyncio.wait_for(ws.receive(), 10)
                assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1008
    assert "Error handling request" not in caplog.text


# --- PUBLIC_URL with a path prefix ------------------------------------------------------------


async def test_public_url_path_prefix_is_kept_in_every_url(start_server):
    """Twilio calls ``https://example.com/voice-bridge/voice/inbound``; the proxy strips
    ``/voice-bridge`` (the simulator connects the same way: the public path under
    ``PUBLIC_URL`` on the gateway's own address). Every URL the TwiML names, and every
    signature, keeps the prefix."""
    public = "https://example.com/voice-bridge"
    url = await start_server(twilio_auth_token=AUTH, public_url=public + "/")
    call = SimulatedCall(url, auth_token=AUTH, public_url=public, hold_s=0.3)
    result = await call.run()
    assert result.close_code == 1000 and "greeting_audio" in result.timeline_events()
    urls = re.findall(r"(?:https?|wss?)://[^\s\"<]+", result.twiml)
    assert "wss://example.com/voice-bridge/media" in urls
    assert len(urls) >= 2 and all(
        u.split("://", 1)[1].startswith("example.com/voice-bridge/") for u in urls
    ), urls
    # Signed over the URL without the prefix (what the old code checked): refused.
    async with aiohttp.ClientSession() as http:
        status, _ = await _webhook(http, url, "https://example.com/voice/inbound", _params(new_sid("CA")), {})
        assert status == 403
        async with http.ws_connect(
            url.replace("http://", "ws://") + "/media",
            headers={"X-Twilio-Signature": SignatureChecker.sign(AUTH, "wss://example.com/media", {})},
        ) as ws:
            msg = await asyncio.wait_for(ws.receive(), 10)
            assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1008


# --- Twilio SharedKey signatures ----------------------------------------------------------------


async def test_shared_key_signatures(start_server, caplog):
    url = await start_server(twilio_auth_token=AUTH, twilio_shared_key=SHARED)
    public = url + "/voice/inbound"
    sha256 = {SIGNATURE_SETTINGS: "key=webhooks_sharedkey_0123,algorithm=HMAC_SHA256"}
    async with aiohttp.ClientSession() as http:
        call_sid = new_sid("CA")
        status, twiml = await _webhook(http, url, public, _params(call_sid), sha256, SHARED, "HMAC_SHA256")
        assert status == 200
        stream_url, parameters = parse_stream_twiml(twiml)
        # No header: the auth token, HMAC-SHA1, as before.
        assert (await _webhook(http, url, public, _params(new_sid("CA")), {}))[0] == 200
        # The header names the key: the auth token's signature is not enough, nor SHA-1
        # with the shared key when SHA-256 is named.
        assert (await _webhook(http, url, public, _params(new_sid("CA")), sha256))[0] == 403
        assert (await _webhook(http, url, public, _params(new_sid("CA")), sha256, SHARED))[0] == 403
        sha1 = {SIGNATURE_SETTINGS: "key=webhooks_sharedkey_0123,algorithm=HMAC_SHA1"}
        assert (await _webhook(http, url, public, _params(new_sid("CA")), sha1, SHARED))[0] == 200
        # An algorithm Twilio does not use: refused, one line each (the library's own
        # warning is never reached).
        caplog.clear()
        md5 = {SIGNATURE_SETTINGS: "key=x,algorithm=HMAC_MD5"}
        for _ in range(20):
            assert (await _webhook(http, url, public, _params(new_sid("CA")), md5, SHARED))[0] == 403
        assert "unsupported signature algorithm 'HMAC_MD5'" in caplog.text
        assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 20
        assert not [r for r in caplog.records if r.name.startswith("twilio")]
        # The stream handshake signed the same way is accepted.
        headers = {
            "X-Twilio-Signature": SignatureChecker.sign(SHARED, stream_url, {}, "HMAC_SHA256"),
            **sha256,
        }
        async with http.ws_connect(stream_url, headers=headers) as ws:
            assert await _greeted(ws, call_sid, parameters["token"]) == 1000


async def test_shared_key_header_without_a_configured_key_is_refused(start_server, caplog):
    url = await start_server(twilio_auth_token=AUTH)
    sha256 = {SIGNATURE_SETTINGS: "key=webhooks_sharedkey_0123,algorithm=HMAC_SHA256"}
    async with aiohttp.ClientSession() as http:
        status, _ = await _webhook(
            http, url, url + "/voice/inbound", _params(new_sid("CA")), sha256, SHARED, "HMAC_SHA256"
        )
    assert status == 403 and "TWILIO_SHARED_KEY is not set" in caplog.text


def test_shared_key_rotation_accepts_either_secret():
    checker = SignatureChecker(AUTH, ("old-secret", "new-secret"))
    url, params = "https://h/voice/inbound", {"CallSid": "CA1"}
    settings = "key=k,algorithm=HMAC_SHA256"
    for secret in ("old-secret", "new-secret"):
        assert checker.valid(url, params, SignatureChecker.sign(secret, url, params, "HMAC_SHA256"), settings)
    assert not checker.valid(
        url, params, SignatureChecker.sign("other", url, params, "HMAC_SHA256"), settings
    )
    assert checker.valid(url, params, SignatureChecker.sign(AUTH, url, params), "")  # empty header: legacy
    for url in (
        "https://h/\udcff",
        "https://h:99999/",
        "https://[h/",
    ):  # from a forwarded Host: refused, no raise
        assert not checker.valid(url, params, "x" * 28, None)


async def test_call_through_a_path_stripping_proxy(start_server):
    """The same, through a real proxy that strips the prefix: Twilio's side (the simulator)
    knows only the public URL; the webhook, its stream and the redirect all pass."""
    proxy = StripProxy("/voice-bridge")
    public = await proxy.start() + "/voice-bridge"
    try:
        proxy.backend = await start_server(twilio_auth_token=AUTH, public_url=public)
        result = await SimulatedCall(public, auth_token=AUTH, hold_s=0.3).run()
        assert result.close_code == 1000 and "greeting_audio" in result.timeline_events()
        assert parse_stream_twiml(result.twiml)[0] == public.replace("http://", "ws://") + "/media"
        assert result.record is not None and result.record["callSid"] == result.call_sid
    finally:
        await proxy.stop()


async def test_console_links_keep_the_path_prefix(start_server):
    """The console under ``https://example.com/voice-bridge/console``: the pages link
    relative to a ``<base href>`` of the prefix, the sign-in redirect and the softphone's
    socket path carry it, and no script names an absolute path of ours."""
    token = "console-token-0123456789"
    url = await start_server(public_url="https://example.com/voice-bridge", console_token=token)
    bearer = {"Authorization": f"Bearer {token}"}
    absolute = re.compile(r"""(?:href|src|action)="/|["'`]/(?:console|calls|metrics)""")
    async with aiohttp.ClientSession() as http:
        async with http.get(url + "/console") as resp:
            login = await resp.text()
            assert resp.status == 401 and '<base href="/voice-bridge/">' in login
        async with http.post(url + "/console/login", data={"token": token}, allow_redirects=False) as resp:
            assert resp.status == 303 and resp.headers["Location"] == "/voice-bridge/console"
        async with http.get(url + "/console", headers=bearer) as resp:
            page = await resp.text()
            assert resp.status == 200 and '<base href="/voice-bridge/">' in page
        async with http.post(url + "/console/call", json={}, headers=bearer) as resp:
            assert (await resp.json())["path"] == "/voice-bridge/console/media"
        scripts = []
        for name in sorted(STATIC_FILES):
            async with http.get(f"{url}/console/static/{name}", headers=bearer) as resp:
                scripts.append(await resp.text())
    for text in (
        login.replace('<base href="/voice-bridge/">', ""),
        page.replace('<base href="/voice-bridge/">', ""),
        *scripts,
    ):
        assert not absolute.search(text), absolute.search(text)


def test_public_url_setting_is_normalised_and_checked():
    settings = Settings(public_url="https://example.com/voice-bridge/")
    assert settings.server.public_url == "https://example.com/voice-bridge"  # what every route is appended to
    assert Settings.from_env(settings.to_env()) == settings
    for bad in (
        "https://example.com/?a=1",
        "https://example.com/#x",
        "https://exämple.com",
        "ftp://example.com",
    ):
        with pytest.raises(ConfigError):
            Settings(public_url=bad)
    assert Settings(twilio_shared_key=" a , b ").twilio.shared_keys == ("a", "b")
    with pytest.raises(ConfigError):
        Settings(twilio_shared_key="a,b,c")
