"""Twilio's REST API, against a local server implementing the two documented endpoints:
completing a call when the agent hangs up, and pointing a number at the gateway."""

from __future__ import annotations

import asyncio
import base64

import pytest
from aiohttp import web

from callbridge.config import ConfigError, Settings
from callbridge.gateway.twilio_rest import TwilioError, TwilioRest
from callbridge.sim.caller import SimulatedCall

from .conftest import speech_8k
from .remote_fakes import FakeRealtime, serve

ACCOUNT = "AC" + "0" * 32  # the simulator's AccountSid
TOKEN = "twilio-token"


class FakeTwilioApi:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str], str]] = []
        self.fail_with: int | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/2010-04-01/Accounts/{account}/{rest:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.Response:
        form = dict(await request.post())
        user, _, password = base64.b64decode(request.headers.get("Authorization", "Basic ")[6:]).decode().partition(":")
        auth = f"{user}:{password}"
        self.requests.append((request.method, request.path, {**form, **request.query}, auth))
        if auth != f"{ACCOUNT}:{TOKEN}":
            return web.json_response({"code": 20003, "message": "Authenticate"}, status=401)
        if self.fail_with:
            return web.json_response({"message": "boom"}, status=self.fail_with)
        rest = request.match_info["rest"]
        if rest == "IncomingPhoneNumbers.json":
            return web.json_response({"incoming_phone_numbers": [{"sid": "PN123", "phone_number": form.get("PhoneNumber")}]})
        if rest.startswith("IncomingPhoneNumbers/"):
            return web.json_response({"sid": "PN123", "voice_url": form.get("VoiceUrl")})
        return web.json_response({"sid": rest.split("/")[-1][:-5], "status": "completed"})


async def test_client_completes_and_points_and_reports_errors():
    api = FakeTwilioApi()
    async with serve(api.app()) as host:
        rest = TwilioRest(ACCOUNT, TOKEN, f"http://{host}")
        assert await rest.complete("CA" + "1" * 32) == "completed"
        assert await rest.point_number("+15550001111", "https://v.example.com/voice/inbound") == "PN123"
        api.fail_with = 500
        with pytest.raises(TwilioError, match="500"):
            await rest.complete("CA" + "2" * 32)
        with pytest.raises(TwilioError, match="401"):
            await TwilioRest(ACCOUNT, "wrong", f"http://{host}").complete("CA" + "3" * 32)
    methods = [(m, p) for m, p, _, _ in api.requests]
    assert methods[0] == ("POST", f"/2010-04-01/Accounts/{ACCOUNT}/Calls/CA{'1' * 32}.json")
    assert api.requests[0][2] == {"Status": "completed"}
    assert methods[1] == ("GET", f"/2010-04-01/Accounts/{ACCOUNT}/IncomingPhoneNumbers.json")
    assert api.requests[2][2] == {"VoiceUrl": "https://v.example.com/voice/inbound", "VoiceMethod": "POST"}
    assert len([m for m in methods if m[1].endswith(f"CA{'2' * 32}.json")]) == 2  # a 5xx is retried once
    assert len([m for m in methods if m[1].endswith(f"CA{'3' * 32}.json")]) == 1  # a 4xx is not


def test_settings_checked():
    with pytest.raises(ConfigError, match="TWILIO_ACCOUNT_SID"):
        Settings(twilio_account_sid="nope")
    with pytest.raises(ConfigError, match="TWILIO_NUMBER needs"):
        Settings(twilio_number="+15550001111", twilio_account_sid=ACCOUNT)


async def test_agent_hang_up_completes_the_call_through_the_api(start_server):
    api, fake = FakeTwilioApi(), FakeRealtime()
    fake.end_call_after_replies = 2
    async with serve(api.app()) as host, fake.running():
        url = await start_server(
            upstream="openai-realtime", openai_realtime_url=fake.url, openai_api_key="sk-test", twilio_auth_token=TOKEN,
            twilio_account_sid=ACCOUNT, twilio_api_url=f"http://{host}",
        )
        call = SimulatedCall(url, audio=[speech_8k("Goodbye.")], polite=True, hold_s=6.0, auth_token=TOKEN)
        result = await call.run()
        for _ in range(100):
            if api.requests:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)
        record = await _record(url, call)
    assert "call_ending" in result.timeline_events()
    ((method, path, form, _),) = api.requests
    assert (method, path, form) == ("POST", f"/2010-04-01/Accounts/{ACCOUNT}/Calls/{call.call_sid}.json",
                                    {"Status": "completed"})
    assert any(e["event"] == "twilio.completed" for e in record["timeline"])


async def test_number_pointed_at_public_url_on_start(start_server):
    api = FakeTwilioApi()
    async with serve(api.app()) as host:
        await start_server(twilio_auth_token=TOKEN, twilio_account_sid=ACCOUNT, twilio_api_url=f"http://{host}",
                           twilio_number="+15550001111", public_url="https://voice.example.com")
    assert api.requests[0][2] == {"PhoneNumber": "+15550001111"}
    assert api.requests[1][2] == {"VoiceUrl": "https://voice.example.com/voice/inbound", "VoiceMethod": "POST"}


async def _record(url: str, call: SimulatedCall):
    import aiohttp

    async with aiohttp.ClientSession() as http:
        return await call.fetch_record(http)
