"""The appointment desk puts a caller who asks for a person through to ``TRANSFER_TO``
(cold, through its ``transfer_call`` tool), or says it cannot when none is set: the parser,
the agent with a recording ``ToolContext``, the recogniser's vocabulary, and real calls."""

from __future__ import annotations

import datetime as dt

import pytest

from callbridge.agents.base import reply_text
from callbridge.agents.desk import CANNOT_TRANSFER, HANDOVER, TRANSFER_FAILED, DeskAgent
from callbridge.agents.desk_parse import parse
from callbridge.agents.desk_vocabulary import _PERSON, desk_vocabulary
from callbridge.config import Settings
from callbridge.sim.caller import SimulatedCall
from callbridge.testing.fake_twilio import FakeTwilioApi
from callbridge.upstreams.embedded import agent_for
from tests.conftest import events, speech_8k
from tests.test_telephony import DESK, bridge, caller, redirects
from tests.toolcontext import RecordingContext

MONDAY = dt.date(2025, 3, 10)


@pytest.mark.parametrize(
    "text",
    [
        "can I talk to someone",
        "a real person please",
        "an operator",
        "a human",
        "i would like to speak to a person",
        "could i speak with somebody",
        "put me through to reception",
        "i want to talk to the receptionist about my appointment",
        "operator please",
        # as the recogniser hears espeak's voice over the phone at times
        "hello someone",
        "a real thirty please",
        "talk to a real thirty",
        "can the to a human",
    ],
)
def test_asking_for_a_person(text):
    assert parse(text).kind == "person"


@pytest.mark.parametrize(
    "text, kind",
    [
        ("i would like to book an appointment", "book"),
        ("what can you do", "help"),
        ("can you book me in for tuesday at three", "book"),
        ("cancel my appointment", "cancel"),
    ],
)
def test_other_requests_are_not_for_a_person(text, kind):
    assert parse(text).kind == kind


def test_the_vocabulary_holds_every_way_of_asking():
    words = desk_vocabulary().words
    for phrase in _PERSON:
        assert set(phrase.split()) <= words, phrase
        assert parse(phrase).kind == "person", phrase


async def test_without_transfer_to_it_says_it_cannot_and_offers_help():
    agent, ctx = DeskAgent(today=MONDAY), RecordingContext()
    agent.bind(ctx)
    assert await reply_text(agent, "can i talk to someone") == f"{CANNOT_TRANSFER} What would you like to do?"
    assert ctx.acted == [] and ctx.notes == []
    # in the middle of a booking, the question pending is asked again
    assert await reply_text(agent, "book wednesday at three") == "Wednesday at 3 PM. Shall I book it?"
    assert (
        await reply_text(agent, "a real person please")
        == f"{CANNOT_TRANSFER} Wednesday at 3 PM. Shall I book it?"
    )
    assert (
        await reply_text(agent, "yes") == "Done, you're booked for Wednesday at 3 PM. Is there anything else?"
    )


async def test_with_transfer_to_it_hands_over_and_transfers_cold():
    agent, ctx = DeskAgent(today=MONDAY, transfer_to=DESK), RecordingContext()
    agent.bind(ctx)
    await reply_text(agent, "book wednesday at three")
    await reply_text(agent, "yes")
    pieces = [p async for p in agent.reply("an operator please", [])]
    assert "".join(pieces) == HANDOVER
    summary = "The caller asked for a person. Booked: Wednesday at 3 PM."
    assert ctx.acted == [("transfer", {"to": DESK, "mode": "cold", "summary": summary})]
    assert [(e["name"], e["ok"]) for e in ctx.events("tool.called")] == [("transfer_call", True)]
    assert "transfer: ok" in agent.state()["log"]
    assert not agent.ended


async def test_a_failed_transfer_is_said_and_the_desk_carries_on():
    agent = DeskAgent(today=MONDAY, transfer_to=DESK)
    ctx = RecordingContext(outcomes={"transfer": {"ok": False, "error": "the line is busy"}})
    agent.bind(ctx)
    assert await reply_text(agent, "a human") == f"{HANDOVER} {TRANSFER_FAILED}"
    assert ctx.events("tool.called")[0]["error"] == "ActionError: the line is busy"
    assert await reply_text(agent, "book wednesday at three") == "Wednesday at 3 PM. Shall I book it?"


async def test_a_barge_in_over_the_handover_line_transfers_nothing():
    agent, ctx = DeskAgent(today=MONDAY, transfer_to=DESK), RecordingContext()
    agent.bind(ctx)
    reply = agent.reply("can i talk to someone", [])
    assert (await anext(reply)).startswith("Sure")
    await reply.aclose()  # the caller cut the reply (what the back end does on a barge-in)
    assert ctx.acted == []
    assert await reply_text(agent, "book wednesday at three") == "Wednesday at 3 PM. Shall I book it?"
    assert ctx.acted == []  # and the next reply does not transfer either


def test_the_desk_of_a_call_gets_transfer_to():
    assert agent_for(Settings(transfer_to=DESK), "CA1").transfer_to == DESK
    assert agent_for(Settings(), "CA1").transfer_to is None


async def _ask_for_a_person(start_server, **settings):
    url = await start_server(greeting="Hi.", **settings)
    audio = [speech_8k("can I talk to someone"), speech_8k("thank you goodbye")]
    return await SimulatedCall(url, audio=audio, polite=True, hold_s=6).run()


@pytest.mark.slow
async def test_a_caller_asks_for_a_person_and_none_is_there(start_server):
    result = await _ask_for_a_person(start_server)
    said = [e["text"] for e in events(result, "agent.reply")]
    assert said[0] == f"{CANNOT_TRANSFER} What would you like to do?", said
    assert said[-1].endswith("Goodbye!")
    assert events(result, "tool.called") == []


async def _put_through(start_server):
    api = FakeTwilioApi()
    async with bridge(start_server, api, greeting="Hi.") as url:
        call = caller(url, api, audio=[speech_8k("can I talk to someone")], polite=True)
        result = await call.run()
    return api, call, result


@pytest.mark.slow
async def test_a_caller_asks_for_a_person_and_is_put_through(start_server):
    """The whole way: the desk says its handover line and its transfer_call tool has the
    gateway redirect the live call (Twilio's REST API, the fake) to a <Dial> of TRANSFER_TO,
    which the simulated call dials."""
    api, call, result = await _put_through(start_server)
    heard = events(result, "transcript.final")
    assert "someone" in heard[0]["text"], heard
    # the handover line's audio went out. Its agent.reply and the tool's tool.called notes
    # may not be on the timeline: the call can move (and its actors stop) before the reply
    # that ran the tool is over. What the gateway did is:
    assert [e["utterance"] for e in events(result, "reply_audio")] == [2]
    transferred = [(e["mode"], e["outcome"]) for e in events(result, "call.transferred")]
    assert transferred[:1] == [("cold", "dialing")], transferred
    assert result.dialed == [("number", DESK)]
    [document] = redirects(api, call.call_sid)
    assert [(n.tag, n.text) for n in document[0]] == [("Number", DESK)]
    assert events(result, "stopped")[0]["reason"] == f"transferred (cold) to {DESK}"


@pytest.mark.slow
async def test_the_handover_line_is_heard_before_the_call_moves(start_server):
    _, _, result = await _put_through(start_server)
    [handover] = [e["utterance"] for e in events(result, "reply_audio")]
    played = [e["t_ms"] for e in events(result, "mark_played") if e["name"] == f"u{handover}"]
    moved = [e["t_ms"] for e in events(result, "call.transferred")]
    assert played and moved and played[0] <= moved[0], (played, moved)
