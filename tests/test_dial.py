"""Outbound calls: ``POST /calls`` and ``callbridge dial`` against a real server, Twilio's
REST API faked as strictly as Twilio documents it, and the simulator playing Twilio's side
of the call (the webhook with ``Direction=outbound-api``, the stream, AMD and status
callbacks, all signed)."""

from __future__ import annotations

import asyncio
import json
import string
import time
from urllib.parse import parse_qs, urlsplit

import aiohttp
import numpy as np
import orjson
import pytest
from aiohttp import web

from callbridge.agents.signing import verify
from callbridge.cli import main
from callbridge.outbound import DialError, DialRequest, parse_dial, stream_parameters, webhook_query
from callbridge.sim.callee import Callee
from callbridge.testing.fake_twilio import ACCOUNT, TOKEN, FakeTwilioApi

from .conftest import events, speech_8k, until
from .remote_fakes import serve

NUMBER = "+15550001111"  # the fake account's number
CALLEE = "+15557654321"
OPERATOR = "operator-token-for-tests"
SECRET = "events-secret"
GOOD = aiohttp.BasicAuth(ACCOUNT, TOKEN)


def _settings(api_host: str, **more: object) -> dict[str, object]:
    return {
        "twilio_auth_token": TOKEN,
        "twilio_account_sid": ACCOUNT,
        "twilio_api_url": f"http://{api_host}",
        "console_token": OPERATOR,
        **more,
    }


async def _dial(url: str, body: object, token: str | None = OPERATOR, **kwargs) -> tuple[int, dict | str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{url}/calls", json=body, headers=headers, **kwargs) as resp,
    ):
        text = await resp.text()
        try:
            return resp.status, json.loads(text)
        except ValueError:
            return resp.status, text


def test_parse_dial_checks_every_field():
    agents = ("embedded", "echo")
    ok = parse_dial(b'{"to": "+15557654321"}', NUMBER, agents)
    assert ok == DialRequest("+15557654321", NUMBER)
    full = parse_dial(
        json.dumps(
            {"to": CALLEE, "from": "+15550002222", "agent": "echo", "greeting": " Hi. ", "metadata": {"a": 1}}
        ).encode(),
        "",
        agents,
    )
    assert (full.from_, full.agent, full.greeting, full.metadata) == ("+15550002222", "echo", "Hi.", {"a": 1})
    for raw, why in [
        (b"not json", "not JSON"),
        (b"[1]", "JSON object"),
        (b'{"to": "5551234"}', "E.164"),
        (b'{"to": "+1 555 123 4567"}', "E.164"),
        (b'{"to": 15557654321}', "required"),
        (b'{"to": "+15557654321", "from": "+0123"}', "from"),
        (b'{"to": "+15557654321", "agent": "vapi2"}', "agent must be one of"),
        (b'{"to": "+15557654321", "greeting": "' + b"x" * 301 + b'"}', "greeting"),
        (b'{"to": "+15557654321", "metadata": [1]}', "metadata must be"),
        (b'{"to": "+15557654321", "metadata": {"k": "' + b"x" * 600 + b'"}}', "metadata larger"),
        (b'{"to": "+15557654321", "url": "https://evil.example"}', "unknown field"),
        (b'{"to": "+15557654321", "x": "' + b"x" * 9000 + b'"}', "larger than"),
    ]:
        with pytest.raises(DialError, match=why):
            parse_dial(raw, NUMBER, agents)
    with pytest.raises(DialError, match="TWILIO_NUMBER"):
        parse_dial(b'{"to": "+15557654321"}', "", agents)
    query = parse_qs(webhook_query(full)[1:])
    assert query["outbound"] == ["1"] and query["upstream"] == ["echo"]
    assert set(query["call"][0]) <= set(string.ascii_letters + string.digits + "-_")  # nothing to re-encode
    assert stream_parameters({k: v[0] for k, v in query.items()}) == {
        "direction": "outbound",
        "greeting": "Hi.",
        "metadata": '{"a":1}',
    }
    assert stream_parameters({}) == {"direction": "outbound"}
    for bad in ("!!", "x" * 5000, "WzFd", "eyJncmVldGluZyI6IDF9"):  # not base64, too long, a list, a number
        with pytest.raises(DialError):
            stream_parameters({"call": bad})


