"""Tools and telephony actions with the remote back ends: the real gateway, the simulator
playing Twilio, and the local fakes of OpenAI Realtime (tests/remote_fakes.py) and Vapi
(tests/fake_vapi.py), over real sockets."""

from __future__ import annotations

import asyncio
import copy

import aiohttp
import orjson
import pytest

from callbridge.actions import TELEPHONY_TOOLS
from callbridge.gateway.vapi_actions import NO_DESTINATION
from callbridge.gateway.vapi_messages import (
    control_action,
    destination_args,
    tool_arguments,
    transfer_destination,
)
from callbridge.sim.caller import SimulatedCall
from callbridge.upstreams.openai_realtime import function_call, function_output, session_update

from . import fake_realtime_schema as schema
from .conftest import events, speech_8k, until
from .fake_vapi import FakeVapi, destination_problem
from .remote_fakes import FakeRealtime
from .test_tools_in_call import SECRET as TOOLS_SECRET
from .test_tools_in_call import ToolServer
from .test_upstream_realtime import GOOD_UPDATE, answer, realtime_server, realtime_socket
from .test_upstream_vapi import vapi_server

# -- the protocol, pure ------------------------------------------------------------------------


def test_session_offers_the_telephony_tools():
    session = session_update("gpt-realtime", "marin", 500)["session"]
    assert [t["name"] for t in session["tools"]] == ["end_call", "transfer_call", "send_dtmf"]
    assert session["tools"][1] == TELEPHONY_TOOLS[1].openai_realtime()
    assert session["tool_choice"] == "auto"
    assert schema.check_session(session) is None


def test_function_call_items_parsed():
    item = {"type": "function_call", "call_id": "call_1", "name": "send_dtmf", "arguments": '{"digits":"1"}'}
    assert function_call(item) == ("call_1", "send_dtmf", '{"digits":"1"}')
    assert function_call({**item, "arguments": None}) == ("call_1", "send_dtmf", "")
    assert function_call({"type": "message"}) is None
    assert function_call({**item, "call_id": ""}) is None
    assert function_call({**item, "call_id": "x" * 201}) is None
    assert function_call("nope") is None
    assert function_output("call_1", '{"ok":true}') == {
        "type": "conversation.item.create",
        "item": {"type": "function_call_output", "call_id": "call_1", "output": '{"ok":true}'},
    }


@pytest.mark.parametrize(
    ("tools", "code"),
    [
        ("x", "invalid_type"),
        ([{"type": "code", "name": "a"}], "invalid_value"),
        ([{"type": "function"}], "missing_required_parameter"),
        ([{"type": "function", "name": "has space"}], "invalid_value"),
        ([{"type": "function", "name": "a" * 65}], "invalid_value"),
        ([{"type": "function", "name": "a"}, {"type": "function", "name": "a"}], "invalid_value"),
        ([{"type": "function", "name": "a", "description": 3}], "invalid_type"),
        (
            [{"type": "function", "name": "a", "parameters": {"type": "string"}}],
            "invalid_function_parameters",
        ),
        ([{"type": "function", "name": "a", "strict": True}], "unknown_parameter"),
        ([{"type": "function", "name": f"t{i}"} for i in range(129)], "array_above_max_length"),
    ],
)
def test_fake_refuses_bad_tools(tools, code):
    session = copy.deepcopy(session_update("m", "marin", 500)["session"])
    session["tools"] = tools
    error = schema.check_session(session)
    assert error is not None and error["code"] == code


def test_fake_checks_tool_choice():
    session = copy.deepcopy(session_update("m", "marin", 500)["session"])
    session["tool_choice"] = {"type": "function", "name": "transfer_call"}
    assert schema.check_session(session) is None
    session["tool_choice"] = {"type": "function", "name": "nope"}
    assert schema.check_session(session)["param"] == "session.tool_choice.name"
    session["tool_choice"] = "sometimes"
    assert schema.check_session(session)["code"] == "invalid_value"


