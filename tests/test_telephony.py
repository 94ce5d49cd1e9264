"""Telephony actions on live calls (``gateway/telephony.py``): transfers cold and warm,
DTMF, hang-up, and the operator routes that ask for them. Real server, real sockets, the
simulator playing Twilio's side of the call and the REST fake playing Twilio's API (the
fake hands new TwiML to the simulated call, which stops its stream and runs it)."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from callbridge.cli import bundled_turns
from callbridge.gateway import telephony, twiml
from callbridge.sim.caller import CallResult, SimulatedCall
from callbridge.sim.wavio import read_wav
from callbridge.testing.fake_twilio import ACCOUNT, TOKEN, FakeTwilioApi, twiml_problem

from .remote_fakes import serve

OPERATOR = "operator-token-0123456789"
DESK = "+15557654321"
FORM = "application/x-www-form-urlencoded"
NUMBER = "+15550001111"  # the fake account's number, which the simulated caller calls


@asynccontextmanager
async def bridge(start_server, api: FakeTwilioApi, **overrides: Any):
    async with serve(api.app()) as host:
        values = {
            "twilio_auth_token": TOKEN,
            "twilio_account_sid": ACCOUNT,
            "twilio_api_url": f"http://{host}",
            "console_token": OPERATOR,
            "transfer_to": DESK,
            **overrides,
        }
        yield await start_server(**values)


def caller(url: str, api: FakeTwilioApi, **kwargs: Any) -> SimulatedCall:
    options = {"hold_s": 30.0, "max_s": 40.0, "to_number": NUMBER, **kwargs}
    call = SimulatedCall(url, auth_token=TOKEN, console_token=OPERATOR, **options)
    api.attach(call)
    return call


async def operator(
    url: str, call_sid: str, what: str, body: Any = None, token: str = OPERATOR, **headers: str
) -> tuple[int, str]:
    if token:
        headers["Authorization"] = f"Bearer {token}"
    sent: dict[str, Any] = {"data": body} if isinstance(body, str) else {"json": {} if body is None else body}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{url}/calls/{call_sid}/{what}", headers=headers, **sent) as resp,
    ):
        text = await resp.text()
        return resp.status, text


def redirects(api: FakeTwilioApi, call_sid: str) -> list[ET.Element]:
    return [
        ET.fromstring(form["Twiml"])
        for method, path, form, _ in api.requests
        if path.endswith(f"/Calls/{call_sid}.json") and "Twiml" in form
    ]


def timeline(record: dict | None, name: str) -> list[dict]:
    return [e for e in (record or {}).get("timeline", []) if e["event"] == name]


async def started(call: SimulatedCall) -> None:
    await asyncio.wait_for(call.started.wait(), 10)


async def act_on_a_call(
    url: str,
    api: FakeTwilioApi,
    what: str,
    body: Any,
    limit_s: float = 40.0,
    dial_status: str = "",
    **kwargs: Any,
) -> tuple[SimulatedCall, CallResult]:
    """A simulated call; once its stream started, the operator route ``what``; the call's result."""
    call = caller(url, api, **kwargs)
    call.dial_status = dial_status or call.dial_status
    running = asyncio.create_task(call.run())
    await started(call)
    status, text = await operator(url, call.call_sid, what, body)
    assert status == 200, text
    return call, await asyncio.wait_for(running, limit_s)


