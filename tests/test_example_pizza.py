"""The example agent of examples/pizza: its tool and transfer at unit level (a recording
``ToolContext``), and real calls through the simulator with ``AGENT=examples.pizza.agent:PizzaAgent``
(the caller's turns synthesised; the embedded recogniser hears them with the example's own
vocabulary)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from callbridge.agents.base import reply_text
from callbridge.sim.caller import SimulatedCall
from examples.pizza.agent import PizzaAgent, order_number
from tests.conftest import events, speech_8k
from tests.toolcontext import RecordingContext

ROOT = Path(__file__).resolve().parent.parent
AGENT = "examples.pizza.agent:PizzaAgent"
TURNS = ["order number one two three", "thank you goodbye"]


def test_order_numbers_as_heard():
    assert order_number("my order number is one two three") == "123"
    assert order_number("it is 248") == "248"
    assert order_number("where is my order") is None
    assert order_number("my order number eight one two three") == "123"  # "is" heard as "eight"


async def test_the_order_tool_runs_in_the_call():
    agent, ctx = PizzaAgent("CA1"), RecordingContext()
    agent.bind(ctx)
    reply = await reply_text(agent, "my order number is one two three")
    assert reply == "Order 1 2 3 is in the oven. It should be with you in about 15 minutes. Anything else?"
    assert [e["name"] for e in ctx.events("tool.called")] == ["order_status"]
    assert ctx.events("tool.called")[0]["ok"] is True
    assert (
        await reply_text(agent, "order nine nine nine")
        == "I can't find order 9 9 9. Could you say the number again?"
    )
    assert agent.state() == {"looked_up": ["123", "999"]}
    assert "order_status" in agent.all_tools() and "transfer_call" in agent.all_tools()


async def test_asking_for_a_person_transfers_cold_and_a_failure_is_said():
    agent, ctx = PizzaAgent(), RecordingContext()
    agent.bind(ctx)
    assert await reply_text(agent, "can i talk to someone") == "Sure, I'll put you through to the shop. "
    assert ctx.acted == [("transfer", {"mode": "cold"})]
    ctx.outcomes["transfer"] = {"ok": False, "error": "transfer: no TRANSFER_TO"}
    reply = await reply_text(agent, "a real person please")
    assert reply.endswith(
        "Sorry, nobody at the shop can take your call right now. What is your order number?"
    )
    assert [e["ok"] for e in ctx.events("tool.called")] == [True, False]


async def test_goodbye_ends_and_no_call_means_no_tool():
    agent = PizzaAgent()
    assert await reply_text(agent, "order one two three") == (
        "Sorry, I can't look orders up just now. Please try again in a minute."
    )  # not bound to a call: the tool cannot run, and the caller is told
    assert not agent.ended
    assert (await reply_text(agent, "thanks bye")).endswith("Goodbye!") and agent.ended


async def _call(start_server):
    url = await start_server(agent=AGENT)
    return await SimulatedCall(url, audio=[speech_8k(t) for t in TURNS], polite=True, hold_s=6).run()


@pytest.mark.slow
async def test_a_call_with_the_example_agent(start_server):
    result = await _call(start_server)
    timeline = result.record["timeline"]
    said = [e["text"] for e in events(result, "agent.reply")]
    heard = [e["text"] for e in events(result, "transcript.final")]
    assert any(e.get("text", "").startswith("Thanks for calling Mario's Pizza") for e in timeline), said
    assert "one two three" in heard[0], heard
    assert len(said) == 2 and said[-1].endswith("Goodbye!"), said
    assert result.record["stop_reason"] == "the agent ended the call"


@pytest.mark.slow
async def test_the_example_agent_runs_its_tool_in_a_call(start_server):
    result = await _call(start_server)
    called = events(result, "tool.called")
    assert [(e["name"], e["ok"]) for e in called] == [("order_status", True)], called
    assert events(result, "agent.reply")[0]["text"].startswith("Order 1 2 3 is in the oven.")


@pytest.mark.slow
def test_the_readme_command_places_a_call(tmp_path):
    """``python -m examples.pizza`` from the checkout's root, as the example's README says."""
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "examples.pizza",
            "--say",
            "thank you goodbye",
            "--record",
            str(tmp_path / "c.wav"),
        ],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert (
        'agent.reply            text="Thanks for calling Mario\'s. Enjoy your pizza. Goodbye!"' in run.stdout
    )
    assert (tmp_path / "c.wav").stat().st_size > 8000