async def test_fake_refuses_call_creations_twilio_refuses():
    api = FakeTwilioApi()
    path = f"/2010-04-01/Accounts/{ACCOUNT}/Calls.json"
    good = {"To": CALLEE, "From": NUMBER, "Url": "https://bridge.example/voice/inbound"}
    async with serve(api.app()) as host, aiohttp.ClientSession(f"http://{host}") as http:

        async def create(form, auth: aiohttp.BasicAuth | None = GOOD) -> tuple[int, dict]:
            async with http.post(path, data=form, auth=auth) as resp:
                return resp.status, await resp.json()

        assert (await create(good, auth=None))[0] == 401
        cases = [
            ({"From": NUMBER, "Url": good["Url"]}, 21201),
            ({"To": CALLEE, "Url": good["Url"]}, 21213),
            ({**good, "To": "5557654321"}, 21211),
            ({**good, "From": "+1555-000"}, 21212),
            ({**good, "From": "+15559999999"}, 21210),  # not a number of the account
            ({"To": CALLEE, "From": NUMBER}, 21205),
            ({**good, "Url": "bridge.example/voice"}, 21205),
            ({**good, "Method": "PUT"}, 21200),
            ({**good, "StatusCallback": "nope"}, 21609),
            ({**good, "StatusCallbackEvent": "picked-up"}, 21626),
            ({**good, "MachineDetection": "true"}, 21234),
            ({**good, "MachineDetection": "Enable", "AsyncAmd": "yes"}, 21234),
            ({**good, "AsyncAmdStatusCallbackMethod": "GET"}, 21609),
        ]
        for form, code in cases:
            status, body = await create(form)
            assert (status, body["code"]) == (400, code), form
            assert body["more_info"].endswith(str(code)) and body["status"] == 400
        status, body = await create({**good, "MachineDetection": "DetectMessageEnd", "AsyncAmd": "true"})
    assert status == 201
    assert body["sid"].startswith("CA") and len(body["sid"]) == 34 and body["status"] == "queued"
    assert api.calls[body["sid"]] == "queued"


async def test_create_call_sends_what_twilio_documents():
    api = FakeTwilioApi()
    from callbridge.gateway.twilio_rest import Dial, TwilioError, TwilioRest

    async with serve(api.app()) as host:
        rest = TwilioRest(ACCOUNT, TOKEN, f"http://{host}")
        try:
            dial = Dial(
                CALLEE,
                NUMBER,
                "https://b.example/voice/inbound?outbound=1",
                "https://b.example/s",
                "https://b.example/a",
            )
            sid, status = await rest.create_call(dial)
            with pytest.raises(TwilioError, match="400") as refused:
                await rest.create_call(
                    Dial(CALLEE, "+15559999999", dial.url, dial.status_callback, dial.amd_callback)
                )
            assert refused.value.status == 400
            api.fail_with = 500
            with pytest.raises(TwilioError, match="500"):
                await rest.create_call(dial)
        finally:
            await rest.close()
    assert status == "queued"
    form = api.created[sid]
    assert form["To"] == CALLEE and form["From"] == NUMBER and form["Method"] == "POST"
    assert form["Url"] == "https://b.example/voice/inbound?outbound=1"
    assert form["StatusCallback"] == "https://b.example/s" and form["StatusCallbackMethod"] == "POST"
    assert form["StatusCallbackEvent"] == "initiated ringing answered completed"
    assert form["MachineDetection"] == "DetectMessageEnd" and form["AsyncAmd"] == "true"
    assert form["AsyncAmdStatusCallback"] == "https://b.example/a"
    creates = [r for r in api.requests if r[1].endswith("/Calls.json")]
    assert len(creates) == 3  # a 5xx is not retried: a retry could place the call twice