@pytest.mark.slow
async def test_cold_transfer_dials_the_desk_and_stops_the_stream(start_server):
    api = FakeTwilioApi()
    posted: list[dict[str, Any]] = []

    async def on_event(request: web.Request) -> web.Response:
        posted.append(await request.json())
        return web.Response(status=204)

    receiver = web.Application()
    receiver.add_routes([web.post("/events", on_event)])
    async with (
        serve(receiver) as events,
        bridge(start_server, api, events_url=f"http://{events}/events", events_secret="s" * 32) as url,
    ):
        call, result = await act_on_a_call(url, api, "transfer", {"mode": "cold"})
        for _ in range(100):
            if len([e for e in posted if e["event"] == "call.transferred"]) == 2:
                break
            await asyncio.sleep(0.05)
    [document] = redirects(api, call.call_sid)
    assert twiml_problem(ET.tostring(document, encoding="unicode")) is None
    [dial] = list(document)
    assert dial.tag == "Dial" and dial.get("timeout") == "20"
    assert dial.get("action", "").startswith(f"{url}/voice/transfer?caller={call.call_sid}")
    assert [(n.tag, n.text) for n in dial] == [("Number", DESK)]
    assert result.stream_ends == ["redirected"] and len(result.streams) == 1
    assert result.dialed == [("number", DESK)]
    assert result.ended_by == "hangup"  # the desk answered and hung up: the <Dial action> ends the call
    outcomes = [(e["mode"], e["outcome"]) for e in timeline(result.record, "call.transferred")]
    assert outcomes == [("cold", "dialing"), ("cold", "completed")]
    sent = [(e["callSid"], e["data"]) for e in posted if e["event"] == "call.transferred"]
    assert sent == [(call.call_sid, {"to": DESK, "mode": m, "outcome": o}) for m, o in outcomes]
    assert timeline(result.record, "stopped")[0]["reason"] == f"transferred (cold) to {DESK}"


@pytest.mark.slow
async def test_cold_transfer_to_sip_not_answered_comes_back_to_the_agent(start_server):
    api = FakeTwilioApi()
    async with bridge(start_server, api) as url:
        sip = {"to": "sip:desk@pbx.example.com"}
        _, result = await act_on_a_call(url, api, "transfer", sip, dial_status="no-answer", hold_s=9.0)
    assert result.dialed == [("sip", "sip:desk@pbx.example.com")]
    assert telephony.NOT_ANSWERED in result.heard
    assert result.stream_ends == ["redirected", "caller"] and len(result.streams) == 2
    assert result.record is not None and result.record["resumes"] == 1
    assert [e["outcome"] for e in timeline(result.record, "call.transferred")] == ["dialing", "no-answer"]


@pytest.mark.slow
async def test_warm_transfer_briefs_the_human_then_joins_them(start_server):
    api = FakeTwilioApi()
    summary = "The caller wants to move Tuesday's appointment to Friday."
    async with bridge(start_server, api, transfer_hold_url="https://hold.example.com/music.mp3") as url:
        warm = {"mode": "warm", "to": "+15551112222", "summary": summary}
        call, result = await act_on_a_call(url, api, "transfer", warm)
        await asyncio.sleep(0.2)  # the human's last status callback
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{url}/metrics", headers={"Authorization": f"Bearer {OPERATOR}"}) as resp,
        ):
            metrics = await resp.text()
    room = f"transfer-{call.call_sid}"
    [hold] = redirects(api, call.call_sid)
    conference = hold.find("Dial/Conference")
    assert conference is not None and conference.text == room
    assert conference.get("startConferenceOnEnter") == "false"
    assert conference.get("waitUrl") == "https://hold.example.com/music.mp3"
    [(human, form)] = api.created.items()
    assert (form["To"], form["From"], form["Timeout"]) == ("+15551112222", NUMBER, "20")
    assert form["StatusCallbackEvent"].split() == ["answered", "completed"]
    assert api.heard[human] == [summary]  # the summary first, then the conference
    assert result.joined == ["+15551112222"] and result.dialed == [("conference", room)]
    assert telephony.HOLD_LINE in result.heard
    assert result.stream_ends == ["redirected"] and result.ended_by == "no more verbs"
    assert [status for _, _, status in api.callbacks] == [200, 200]
    outcomes = [e["outcome"] for e in timeline(result.record, "call.transferred")]
    assert outcomes == ["holding", "answered"]
    assert 'callbridge_transfers_total{mode="warm",outcome="answered"} 1.0' in metrics