async def test_fake_refuses_an_output_for_a_call_it_never_made():
    fake = FakeRealtime()
    async with fake.running(), realtime_socket(fake) as ws:
        await ws.send_str(orjson.dumps(function_output("call_404", "{}")).decode())
        error = await _next(ws, "error")
        assert error["error"]["param"] == "item.call_id"
        bad = function_output("call_404", "{}")
        bad["item"]["name"] = "x"  # OpenAI's output item carries no name
        await ws.send_str(orjson.dumps(bad).decode())
        assert (await _next(ws, "error"))["error"]["code"] == "unknown_parameter"
    assert not fake.outputs


async def test_fake_calls_a_function_as_the_api_does():
    fake = FakeRealtime()
    fake.calls.append(("send_dtmf", {"digits": "1234#"}))
    async with fake.running(), realtime_socket(fake) as ws:
        assert (await answer(ws, GOOD_UPDATE, "session.updated"))["type"] == "session.updated"
        await ws.send_str(orjson.dumps({"type": "response.create"}).decode())
        seen = []
        while not seen or seen[-1]["type"] != "response.done":
            seen.append(await _next(ws, None))
        kinds = [e["type"] for e in seen]
        assert kinds[:2] == ["response.created", "response.output_item.added"]
        assert "response.function_call_arguments.delta" in kinds
        done = next(e for e in seen if e["type"] == "response.output_item.done")["item"]
        deltas = "".join(e["delta"] for e in seen if e["type"] == "response.function_call_arguments.delta")
        assert deltas == done["arguments"] == '{"digits":"1234#"}'
        assert done["name"] == "send_dtmf" and done["call_id"].startswith("call_")
        await ws.send_str(orjson.dumps(function_output(done["call_id"], '{"ok":true}')).decode())
        assert (await _next(ws, "conversation.item.added"))["item"]["call_id"] == done["call_id"]
        # answered once only
        await ws.send_str(orjson.dumps(function_output(done["call_id"], '{"ok":true}')).decode())
        assert (await _next(ws, "error"))["error"]["param"] == "item.call_id"
    assert [item["call_id"] for _, item in fake.outputs] == [done["call_id"]]


async def _next(ws, kind: str | None) -> dict:
    while True:
        msg = await asyncio.wait_for(ws.receive(), 5)
        event = orjson.loads(msg.data)
        if kind is None or event["type"] == kind:
            return event


# -- calls through the bridge -----------------------------------------------------------------


@pytest.mark.slow
async def test_realtime_tool_round_trip(start_server):
    """The model calls transfer_call; the action reaches Call.act (refused here: no Twilio
    credentials), the model gets that outcome for its call id, and it carries on speaking."""
    fake = FakeRealtime()
    fake.calls.append(("transfer_call", {"to": "+15551234567", "mode": "cold"}))
    async with fake.running():
        url = await realtime_server(start_server, fake)
        ask = speech_8k("Can I talk to a person please?")
        result = await SimulatedCall(url, audio=[ask], polite=True, hold_s=4.0).run()
    session = fake.sessions[0]
    kinds = [e["type"] for e in session.events]
    assert not fake.errors, fake.errors
    # the tools were offered
    update = next(e for e in session.events if e["type"] == "session.update")
    assert {t["name"] for t in update["session"]["tools"]} >= {"end_call", "transfer_call", "send_dtmf"}
    # the output went back for the call the model made, then a new response was asked for
    assert len(fake.outputs) == 1
    _, item = fake.outputs[0]
    outcome = orjson.loads(item["output"])
    assert outcome["ok"] is False and "TWILIO_ACCOUNT_SID" in outcome["error"]
    at = next(
        i for i, e in enumerate(session.events) if e.get("item", {}).get("type") == "function_call_output"
    )
    assert "response.create" in kinds[at + 1 :]
    # the timeline has the tool call; the model spoke again after it (greeting + the answer)
    called = events(result, "tool.called")
    assert [(e["name"], e["ok"]) for e in called] == [("transfer_call", outcome["ok"])]
    assert fake.replies >= 2
    assert len(result.end_marks_echoed()) >= 2
    # the bridge's turnaround, the call's item sent -> its output received (loopback)
    assert len(fake.answer_ms) == 1 and fake.answer_ms[0] < 1000