async def test_dial_refuses_bad_requests_and_limits(start_server):
    api = FakeTwilioApi()
    async with serve(api.app()) as host:
        url = await start_server(**_settings(host, max_calls=2, dial_rate=1000))
        assert (await _dial(url, {"to": CALLEE, "from": NUMBER}, token=None))[0] == 401
        assert (await _dial(url, {"to": CALLEE, "from": NUMBER}, token="wrong"))[0] == 401
        status, body = await _dial(url, {"to": "555-1234", "from": NUMBER})
        assert status == 400 and "E.164" in body["error"]
        status, body = await _dial(url, {"to": CALLEE})  # no TWILIO_NUMBER to default to
        assert status == 400 and "TWILIO_NUMBER" in body["error"]
        assert (await _dial(url, {"to": CALLEE, "from": NUMBER, "agent": "nope"}))[0] == 400
        assert (await _dial(url, {"to": CALLEE, "from": NUMBER, "greeting": "x" * 9000}))[0] == 413
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{url}/calls", data="to=+15557654321", headers={"Authorization": f"Bearer {OPERATOR}"}
            ) as resp,
        ):
            assert resp.status == 415  # a form, as a cross-site page could post
        status, body = await _dial(url, {"to": CALLEE, "from": "+15559999999"})
        assert status == 502 and "21210" not in body["error"] and "400" in body["error"]  # Twilio's refusal
        placed = [await _dial(url, {"to": CALLEE, "from": NUMBER}) for _ in range(2)]
        assert [p[0] for p in placed] == [201, 201]
        assert all(p[1]["callSid"] in api.calls for p in placed)
        status, body = await _dial(url, {"to": CALLEE, "from": NUMBER})
        assert status == 503 and "MAX_CALLS" in body["error"]  # two placed, not answered yet
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{url}/metrics", headers={"Authorization": f"Bearer {OPERATOR}"}) as resp,
        ):
            metrics = await resp.text()
        assert 'callbridge_outbound_calls_total{outcome="placed"} 2.0' in metrics
        assert 'callbridge_outbound_calls_total{outcome="refused_busy"} 1.0' in metrics
        rated = await start_server(**_settings(host, dial_rate=0.01, dial_burst=1))
        assert (await _dial(rated, {"to": CALLEE, "from": NUMBER}))[0] == 201
        status, body = await _dial(rated, {"to": CALLEE, "from": NUMBER})
        assert status == 429 and "DIAL_RATE" in body["error"]
    bare = await start_server(console_token=OPERATOR)
    status, body = await _dial(bare, {"to": CALLEE, "from": NUMBER})
    assert status == 503 and "TWILIO_ACCOUNT_SID" in body["error"]


async def test_amd_and_status_callbacks_are_signed(start_server):
    api = FakeTwilioApi()
    async with serve(api.app()) as host, aiohttp.ClientSession() as http:
        url = await start_server(**_settings(host))
        form = {"AccountSid": ACCOUNT, "CallSid": "CA" + "1" * 32, "AnsweredBy": "human"}
        for path in ("/voice/amd", "/voice/status"):
            async with http.post(url + path, data=form, headers={"X-Twilio-Signature": "forged"}) as resp:
                assert resp.status == 403
        from callbridge.gateway.security import SignatureChecker

        bad = {**form, "AnsweredBy": "robot"}
        signature = SignatureChecker.sign(TOKEN, url + "/voice/amd", bad)
        async with http.post(url + "/voice/amd", data=bad, headers={"X-Twilio-Signature": signature}) as resp:
            assert resp.status == 400
        done = {"AccountSid": ACCOUNT, "CallSid": "CA" + "1" * 32, "CallStatus": "completed"}
        signature = SignatureChecker.sign(TOKEN, url + "/voice/status", done)
        async with http.post(
            url + "/voice/status", data=done, headers={"X-Twilio-Signature": signature}
        ) as resp:
            assert resp.status == 200
        odd = {**done, "CallStatus": "exploded"}
        signature = SignatureChecker.sign(TOKEN, url + "/voice/status", odd)
        async with http.post(
            url + "/voice/status", data=odd, headers={"X-Twilio-Signature": signature}
        ) as resp:
            assert resp.status == 400


