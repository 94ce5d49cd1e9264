"""Twilio's REST API, against a local server implementing the two documented endpoints:
completing a call when the agent hangs up, and pointing a number at the gateway."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from callbridge.config import ConfigError, Settings
from callbridge.gateway.twilio_rest import TwilioError, TwilioRest
from callbridge.sim.caller import SimulatedCall
from callbridge.testing.fake_twilio import ACCOUNT, TOKEN, FakeTwilioApi

from .conftest import speech_8k
from .remote_fakes import FakeRealtime, serve


async def test_fake_api_refuses_what_twilio_refuses():
    api = FakeTwilioApi()
    api.calls["CA" + "1" * 32] = "in-progress"
    calls = f"/2010-04-01/Accounts/{ACCOUNT}/Calls"
    good = aiohttp.BasicAuth(ACCOUNT, TOKEN)
    async with serve(api.app()) as host, aiohttp.ClientSession(f"http://{host}") as http:

        async def status(method: str, path: str, **kwargs) -> int:
            async with http.request(method, path, **kwargs) as resp:
                return resp.status

        known = f"{calls}/CA{'1' * 32}.json"
        assert await status("POST", known, data={"Status": "completed"}) == 401  # no credentials
        assert (
            await status("POST", known, data={"Status": "completed"}, auth=aiohttp.BasicAuth(ACCOUNT, "x"))
            == 401
        )
        other = "AC" + "9" * 32  # right credentials, another account's path
        assert (
            await status("POST", known.replace(ACCOUNT, other), data={"Status": "completed"}, auth=good)
            == 401
        )
        assert await status("POST", known, json={"Status": "completed"}, auth=good) == 400  # not a form
        assert await status("POST", known, data={"Status": "hungup"}, auth=good) == 400
        assert (
            await status("POST", f"{calls}/CA{'2' * 32}.json", data={"Status": "completed"}, auth=good) == 404
        )
        numbers = f"/2010-04-01/Accounts/{ACCOUNT}/IncomingPhoneNumbers"
        assert (
            await status("POST", f"{numbers}/PN{'b' * 32}.json", data={"VoiceUrl": "https://x/"}, auth=good)
            == 404
        )
        pn = f"{numbers}/PN{'a' * 32}.json"
        assert (
            await status("POST", pn, data={"VoiceUrl": "https://x/", "VoiceMethod": "PUT"}, auth=good) == 400
        )
        assert await status("POST", pn, data={"VoiceUrl": "x.example.com"}, auth=good) == 400
        assert await status("POST", known, data={"Status": "completed"}, auth=good) == 200
    assert api.calls["CA" + "1" * 32] == "completed"


async def test_client_completes_and_points_and_reports_errors():
    api = FakeTwilioApi()
    for digit in "123":
        api.calls["CA" + digit * 32] = "in-progress"
    async with serve(api.app()) as host:
        rest = TwilioRest(ACCOUNT, TOKEN, f"http://{host}")
        try:
            assert await rest.complete("CA" + "1" * 32) == "completed"
            assert (
                await rest.point_number("+15550001111", "https://v.example.com/voice/inbound")
                == "PN" + "a" * 32
            )
            with pytest.raises(TwilioError, match="404"):  # a call Twilio does not know: not retried
                await rest.complete("CA" + "4" * 32)
            with pytest.raises(TwilioError, match="is not a number of account"):
                await rest.point_number("+15550009999", "https://v.example.com/voice/inbound")
            api.fail_with = 500
            with pytest.raises(TwilioError, match="500"):
                await rest.complete("CA" + "2" * 32)
            api.fail_with = None
        finally:
            await rest.close()
        wrong = TwilioRest(ACCOUNT, "wrong", f"http://{host}")
        with pytest.raises(TwilioError, match="401"):
            await wrong.complete("CA" + "3" * 32)
        await wrong.close()
    methods = [(m, p) for m, p, _, _ in api.requests]
    assert methods[0] == ("POST", f"/2010-04-01/Accounts/{ACCOUNT}/Calls/CA{'1' * 32}.json")
    assert api.requests[0][2] == {"Status": "completed"} and api.requests[0][3] == f"{ACCOUNT}:{TOKEN}"
    assert methods[1] == ("GET", f"/2010-04-01/Accounts/{ACCOUNT}/IncomingPhoneNumbers.json")
    assert api.requests[1][2]["PhoneNumber"] == "+15550001111"
    assert api.requests[2][2] == {"VoiceUrl": "https://v.example.com/voice/inbound", "VoiceMethod": "POST"}
    assert api.voice_urls["PN" + "a" * 32] == "https://v.example.com/voice/inbound"
    assert api.agents == {"twilio-python"}  # the requests are the twilio library's
    assert len([m for m in methods if m[1].endswith(f"CA{'4' * 32}.json")]) == 1  # a 4xx is not retried
    assert len([m for m in methods if m[1].endswith(f"CA{'2' * 32}.json")]) == 2  # a 5xx is retried once
    assert len([m for m in methods if m[1].endswith(f"CA{'3' * 32}.json")]) == 1


def test_settings_checked():
    with pytest.raises(ConfigError, match="TWILIO_ACCOUNT_SID"):
        Settings(twilio_account_sid="nope")
    with pytest.raises(ConfigError, match="TWILIO_NUMBER needs"):
        Settings(twilio_number="+15550001111", twilio_account_sid=ACCOUNT)


@pytest.mark.slow
async def test_agent_hang_up_completes_the_call_through_the_api(start_server):
    api, fake = FakeTwilioApi(), FakeRealtime()
    fake.end_call_after_replies = 2
    async with serve(api.app()) as host, fake.running():
        url = await start_server(
            upstream="openai-realtime",
            openai_realtime_url=fake.url,
            openai_api_key="sk-test",
            twilio_auth_token=TOKEN,
            twilio_account_sid=ACCOUNT,
            twilio_api_url=f"http://{host}",
        )
        call = SimulatedCall(url, audio=[speech_8k("Goodbye.")], polite=True, hold_s=6.0, auth_token=TOKEN)
        api.calls[call.call_sid] = "in-progress"
        result = await call.run()
        for _ in range(100):
            if api.requests:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)
        record = await _record(url, call)
    assert "call_ending" in result.timeline_events()
    ((method, path, form, _),) = api.requests
    assert (method, path, form) == (
        "POST",
        f"/2010-04-01/Accounts/{ACCOUNT}/Calls/{call.call_sid}.json",
        {"Status": "completed"},
    )
    assert [e.get("status") for e in record["timeline"] if e["event"] == "twilio.completed"] == ["completed"]
    assert api.calls[call.call_sid] == "completed"


async def test_number_pointed_at_public_url_on_start(start_server):
    api = FakeTwilioApi()
    async with serve(api.app()) as host:
        await start_server(
            twilio_auth_token=TOKEN,
            twilio_account_sid=ACCOUNT,
            twilio_api_url=f"http://{host}",
            twilio_number="+15550001111",
            public_url="https://voice.example.com",
        )
    assert api.requests[0][2]["PhoneNumber"] == "+15550001111"
    assert api.requests[1][2] == {
        "VoiceUrl": "https://voice.example.com/voice/inbound",
        "VoiceMethod": "POST",
    }
    assert api.voice_urls == {"PN" + "a" * 32: "https://voice.example.com/voice/inbound"}


async def _record(url: str, call: SimulatedCall):
    import aiohttp

    async with aiohttp.ClientSession() as http:
        return await call.fetch_record(http)
