"""The simulator plays Twilio as Twilio documents it: after a ``<Connect><Stream>`` ends
it requests the ``<Connect action>`` (and never runs the verbs after it), or runs the next
verb when there is no action; it refuses the Stream URLs Twilio refuses (``ws://``, a
query string); and a whole call works over real TLS (``https`` webhook, ``wss`` stream)
with a certificate made for the test. Real sockets throughout: a real gateway, or a small
local "voice app" that answers chosen TwiML."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from pathlib import Path
from typing import Any

import pytest
from aiohttp import WSMsgType, web
from twilio.request_validator import RequestValidator

from callbridge.config import Settings
from callbridge.gateway.app import create_app
from callbridge.sim.caller import SimulatedCall, StreamUrlRefused, check_stream_url, parse_twiml

from .conftest import speech_8k
from .remote_fakes import serve

TOKEN = "fidelity-token"


class VoiceApp:
    """A voice app on loopback: ``POST /voice`` answers ``twiml(base)``; ``/media`` takes a
    stream and ends it (``end``: "close" sends a close frame, "abort" breaks the TCP
    connection); ``/next`` and ``/after`` answer ``<Hangup/>``, each signed request checked
    as Twilio signs it. ``hits`` lists (method, path) of every request."""

    def __init__(self, twiml: str, end: str = "close") -> None:
        self.twiml = twiml
        self.end = end
        self.hits: list[tuple[str, str]] = []
        self.streams = 0
        self.base = ""

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/voice", self.voice)
        app.router.add_get("/media", self.media)
        app.router.add_route("*", "/next", self.hangup)
        app.router.add_route("*", "/after", self.hangup)
        return app

    async def _signed(self, request: web.Request) -> None:
        form = {k: str(v) for k, v in (await request.post()).items()}
        url = f"http://{self.base}{request.path_qs}"
        if not RequestValidator(TOKEN).validate(url, form, request.headers.get("X-Twilio-Signature", "")):
            raise web.HTTPForbidden(text="bad signature\n")

    async def voice(self, request: web.Request) -> web.Response:
        self.hits.append((request.method, request.path))
        await self._signed(request)
        return web.Response(text=self.twiml.format(base=self.base), content_type="text/xml")

    async def hangup(self, request: web.Request) -> web.Response:
        self.hits.append((request.method, request.path_qs))
        await self._signed(request)
        return web.Response(text="<Response><Hangup/></Response>", content_type="text/xml")

    async def media(self, request: web.Request) -> web.WebSocketResponse:
        self.streams += 1
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        for _ in range(2):  # connected, start
            msg = await ws.receive()
            assert msg.type == WSMsgType.TEXT
        if self.end == "abort":
            assert request.transport is not None  # the socket is open
            request.transport.abort()
        else:
            await ws.close(code=1000)
        return ws


async def _call(app: VoiceApp, **kwargs: Any):
    async with serve(app.app()) as host:
        app.base = host
        call = SimulatedCall(f"http://{host}", auth_token=TOKEN, webhook_path="/voice", hold_s=5.0, **kwargs)
        return await asyncio.wait_for(call.run(), 20)


CONNECT = (
    '<Response><Connect{attrs}><Stream url="ws://{{base}}/media"/></Connect>'
    '<Redirect method="POST">http://{{base}}/after</Redirect></Response>'
)


@pytest.mark.parametrize("end", ["close", "abort"])
async def test_connect_action_is_requested_and_the_verbs_after_connect_never_run(end):
    """Our close (documented: "Twilio executes TwiML after <Connect><Stream> if your server
    closes the WebSocket") and a broken connection (assumed the same) both end the
    <Connect>: Twilio requests its action with its method, never the <Redirect> after it."""
    app = VoiceApp(CONNECT.format(attrs=' action="http://{base}/next?attempt=1" method="GET"'), end)
    result = await _call(app)
    assert result.actions == 1 and result.redirects == 0 and result.ended_by == "hangup"
    assert result.stream_ends == ["closed" if end == "close" else "broken"]
    assert [h for h in app.hits if h[0] == "GET"] == [("GET", "/next?attempt=1&" + _query(result.call_sid))]
    assert not any(path.startswith("/after") for _, path in app.hits)


async def test_without_an_action_the_next_verb_runs():
    app = VoiceApp(CONNECT.format(attrs=""))
    result = await _call(app)
    assert result.actions == 0 and result.redirects == 1 and result.ended_by == "hangup"
    assert ("POST", "/after") in app.hits


def _query(call_sid: str) -> str:
    """The standard parameters Twilio adds to a GET action, in the simulator's order."""
    from urllib.parse import urlencode

    call = SimulatedCall("http://x")
    call.result.call_sid = call_sid
    return urlencode(call.webhook_params("in-progress"))


# -- Stream URLs Twilio refuses ------------------------------------------------------------


def test_check_stream_url_refuses_what_twilio_refuses():
    check_stream_url("wss://voice.example.com/media")
    check_stream_url("ws://127.0.0.1:8080/media")  # a local dev server (Twilio can't reach it anyway)
    check_stream_url("ws://voice.example.com/media", allow_ws=True)
    for url, allow_ws, why in [
        ("ws://voice.example.com/media", None, "wss"),
        ("ws://127.0.0.1:8080/media", False, "wss"),
        ("wss://voice.example.com/media?token=abc", None, "query string"),
        ("ws://127.0.0.1:8080/media?x=1", True, "query string"),
        ("https://voice.example.com/media", None, "not a WebSocket"),
    ]:
        with pytest.raises(StreamUrlRefused, match=why):
            check_stream_url(url, allow_ws)


async def test_strict_simulator_refuses_a_ws_stream_url_and_never_connects(start_server):
    url = await start_server()  # plain HTTP: its TwiML says ws://127.0.0.1:.../media
    with pytest.raises(StreamUrlRefused, match="wss"):
        await SimulatedCall(url, allow_ws=False, hold_s=0.5).run()


@pytest.mark.parametrize(
    "stream_url, why",
    [
        ("ws://voice.example.com/media", "wss"),  # what a server behind a TLS proxy must never emit
        ("ws://{base}/media?token=abc", "query string"),
        ("wss://{base}/media?token=abc", "query string"),
    ],
)
async def test_simulator_refuses_stream_urls_twilio_refuses(stream_url, why):
    app = VoiceApp(f'<Response><Connect><Stream url="{stream_url}"/></Connect></Response>')
    with pytest.raises(StreamUrlRefused, match=why):
        await _call(app)
    assert app.streams == 0


def test_parse_twiml_connect_action_and_methods():
    twiml = (
        '<Response><Connect action="https://a/next" method="get"><Stream url="wss://a/m"/></Connect>'
        "<Say>never</Say><Hangup/></Response>"
    )
    assert parse_twiml(twiml) == [
        ("stream", "wss://a/m", {}),
        ("action", "https://a/next", {"method": "GET"}),
    ]
    assert parse_twiml("<Response><Redirect>https://a/r</Redirect></Response>") == [
        ("redirect", "https://a/r", {"method": "POST"})
    ]
    with pytest.raises(ValueError, match="GET or POST"):
        parse_twiml('<Response><Redirect method="PUT">https://a/r</Redirect></Response>')


# -- A whole call over TLS -----------------------------------------------------------------


@pytest.fixture
def tls(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server context, client context trusting it): a self-signed certificate for
    127.0.0.1 made now with the openssl command."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    return server, ssl.create_default_context(cafile=str(cert))


@pytest.mark.slow
async def test_a_call_over_https_and_wss_end_to_end(tls):
    server_ctx, client_ctx = tls
    app = create_app(Settings(host="127.0.0.1", port=0, twilio_auth_token=TOKEN, check_messages=True))
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ctx)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        call = SimulatedCall(
            f"https://127.0.0.1:{port}",
            audio=[speech_8k("Hello there.")],
            auth_token=TOKEN,
            allow_ws=False,
            ssl_context=client_ctx,
            polite=True,
            hold_s=0.5,
        )
        result = await asyncio.wait_for(call.run(), 60)
    finally:
        await runner.cleanup()
    assert result.streams and result.stream_ends == ["caller"] and result.close_code == 1000
    assert f'url="wss://127.0.0.1:{port}/media"' in result.twiml  # https webhook -> a wss:// stream
    assert "greeting_audio" in result.timeline_events() and "transcript.final" in result.timeline_events()
    assert result.media_sizes  # the agent's audio came back over wss