def _event_receiver(received: list[dict]) -> web.Application:
    async def on_event(request: web.Request) -> web.Response:
        body = await request.read()
        stamp, signature = (
            request.headers.get("X-Callbridge-Timestamp"),
            request.headers.get("X-Callbridge-Signature"),
        )
        if not verify(SECRET, stamp, body, signature, time.time()):
            return web.Response(status=401)
        received.append(orjson.loads(body))
        return web.Response(status=204)

    app = web.Application()
    app.add_routes([web.post("/events", on_event)])
    return app


@pytest.mark.slow
async def test_outbound_call_answered_by_a_human(start_server):
    """The callee says "Hello?" first; the agent greets once they have (not over them),
    with the call's own greeting; AMD says human: the agent stays on."""
    api, received = FakeTwilioApi(), []
    api.callee = Callee(
        audio=[speech_8k("Hello?")],
        answered_by="human",
        amd_after_s=2.5,
        gap_s=0.6,
        hold_s=5,
        console_token=OPERATOR,
    )
    async with serve(api.app()) as host, serve(_event_receiver(received)) as events_host:
        url = await start_server(
            **_settings(host, events_url=f"http://{events_host}/events", events_secret=SECRET)
        )
        greeting = "Hi, this is the dental office calling about your appointment."
        status, body = await _dial(
            url, {"to": CALLEE, "from": NUMBER, "greeting": greeting, "metadata": {"id": 7}}
        )
        assert status == 201
        played = await asyncio.wait_for(api.played[body["callSid"]], 40)
        await until(lambda: any(e["event"] == "call.answered_by" for e in received), 5)
    result = played.call
    assert result.call_sid == body["callSid"]
    started = events(result, "started")[0]
    assert started["parameters"]["direction"] == "outbound"
    assert started["parameters"]["metadata"] == '{"id":7}'
    names = result.timeline_events()
    assert (
        names.index("greeting.waiting") < names.index("speech_ended") < names.index("greeting.heard_callee")
    )
    spoke = events(result, "speech_ended")[0]["t_ms"]
    greeted = events(result, "greeting_audio")[0]["t_ms"]
    assert greeted > spoke  # the agent waited for "Hello?"
    assert events(result, "greeting_synthesised")[0]["text"] == greeting
    assert events(result, "call.answered_by")[0]["answered_by"] == "human"
    assert "voicemail.left" not in names
    assert ("amd", "human", 200) in played.callbacks
    assert [c for c in played.callbacks if c[0] == "status"] == [
        ("status", s, 200) for s in ("initiated", "ringing", "in-progress", "completed")
    ]
    amd_events = [e for e in received if e["event"] == "call.answered_by"]
    assert amd_events[0]["callSid"] == result.call_sid and amd_events[0]["data"]["answered_by"] == "human"


@pytest.mark.slow
async def test_outbound_call_answered_by_a_machine(start_server):
    """A machine's greeting and beep; AMD (DetectMessageEnd) reports it at the beep: the
    voicemail message plays, then the call is completed through the REST API."""
    api = FakeTwilioApi()
    greeting = speech_8k("You have reached the voicemail of Sam. Please leave a message after the tone.")
    beep = (8000 * np.sin(2 * np.pi * 1000 * np.arange(4000) / 8000)).astype(np.int16)  # 0.5 s at 1 kHz
    machine = np.concatenate([greeting, beep]).astype(np.int16)
    api.callee = Callee(
        audio=[machine],
        answered_by="machine_end_beep",
        amd_after_s=0.3 + len(machine) / 8000,
        hold_s=15,
        console_token=OPERATOR,
    )
    message = "This is the dental office. Please call us back about your appointment."
    async with serve(api.app()) as host:
        url = await start_server(**_settings(host, voicemail_message=message))
        status, body = await _dial(url, {"to": CALLEE, "from": NUMBER})
        assert status == 201
        sid = body["callSid"]
        played = await asyncio.wait_for(api.played[sid], 60)
        await until(lambda: api.calls[sid] == "completed", 5)
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{url}/metrics", headers={"Authorization": f"Bearer {OPERATOR}"}) as resp,
        ):
            metrics = await resp.text()
    result = played.call
    names = result.timeline_events()
    assert events(result, "call.answered_by")[0]["answered_by"] == "machine_end_beep"
    assert names.index("call.answered_by") < names.index("voicemail.left")
    assert events(result, "voicemail_synthesised")[0]["text"] == message
    voicemail_at = events(result, "voicemail_audio")[0]["t_ms"] / 1000
    assert voicemail_at >= len(machine) / 8000  # after the beep
    assert voicemail_at * 1000 - events(result, "call.answered_by")[0]["t_ms"] < 3000  # promptly
    assert result.record["stop_reason"] == "the agent ended the call"
    assert result.ended_by == "hangup"  # the <Connect> action after the bridge hung up
    assert api.calls[sid] == "completed"  # completed through the REST API
    assert 'callbridge_answered_by_total{answered_by="machine_end_beep"} 1.0' in metrics