@pytest.mark.slow
async def test_realtime_user_tools_over_tools_url(start_server, aiohttp_server):
    """The user's TOOLS_URL tools are offered to the Realtime model beside the telephony
    ones; a call of one is POSTed (signed) to the user's server, its result goes back to
    the model; a slow one gets its filler said meanwhile in the bridge's voice."""
    tools = ToolServer()
    server = await aiohttp_server(tools.app())
    fake = FakeRealtime()
    fake.calls += [("check_slots", {"day": "Monday"}), ("slow_lookup", {})]
    async with fake.running():
        url = await realtime_server(
            start_server, fake, tools_url=str(server.make_url("/tools")), tools_secret=TOOLS_SECRET
        )
        ask = speech_8k("Is Monday free?")
        result = await SimulatedCall(url, audio=[ask], polite=True, hold_s=5.0).run()
    assert not fake.errors, fake.errors
    update = next(e for e in fake.sessions[0].events if e["type"] == "session.update")
    assert {t["name"] for t in update["session"]["tools"]} == {
        "end_call",
        "transfer_call",
        "send_dtmf",
        "check_slots",
        "slow_lookup",
        "broken",
    }
    assert tools.bad_signatures == 0
    assert [(c["name"], c["arguments"]) for c in tools.calls] == [
        ("check_slots", {"day": "Monday"}),
        ("slow_lookup", {}),
    ]
    slots, slow = (orjson.loads(item["output"]) for _, item in fake.outputs)
    assert slots == {"ok": True, "result": {"day": "Monday", "free": ["3 PM"]}}
    assert slow == {"ok": True, "result": "found it"}
    assert [e["name"] for e in events(result, "tool.called")] == ["check_slots", "slow_lookup"]
    assert events(result, "filler_synthesised")  # said while slow_lookup ran
    assert fake.replies >= 2  # and the model answered after both


@pytest.mark.slow
async def test_realtime_end_call_tool_ends_after_the_goodbye(start_server):
    fake = FakeRealtime()
    fake.end_call_after_replies = 2  # greeting, then the goodbye with end_call in its response
    async with fake.running():
        url = await realtime_server(start_server, fake)
        bye = speech_8k("That is all, goodbye.")
        result = await SimulatedCall(url, audio=[bye], polite=True, hold_s=6.0).run()
    assert not fake.errors, fake.errors
    called = events(result, "tool.called")
    assert [(e["name"], e["ok"]) for e in called] == [("end_call", True)]
    assert result.record["stop_reason"] == "the agent ended the call"
    ending = events(result, "call_ending")[0]
    assert ending["t_ms"] >= result.marks_echoed[-1][0] * 1000 - 50  # after the goodbye played
    # no new response after end_call: the model did not speak again, the session was closed
    assert fake.replies == 2
    assert "upstream.ended" in result.timeline_events()


@pytest.mark.slow
async def test_realtime_bad_tool_arguments_reach_the_model_not_the_caller(start_server):
    fake = FakeRealtime()
    fake.calls.append(("send_dtmf", {"digits": "abc"}))
    async with fake.running():
        url = await realtime_server(start_server, fake)
        ask = speech_8k("Press one for me.")
        call = SimulatedCall(url, audio=[ask], polite=True, hold_s=3.0)
        result = await call.run()
        await until(lambda: fake.outputs)
    outcome = orjson.loads(fake.outputs[0][1]["output"])
    assert outcome["ok"] is False and "bad arguments" in outcome["error"]
    assert events(result, "tool.called")[0]["ok"] is False
    assert fake.replies >= 2  # it went on talking


# -- Vapi: the messages, pure ------------------------------------------------------------------