@pytest.mark.slow
async def test_warm_transfer_not_answered_tells_the_caller_and_the_agent_carries_on(start_server):
    api = FakeTwilioApi()
    api.human = "no-answer"
    turn = read_wav(bundled_turns()[0])
    async with bridge(start_server, api) as url:
        # The caller's request comes 6 s in: after the transfer failed and the call resumed.
        warm = {"mode": "warm", "summary": "Hi."}
        call, result = await act_on_a_call(
            url, api, "transfer", warm, 60.0, audio=[turn], gap_s=6.0, hold_s=3.0
        )
    assert telephony.NOT_ANSWERED in result.heard
    assert result.stream_ends == ["redirected", "caller"] and len(result.streams) == 2
    record = result.record
    assert record is not None and record["resumes"] == 1
    assert [e["outcome"] for e in timeline(record, "call.transferred")] == ["holding", "no-answer"]
    names = [e["event"] for e in record["timeline"]]
    # The conversation went on on the new stream: heard and answered after the resume.
    assert names.index("resumed") < names.index("transcript.final") < names.index("agent.reply")
    [back] = redirects(api, call.call_sid)[1:]
    stream = back.find("Connect/Stream")
    assert stream is not None
    assert {p.get("name"): p.get("value") for p in stream}.get("resume") == "1"


@pytest.mark.slow
async def test_warm_transfer_without_any_callback_gives_up_and_brings_the_caller_back(start_server):
    api = FakeTwilioApi()
    api.human = "silent"
    async with bridge(start_server, api, transfer_ring_s=5) as url:
        warm = {"mode": "warm", "to": "+15551112222"}
        _, result = await act_on_a_call(url, api, "transfer", warm, 60.0, hold_s=25.0)
    [human] = api.created
    assert api.calls[human] == "canceled"  # the bridge stopped it ringing
    assert telephony.NOT_ANSWERED in result.heard and len(result.streams) == 2
    assert [e["outcome"] for e in timeline(result.record, "call.transferred")] == ["holding", "timeout"]


@pytest.mark.slow
async def test_warm_transfer_answered_but_its_callbacks_lost_is_not_undone(start_server):
    api = FakeTwilioApi()
    api.callbacks_lost = True  # e.g. sent to another shard: the bridge asks Twilio instead
    async with bridge(start_server, api, transfer_ring_s=5) as url:
        call, result = await act_on_a_call(url, api, "transfer", {"mode": "warm"})
        async with aiohttp.ClientSession() as http:
            for _ in range(100):
                async with http.get(
                    f"{url}/calls/{call.call_sid}", headers={"Authorization": f"Bearer {OPERATOR}"}
                ) as resp:
                    record = await resp.json()
                if len(timeline(record, "call.transferred")) == 2:
                    break
                await asyncio.sleep(0.25)
    assert result.joined == [DESK] and len(result.streams) == 1  # talked to the human, never brought back
    assert [e["outcome"] for e in timeline(record, "call.transferred")] == ["holding", "answered"]
    assert not [f for _, p, f, _ in api.requests if f.get("Status") == "canceled"]


@pytest.mark.slow
async def test_dtmf_plays_digits_and_resumes_on_a_new_stream(start_server):
    api = FakeTwilioApi()
    turn = read_wav(bundled_turns()[0])
    async with bridge(start_server, api) as url:
        dtmf = {"digits": "1w23#"}
        call, result = await act_on_a_call(url, api, "dtmf", dtmf, 60.0, audio=[turn], gap_s=5.0, hold_s=3.0)
    [document] = redirects(api, call.call_sid)
    assert [el.tag for el in document] == ["Play", "Connect"]
    assert result.digits_played == ["1w23#"]
    assert result.stream_ends == ["redirected", "caller"] and len(result.streams) == 2
    record = result.record
    assert record is not None and record["resumes"] == 1
    assert [e["digits"] for e in timeline(record, "dtmf.sent")] == ["1w23#"]
    names = [e["event"] for e in record["timeline"]]
    assert names.index("started") < names.index("resumed") < names.index("transcript.final")