@pytest.mark.slow
async def test_cli_dial_against_a_real_server(start_server, capsys):
    api = FakeTwilioApi()
    async with serve(api.app()) as host:
        url = await start_server(**_settings(host))
        argv = [
            "dial",
            CALLEE,
            "--from",
            NUMBER,
            "--url",
            url,
            "--console-token",
            OPERATOR,
            "--metadata",
            '{"k": "v"}',
        ]
        assert await asyncio.to_thread(main, argv) == 0
        answer = json.loads(capsys.readouterr().out)
        assert answer["callSid"] in api.created and answer["to"] == CALLEE
        query = parse_qs(urlsplit(api.created[answer["callSid"]]["Url"]).query)
        assert stream_parameters({k: v[0] for k, v in query.items()})["metadata"] == '{"k":"v"}'
        assert (
            await asyncio.to_thread(main, ["dial", "12345", "--url", url, "--console-token", OPERATOR]) == 1
        )
        assert "E.164" in capsys.readouterr().err
        assert await asyncio.to_thread(main, ["dial", CALLEE, "--url", url, "--metadata", "{"]) == 2


@pytest.mark.slow
async def test_outbound_callee_who_says_nothing_is_greeted_after_the_wait(start_server):
    """No "Hello?": the greeting comes after OUTBOUND_GREETING_WAIT_S; a fax ends the call."""
    api = FakeTwilioApi()
    api.callee = Callee(audio=[], answered_by="fax", amd_after_s=3.0, hold_s=8, console_token=OPERATOR)
    async with serve(api.app()) as host:
        url = await start_server(**_settings(host, outbound_greeting_wait_s=1.0))
        status, body = await _dial(url, {"to": CALLEE, "from": NUMBER})
        assert status == 201
        sid = body["callSid"]
        played = await asyncio.wait_for(api.played[sid], 40)
        await until(lambda: api.calls[sid] == "completed", 5)
    result = played.call
    names = result.timeline_events()
    assert "greeting.wait_over" in names and "greeting.heard_callee" not in names
    started = events(result, "started")[0]["t_ms"]
    assert events(result, "greeting_audio")[0]["t_ms"] - started >= 1000
    assert events(result, "call_ending")[0]["reason"] == "a fax machine answered"
    assert api.calls[sid] == "completed" and result.ended_by == "hangup"


@pytest.mark.slow
async def test_remote_back_ends_let_the_callee_speak_first(start_server):
    """On an outbound call Vapi's call waits for the user, and Realtime gets no opening
    greeting; an inbound call of the same server still gets its greeting."""
    from callbridge.sim.caller import SimulatedCall

    from .fake_vapi import FakeVapi
    from .remote_fakes import FakeRealtime
    from .test_upstream_realtime import greetings, realtime_server
    from .test_upstream_vapi import vapi_server

    def outbound(url: str) -> SimulatedCall:
        return SimulatedCall(
            url, hold_s=1.0, direction="outbound-api", webhook_path="/voice/inbound?outbound=1"
        )

    vapi = FakeVapi()
    async with vapi.running() as base:
        url = await vapi_server(start_server, vapi, base)
        await outbound(url).run()
    assert vapi.created[0]["assistantOverrides"] == {"firstMessageMode": "assistant-waits-for-user"}
    realtime = FakeRealtime()
    async with realtime.running():
        url = await realtime_server(start_server, realtime)
        await outbound(url).run()
        await SimulatedCall(url, hold_s=1.0).run()
    first, second = realtime.sessions
    assert not greetings(first) and greetings(second)