def test_vapi_destinations_and_control_requests():
    assert transfer_destination("+15557654321") == {
        "destination": {"type": "number", "number": "+15557654321"}
    }
    assert transfer_destination("sip:desk@example.com") == {
        "destination": {"type": "sip", "sipUri": "sip:desk@example.com"}
    }
    for to in ("+15557654321", "sip:desk@example.com"):
        assert destination_problem(transfer_destination(to)) == ""
    assert control_action({"request": "hang-up"})[0] == "hang_up"
    kind, args = control_action(
        {"request": "forward", "destination": {"type": "number", "number": "+15557654321"}}
    )
    assert (kind, args) == ("transfer", {"to": "+15557654321", "mode": "cold"})
    warm = {
        "type": "sip",
        "sipUri": "sip:desk@example.com",
        "transferPlan": {"mode": "warm-transfer-say-message", "message": "Caller wants to rebook."},
    }
    assert destination_args(warm) == {
        "to": "sip:desk@example.com",
        "mode": "warm",
        "summary": "Caller wants to rebook.",
    }
    for bad in (
        {"request": "mute"},
        {"request": "forward"},
        {"request": "forward", "destination": {"type": "assistant", "assistantName": "x"}},
        {"request": "forward", "destination": {"type": "number"}},
    ):
        with pytest.raises(ValueError):
            control_action(bad)
    assert tool_arguments(
        {"toolCallList": [{"id": "t1", "function": {"name": "send_dtmf", "arguments": {"digits": "1"}}}]}
    ) == {"t1": {"digits": "1"}}


@pytest.mark.parametrize(
    "answer",
    [
        {},
        {"destination": {"type": "number", "number": "+1"}, "error": "x"},
        {"destination": {"type": "number", "number": "5551234"}},
        {"destination": {"type": "sip", "sipUri": "desk@example.com"}},
        {"destination": {"type": "number", "number": "+15557654321", "to": "x"}},
        {"destination": "+15557654321"},
        {"error": 3},
        "nope",
    ],
)
def test_fake_vapi_refuses_what_vapi_fails_on(answer):
    assert destination_problem(answer)


# -- Vapi: calls through the bridge --------------------------------------------------------------

SECRET = "whsec-test"
DESK = "+15557654321"


async def vapi_bridge(start_server, fake: FakeVapi, base: str, **settings) -> str:
    url = await vapi_server(start_server, fake, base, vapi_webhook_secret=SECRET, **settings)
    fake.server_url, fake.server_secret = url + "/webhook/vapi", SECRET
    return url


@pytest.mark.slow
async def test_vapi_transfer_request_reaches_the_bridge_action(start_server):
    """transferCall without destinations: Vapi asks the bridge for one (TRANSFER_TO), says
    its transfer line, and hands the forward to the bridge (phone-call-control), which
    asks Call.act for the transfer."""
    fake = FakeVapi()
    fake.transfer_after_replies = 2  # the greeting, then the answer to the caller
    fake.server_messages = {"transfer-destination-request", "phone-call-control", "status-update"}
    async with fake.running() as base:
        url = await vapi_bridge(start_server, fake, base, transfer_to=DESK)
        ask = speech_8k("Can I talk to a real person?")
        call = SimulatedCall(url, audio=[ask], polite=True, hold_s=4.0)
        result = await call.run()
    assert not fake.problems, fake.problems
    assert [(kind, status) for kind, status, _ in fake.server_posts] == [
        ("transfer-destination-request", 200),
        ("phone-call-control", 200),
    ]
    assert fake.server_posts[0][2] == {"destination": {"type": "number", "number": DESK}}
    assert [e["to"] for e in events(result, "vapi.transfer_destination")] == [DESK]
    (action,) = events(result, "vapi.action")
    assert (action["request"], action["kind"], action["to"]) == ("forward", "transfer", DESK)
    if not action["ok"]:  # until the gateway's telephony lands: Call.act says so
        assert "transfer" in action["error"]