@pytest.mark.slow
async def test_operator_routes_refuse_what_they_must(start_server):
    api = FakeTwilioApi()
    async with bridge(start_server, api, transfer_to="") as url:
        call = caller(url, api)
        running = asyncio.create_task(call.run())
        await started(call)
        sid = call.call_sid
        assert (await operator(url, sid, "transfer", {"to": DESK}, token=""))[0] == 401
        assert (await operator(url, sid, "hangup", None, token="wrong"))[0] == 401
        assert (await operator(url, "CA" + "0" * 32, "hangup"))[0] == 404
        status, text = await operator(url, sid, "transfer", {})
        assert status == 400 and "no destination" in text  # no `to`, no TRANSFER_TO
        status, text = await operator(url, sid, "transfer", {"to": "5551234"})
        assert status == 400 and "neither an E.164 number" in text
        status, text = await operator(url, sid, "transfer", {"to": DESK, "mode": "hot"})
        assert status == 400 and "cold or warm" in text
        status, text = await operator(url, sid, "transfer", {"to": DESK, "extra": "x"})
        assert status == 400 and "unknown argument" in text
        assert (await operator(url, sid, "dtmf", {"digits": "12a"}))[0] == 400
        assert (await operator(url, sid, "transfer", ["x"]))[0] == 400
        assert (await operator(url, sid, "hangup", "reason=x", **{"Content-Type": FORM}))[0] == 415
        assert (await operator(url, sid, "hangup", {}, Origin="https://evil.example"))[0] == 403
        assert [p for _, p, _, _ in api.requests if "/Calls" in p] == []  # nothing reached Twilio
        status, text = await operator(url, sid, "hangup", {"reason": "operator hung up"})
        assert status == 200, text
        result = await asyncio.wait_for(running, 20)
        assert (await operator(url, sid, "hangup"))[0] == 409  # ended
    assert result.ended_by == "hangup" and result.stream_ends == ["closed"]
    assert timeline(result.record, "stopped")[0]["reason"] == "operator hung up"
    assert ("POST", f"/2010-04-01/Accounts/{ACCOUNT}/Calls/{sid}.json") in [
        (m, p) for m, p, form, _ in api.requests if form.get("Status") == "completed"
    ]


@pytest.mark.slow
async def test_actions_without_twilio_credentials_are_refused(start_server):
    url = await start_server(console_token=OPERATOR, transfer_to=DESK)
    call = SimulatedCall(url, console_token=OPERATOR, hold_s=20.0, max_s=30.0)
    running = asyncio.create_task(call.run())
    await started(call)
    status, text = await operator(url, call.call_sid, "transfer", {})
    assert status == 400 and "TWILIO_ACCOUNT_SID" in text
    assert (await operator(url, call.call_sid, "hangup"))[0] == 200  # needs no REST API
    await asyncio.wait_for(running, 20)


async def test_fake_refuses_twiml_twilio_refuses():
    assert twiml_problem("<Response><Say>hi</Say></Response>") is None
    assert twiml_problem("<Response><Say>" + "x" * 4000 + "</Say></Response>")[0] == 32018
    assert twiml_problem("<Response><Say>hi</Say>")[0] == 12100
    assert twiml_problem("<Reply><Say>hi</Say></Reply>")[0] == 12100
    assert twiml_problem("<Response><Speak>hi</Speak></Response>")[0] == 12200
    assert twiml_problem('<Response><Say colour="red">hi</Say></Response>')[0] == 12200
    assert (
        twiml_problem('<Response><Dial action="/x"><Number>+15551234567</Number></Dial></Response>')[0]
        == 15004
    )
    assert (
        twiml_problem('<Response><Dial timeout="2"><Number>+15551234567</Number></Dial></Response>')[0]
        == 12200
    )
    assert twiml_problem("<Response><Dial><Number>5551234</Number></Dial></Response>")[0] == 12200
    assert twiml_problem('<Response><Play digits="12x"/></Response>')[0] == 12200
    bad_bool = '<Response><Dial><Conference startConferenceOnEnter="yes">r</Conference></Dial></Response>'
    assert twiml_problem(bad_bool)[0] == 12200
    assert twiml_problem("<Response><Connect><Number>+15551234567</Number></Connect></Response>")[0] == 12200