def test_voicemail_text_falls_back_from_setting_to_call_to_agent():
    from callbridge.agents.base import create_agent
    from callbridge.config import Settings
    from callbridge.upstreams.base import Conversation
    from callbridge.upstreams.voicemail import voicemail_text

    desk = Conversation(agent=create_agent("desk", call_sid="CA" + "0" * 32))
    own = {"greeting": "Hi, it's the office."}
    assert voicemail_text(Settings(voicemail_message="Call us back."), desk, own) == "Call us back."
    assert voicemail_text(Settings(), desk, own) == "Hi, it's the office."
    assert voicemail_text(Settings(), desk, {}) == (desk.agent.greeting() or Settings().speech.greeting)
    assert (
        voicemail_text(Settings(greeting="Hello from us."), Conversation(), {"greeting": " "})
        == "Hello from us."
    )


@pytest.mark.slow
async def test_machine_on_a_remote_back_end_gets_the_voicemail_too(start_server):
    """OpenAI Realtime has the call (mu-law passed through); a machine answers: the session
    is ended and the bridge itself says the message, then completes the call."""
    from .remote_fakes import FakeRealtime
    from .test_upstream_realtime import realtime_server

    api, fake = FakeTwilioApi(), FakeRealtime()
    api.callee = Callee(
        audio=[], answered_by="machine_end_silence", amd_after_s=1.5, hold_s=12, console_token=OPERATOR
    )
    async with serve(api.app()) as host, fake.running():
        url = await realtime_server(
            start_server, fake, **_settings(host, voicemail_message="Please call us back.")
        )
        status, body = await _dial(url, {"to": CALLEE, "from": NUMBER})
        assert status == 201
        played = await asyncio.wait_for(api.played[body["callSid"]], 40)
        await until(lambda: api.calls[body["callSid"]] == "completed", 5)
        (session,) = fake.sessions
        await asyncio.wait_for(session.closed.wait(), 5)  # the Realtime session ended
    result = played.call
    assert events(result, "voicemail_synthesised")[0]["text"] == "Please call us back."
    assert result.record["stop_reason"] == "the agent ended the call" and result.ended_by == "hangup"
    assert api.calls[body["callSid"]] == "completed"


@pytest.mark.slow
async def test_upstream_restart_while_leaving_the_voicemail_leaves_it_again(start_server):
    api = FakeTwilioApi()
    api.callee = Callee(
        audio=[], answered_by="machine_end_beep", amd_after_s=1.0, hold_s=20, console_token=OPERATOR
    )
    message = "This is the dental office. Please call us back about your appointment on Monday."
    async with serve(api.app()) as host:
        url = await start_server(**_settings(host, voicemail_message=message, fault_injection=True))
        status, body = await _dial(url, {"to": CALLEE, "from": NUMBER})
        assert status == 201
        sid, auth = body["callSid"], {"Authorization": f"Bearer {OPERATOR}"}
        async with aiohttp.ClientSession(headers=auth) as http:
            for _ in range(200):  # until the message is being said
                async with http.get(f"{url}/calls/{sid}") as resp:
                    record = await resp.json() if resp.status == 200 else {}
                if any(e["event"] == "voicemail_audio" for e in record.get("timeline", [])):
                    break
                await asyncio.sleep(0.05)
            async with http.post(f"{url}/calls/{sid}/fault?child=upstream") as resp:
                assert resp.status == 200
        played = await asyncio.wait_for(api.played[sid], 40)
    result = played.call
    assert len(events(result, "child_restarted")) == 1
    assert len(events(result, "voicemail.left")) == 2  # said again by the restarted Upstream
    assert result.record["stop_reason"] == "the agent ended the call" and result.ended_by == "hangup"