@pytest.mark.slow
async def test_vapi_transfer_without_a_destination_is_refused_to_vapi(start_server):
    fake = FakeVapi()
    fake.transfer_after_replies = 1  # right after the greeting
    fake.server_messages = {"transfer-destination-request", "phone-call-control"}
    async with fake.running() as base:
        url = await vapi_bridge(start_server, fake, base)
        result = await SimulatedCall(url, hold_s=2.5).run()
    assert not fake.problems, fake.problems
    assert [(kind, answer) for kind, _, answer in fake.server_posts] == [
        ("transfer-destination-request", {"error": NO_DESTINATION})
    ]
    assert not events(result, "vapi.action")


@pytest.mark.slow
async def test_vapi_end_call_delegated_ends_after_the_goodbye(start_server):
    """endCall with the hang-up delegated: the bridge ends the Twilio call once the goodbye
    has played, and ends the Vapi call with it."""
    fake = FakeVapi()
    fake.end_call_after_replies = 2
    fake.end_with = "phone-call-control"
    fake.server_messages = {"phone-call-control"}
    async with fake.running() as base:
        url = await vapi_bridge(start_server, fake, base)
        bye = speech_8k("That is all, goodbye.")
        result = await SimulatedCall(url, audio=[bye], polite=True, hold_s=8.0).run()
        await until(lambda: not fake.open_calls)
    assert [kind for kind, _, _ in fake.server_posts] == ["phone-call-control"]
    assert "upstream.hang_up_requested" in result.timeline_events()
    assert result.record["stop_reason"] in ("the agent ended the call", "vapi: the assistant ended the call")
    ending = events(result, "call_ending")[0]
    assert ending["t_ms"] >= result.marks_echoed[-1][0] * 1000 - 50  # after the goodbye played
    assert ending["t_ms"] < 7000  # not the simulator hanging up
    assert fake.hangups == ["vapi-call-1"]  # the Vapi call was ended with it


@pytest.mark.slow
async def test_vapi_tool_calls_run_the_bridge_telephony_tools(start_server):
    """Vapi function tools named like the bridge's (server URL = the bridge) run in the
    call: send_dtmf reaches Call.act, end_call ends the call after what is playing."""
    fake = FakeVapi()
    async with fake.running() as base:
        url = await vapi_bridge(start_server, fake, base)
        call = SimulatedCall(url, hold_s=10.0)
        running = asyncio.ensure_future(call.run())
        await until(lambda: fake.conns)
        headers = {"Authorization": f"Bearer {SECRET}", "Content-Type": "application/json"}

        async def tool(name: str, arguments: dict) -> dict:
            body = {
                "message": {
                    "type": "tool-calls",
                    "call": {"id": "vapi-call-1"},
                    "toolCallList": [{"id": f"t-{name}", "function": {"name": name, "arguments": arguments}}],
                }
            }
            async with (
                aiohttp.ClientSession() as http,
                http.post(url + "/webhook/vapi", json=body, headers=headers) as r,
            ):
                assert r.status == 200
                return (await r.json())["results"][0]

        await until(lambda: fake.replies >= 1)  # the greeting went out
        dtmf = await tool("send_dtmf", {"digits": "12#"})
        assert dtmf["toolCallId"] == "t-send_dtmf" and dtmf["name"] == "send_dtmf"
        outcome = orjson.loads(dtmf.get("result") or dtmf["error"])
        assert "ok" in outcome
        other = await tool("bookTable", {})
        assert "error" in other
        bye = await tool("end_call", {})
        assert orjson.loads(bye["result"])["ok"] is True
        result = await running
    called = [(e["name"], e["ok"]) for e in events(result, "tool.called")]
    assert called[0][0] == "send_dtmf" and called[1] == ("end_call", True)
    assert result.record["stop_reason"] in ("the agent ended the call", "vapi: the assistant ended the call")
    assert events(result, "call_ending")[0]["t_ms"] < 9000  # ended by end_call, not the simulator
