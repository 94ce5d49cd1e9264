"""The webhook agent's answer may ask for telephony actions (``actions``): checked when the
answer arrives, carried out after its text through the telephony tools of the bound call
(a recording ``ToolContext`` here; the gateway's side is tested with the gateway), bad ones
noted and logged once. The user's endpoint is a real HTTP server on loopback."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from aiohttp import web

from callbridge.agents import AgentError, reply_text
from callbridge.agents.webhook import MAX_ACTIONS
from callbridge.sim.caller import SimulatedCall
from tests import test_agent_webhook
from tests.conftest import events, speech_8k
from tests.test_agent_webhook import Endpoint, agent_for
from tests.toolcontext import RecordingContext

hook = test_agent_webhook.hook
"""The user's endpoint, a real server on loopback (the webhook agent's own tests' fixture)."""


def answering(hook: Endpoint, **answer: Any) -> None:
    hook.answer = lambda body: web.json_response(answer)


async def test_actions_run_in_order_after_the_text(hook):
    answering(
        hook,
        text="Putting you through. One moment.",
        actions=[
            {"type": "send_dtmf", "digits": "1#"},
            {"type": "transfer", "to": "+15551234567", "mode": "warm", "summary": "Wants a refund."},
        ],
    )
    agent, ctx = agent_for(hook), RecordingContext()
    agent.bind(ctx)
    reply = agent.reply("a person please", [])
    assert [await anext(reply), await anext(reply)] == ["Putting you through. ", "One moment."]
    assert ctx.acted == []  # all the text first
    with pytest.raises(StopAsyncIteration):
        await anext(reply)
    assert ctx.acted == [
        ("send_dtmf", {"digits": "1#"}),
        ("transfer", {"to": "+15551234567", "mode": "warm", "summary": "Wants a refund."}),
    ]
    called = ctx.events("tool.called")
    assert [(e["name"], e["ok"]) for e in called] == [("send_dtmf", True), ("transfer_call", True)]
    assert not agent.ended


async def test_hang_up_ends_the_call_after_the_text(hook):
    answering(hook, text="Goodbye!", actions=[{"type": "hang_up", "reason": "done"}])
    agent, ctx = agent_for(hook), RecordingContext()
    agent.bind(ctx)
    assert await reply_text(agent, "bye") == "Goodbye!"
    assert agent.ended and ctx.acted == []  # the same as end_call: true


async def test_bad_actions_are_noted_logged_once_and_the_rest_runs(hook, caplog):
    answering(
        hook,
        text="Okay.",
        actions=[
            {"type": "teleport", "to": "mars"},
            {"type": "send_dtmf", "digits": "12x"},
            "hang_up",
            {"type": "transfer", "to": "+15551234567", "volume": 11},
            {"type": "transfer", "to": "not a number"},
            {"type": "send_dtmf", "digits": "9"},
        ],
    )
    agent, ctx = agent_for(hook), RecordingContext()
    agent.bind(ctx)
    with caplog.at_level(logging.WARNING, logger="callbridge.agent"):
        assert await reply_text(agent, "hi") == "Okay."
        assert await reply_text(agent, "hi again") == "Okay."
    bad = ctx.events("agent.action")
    assert [(e["type"], e["ok"]) for e in bad] == [
        ("teleport", False),
        ("send_dtmf", False),
        ("?", False),
        ("transfer", False),
        ("transfer", False),
    ] * 2
    assert "unknown action 'teleport'" in bad[0]["error"]
    assert "digits must be" in bad[1]["error"]
    assert "must be an object" in bad[2]["error"]
    assert "unknown argument(s) volume" in bad[3]["error"]
    assert "neither an E.164 number" in bad[4]["error"]
    assert ctx.acted == [("send_dtmf", {"digits": "9"})] * 2
    assert len([r for r in caplog.records if "bad action" in r.getMessage()]) == 1


async def test_a_failed_action_stops_the_ones_after_it(hook):
    answering(
        hook,
        text="Connecting.",
        actions=[{"type": "transfer"}, {"type": "send_dtmf", "digits": "1"}],
    )
    agent = agent_for(hook)
    ctx = RecordingContext(outcomes={"transfer": {"ok": False, "error": "transfer: no TRANSFER_TO"}})
    agent.bind(ctx)
    assert await reply_text(agent, "hi") == "Connecting."
    assert ctx.acted == [("transfer", {"mode": "cold"})]
    assert ctx.events("tool.called")[0]["error"] == "ActionError: transfer: no TRANSFER_TO"


async def test_hang_up_beside_a_transfer_is_refused(hook):
    answering(hook, text="Bye.", actions=[{"type": "transfer"}, {"type": "hang_up"}])
    agent, ctx = agent_for(hook), RecordingContext()
    agent.bind(ctx)
    await reply_text(agent, "hi")
    assert not agent.ended
    assert ctx.acted == [("transfer", {"mode": "cold"})]
    assert ctx.events("agent.action")[0]["type"] == "hang_up"


async def test_actions_outside_a_call_are_not_carried_out(hook, caplog):
    answering(hook, text="Sure.", actions=[{"type": "send_dtmf", "digits": "1"}])
    agent = agent_for(hook)
    with caplog.at_level(logging.WARNING, logger="callbridge.agent"):
        assert await reply_text(agent, "hi") == "Sure."
    assert "outside a call" in caplog.text


@pytest.mark.parametrize(
    ("actions", "error"),
    [
        ({"type": "hang_up"}, "'actions' must be a list"),
        ([{"type": "send_dtmf", "digits": "1"}] * (MAX_ACTIONS + 1), f"at most {MAX_ACTIONS}"),
    ],
)
async def test_a_malformed_action_list_is_an_agent_error(hook, actions, error):
    answering(hook, text="Hi.", actions=actions)
    with pytest.raises(AgentError, match=error):
        await reply_text(agent_for(hook), "hi")


@pytest.mark.slow
async def test_actions_in_a_call(start_server, aiohttp_server):
    """A real call through the simulator: a bad action and DTMF on the first turn, a hang-up on
    the second; the call ends once the goodbye has played."""
    answers = [
        {"text": "Pressing one.", "actions": [{"type": "teleport"}, {"type": "send_dtmf", "digits": "1"}]},
        {"text": "Goodbye!", "actions": [{"type": "hang_up"}]},
    ]

    async def turn(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response(answers.pop(0) if answers else {"text": "Okay."})

    app = web.Application()
    app.router.add_post("/turn", turn)
    server = await aiohttp_server(app)
    url = await start_server(greeting="Hi.", agent="webhook", agent_webhook_url=str(server.make_url("/turn")))
    audio = [speech_8k("can I talk to someone"), speech_8k("thank you goodbye")]
    result = await SimulatedCall(url, audio=audio, polite=True, hold_s=6).run()
    assert [e["text"] for e in events(result, "agent.reply")] == ["Pressing one.", "Goodbye!"]
    assert result.record["stop_reason"] == "the agent ended the call"
    # the bad action is noted; the DTMF reached the gateway (which cannot send it without
    # Twilio's REST API: that is its answer)
    assert [e["type"] for e in events(result, "agent.action")] == ["teleport"]
    called = events(result, "tool.called")
    assert [(e["name"], e["ok"]) for e in called] == [("send_dtmf", False)], called
    assert "REST API" in called[0]["error"], called