async def test_fake_refuses_calls_twilio_refuses():
    api = FakeTwilioApi()
    api.calls["CA" + "1" * 32] = "completed"
    base = f"/2010-04-01/Accounts/{ACCOUNT}/Calls"
    auth = aiohttp.BasicAuth(ACCOUNT, TOKEN)
    good = {"To": DESK, "From": NUMBER, "Twiml": "<Response><Say>hi</Say></Response>", "Timeout": "20"}
    async with serve(api.app()) as host, aiohttp.ClientSession(f"http://{host}") as http:

        async def post(path: str, form: dict[str, str]) -> tuple[int, Any]:
            async with http.post(path, data=form, auth=auth) as resp:
                return resp.status, (await resp.json()).get("code")

        assert await post(f"{base}/CA{'1' * 32}.json", {"Twiml": "<Response/>"}) == (400, 21220)  # not live
        assert await post(f"{base}.json", {**good, "To": "12"}) == (400, 21211)
        assert await post(f"{base}.json", {**good, "From": "+15559999999"}) == (400, 21210)
        assert await post(f"{base}.json", {**good, "Url": "https://x.example.com/"}) == (400, 21205)
        assert await post(f"{base}.json", {**good, "Timeout": "0"}) == (400, 21216)
        assert await post(f"{base}.json", {**good, "StatusCallback": "/relative"}) == (400, 21609)
        assert await post(f"{base}.json", {**good, "StatusCallbackEvent": "rung"}) == (400, 21626)
        assert await post(f"{base}.json", {**good, "Twiml": "<Response><Bad/></Response>"}) == (400, 12200)
        assert (await post(f"{base}.json", good))[0] == 201


@pytest.mark.slow
async def test_a_transfer_twilio_refuses_leaves_the_call_going(start_server):
    api = FakeTwilioApi()
    async with bridge(start_server, api) as url:
        call = SimulatedCall(url, auth_token=TOKEN, console_token=OPERATOR, hold_s=30.0, max_s=40.0)
        running = asyncio.create_task(call.run())  # not attached: Twilio does not know the call
        await started(call)
        status, text = await operator(url, call.call_sid, "transfer", {"mode": "cold"})
        assert status == 502 and "404" in text and '"ok": false' in text
        status, text = await operator(url, call.call_sid, "hangup", {})  # still live, still ours
        assert status == 200, text
        result = await asyncio.wait_for(running, 20)
    assert result.stream_ends == ["closed"] and result.ended_by == "hangup"
    assert timeline(result.record, "call.transferred") == []


def test_twiml_documents_are_what_twilio_takes():
    sid = "CA" + "1" * 32
    documents = [
        twiml.dial(DESK, 20, "https://voice.example.com/voice/transfer?caller=" + sid),
        twiml.dial("sip:desk@pbx.example.com", 5, None),
        twiml.hold(f"transfer-{sid}", "https://hold.example.com/m.mp3", telephony.HOLD_LINE),
        twiml.hold(f"transfer-{sid}", "", ""),
        twiml.brief_and_join("A <summary> & more", f"transfer-{sid}"),
        twiml.back_to_bridge(
            "wss://voice.example.com/media",
            "https://voice.example.com/voice/inbound?attempt=1",
            {"token": "t", "resume": "1"},
            say="Sorry.",
            digits="1w#",
        ),
        twiml.hang_up(),
    ]
    assert [twiml_problem(d) for d in documents] == [None] * len(documents)
    with pytest.raises(twiml.TwimlTooLong, match="32018"):
        twiml.brief_and_join("x" * 4000, "room")
