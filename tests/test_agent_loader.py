"""AGENT=package.module:Name: your own Agent loaded at start-up, one per call, and every way
naming it can go wrong said in one line (``callbridge serve`` exits 2 with it)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from callbridge.agents.base import AgentError, create_agent, reply_text
from callbridge.agents.loader import build, load_factory
from callbridge.config import ConfigError, Settings
from callbridge.sim.caller import SimulatedCall
from callbridge.upstreams.embedded import agent_for
from examples.pizza.agent import PizzaAgent
from tests.conftest import events, speech_8k

ROOT = Path(__file__).resolve().parent.parent

AGENTS = textwrap.dedent(
    """
    from callbridge.agents import Agent

    class Plain(Agent):
        async def reply(self, transcript, history):
            yield "plain"

    class WithSid(Agent):
        def __init__(self, call_sid):
            self.call_sid = call_sid
        async def reply(self, transcript, history):
            yield self.call_sid

    class Abstract(Agent):
        pass

    class NotAnAgent:
        pass

    def factory(**kwargs):
        agent = WithSid(kwargs["call_sid"])
        return agent

    def bad_factory():
        return 42

    def failing_factory():
        raise RuntimeError("no database")

    NUMBER = 7
    """
)


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """A module of the user's own, importable as ``myagents``."""
    (tmp_path / "myagents.py").write_text(AGENTS)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("myagents", None)
    load_factory.cache_clear()
    yield "myagents"
    sys.modules.pop("myagents", None)
    load_factory.cache_clear()


async def test_a_class_and_a_factory_make_one_agent_per_call(user_module):
    plain = build("myagents:Plain", "CA1")
    assert await reply_text(plain, "hi") == "plain"
    assert build("myagents:Plain", "CA2") is not plain
    assert await reply_text(build("myagents:WithSid", "CAsid"), "hi") == "CAsid"
    assert await reply_text(build("myagents:factory", "CAfac"), "hi") == "CAfac"
    agent = create_agent("myagents:WithSid", call_sid="CAcreate")
    assert await reply_text(agent, "hi") == "CAcreate"
    with pytest.raises(ValueError, match="unknown setting"):
        create_agent("myagents:Plain", url="http://x")


def test_the_setting_picks_your_agent_for_each_call(user_module):
    settings = Settings(agent="myagents:WithSid")
    one, two = agent_for(settings, "CAone"), agent_for(settings, "CAtwo")
    assert (type(one).__name__, one.call_sid, two.call_sid) == ("WithSid", "CAone", "CAtwo")


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("myagents:Missing", "AGENT=myagents:Missing: myagents has no Missing"),
        (
            "nosuchmodule_xyz:Agent",
            "AGENT=nosuchmodule_xyz:Agent: cannot import nosuchmodule_xyz: ModuleNotFoundError",
        ),
        ("myagents:NotAnAgent", "NotAnAgent is a class but not a callbridge.agents.Agent subclass"),
        ("myagents:Abstract", "Abstract is abstract (it does not implement reply)"),
        ("myagents:NUMBER", "NUMBER is neither an Agent subclass nor a factory (it is of type int)"),
        ("my agents:Plain", "expected package.module:Name"),
        ("myagents:", "expected package.module:Name"),
        ("desks", "AGENT must be desk, openai, webhook or package.module:Name, not 'desks'"),
    ],
)
def test_bad_names_are_config_errors_naming_them(user_module, name, error):
    with pytest.raises(ConfigError) as exc:
        Settings(agent=name)
    assert error in str(exc.value)


def test_a_module_that_fails_on_import_is_one_line(tmp_path, monkeypatch):
    (tmp_path / "brokenagent.py").write_text(
        "import json\nraise ImportError('needs the pizza database driver')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    load_factory.cache_clear()
    with pytest.raises(ConfigError, match="cannot import brokenagent: ImportError: needs the pizza database"):
        Settings(agent="brokenagent:Agent")


def test_a_factory_is_checked_when_it_makes_the_agent(user_module):
    Settings(agent="myagents:bad_factory")  # a callable: accepted until it is called
    with pytest.raises(AgentError, match=r"returned an object of type int, not a callbridge\.agents\.Agent"):
        build("myagents:bad_factory")
    with pytest.raises(AgentError, match="creating the agent failed: RuntimeError: no database"):
        build("myagents:failing_factory")


@pytest.mark.slow
def test_serve_refuses_a_bad_agent_in_one_line(tmp_path):
    """From a checkout's root, as the README says: the current directory is importable."""
    (tmp_path / "shopagent.py").write_text("class Shop:\n    pass\n\ndef make():\n    return 42\n")
    for name, expected in [
        (
            "shopagent:Shop",
            "configuration error: AGENT=shopagent:Shop: Shop is a class but not a callbridge.agents.Agent subclass",
        ),
        ("shopagent:Nope", "configuration error: AGENT=shopagent:Nope: shopagent has no Nope"),
        # a factory is called at start-up (the gateway prewarms the agent's vocabulary)
        (
            "shopagent:make",
            "configuration error: AGENT=shopagent:make returned an object of type int, not a callbridge.agents.Agent",
        ),
    ]:
        run = subprocess.run(
            [sys.executable, "-m", "callbridge", "serve", "--port", "0"],
            check=False,
            cwd=tmp_path,
            env={"PATH": "/usr/bin:/bin", "AGENT": name, "HOME": str(tmp_path)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 2, run.stderr
        assert run.stderr.strip().splitlines()[-1] == expected


def test_the_example_loads_from_the_checkout():
    load_factory.cache_clear()
    assert load_factory("examples.pizza.agent:PizzaAgent") is PizzaAgent
    assert isinstance(build("examples.pizza.agent:PizzaAgent", "CA1"), PizzaAgent)


FLAKY = textwrap.dedent(
    '''
    from callbridge.agents import Agent
    from callbridge.agents.desk_vocabulary import desk_vocabulary

    class Flaky(Agent):
        """Its first reply is a bug (a KeyError); its second answers."""

        def __init__(self):
            self.turns = 0

        def vocabulary(self):
            return desk_vocabulary()

        def greeting(self):
            return "Flaky here."

        async def reply(self, transcript, history):
            self.turns += 1
            if self.turns == 1:
                raise KeyError("a bug")
            self._ended = True
            yield f"Turn {self.turns}. Goodbye!"
    '''
)


@pytest.mark.slow
async def test_a_bug_in_your_agent_costs_the_turn_not_the_call(start_server, tmp_path, monkeypatch):
    """As docs/agents.md says: the Upstream actor is restarted with the same agent object,
    the failed turn goes unanswered, and the next one is answered."""
    (tmp_path / "flakyagent.py").write_text(FLAKY)
    monkeypatch.syspath_prepend(str(tmp_path))
    load_factory.cache_clear()
    url = await start_server(agent="flakyagent:Flaky")
    audio = [speech_8k("can I talk to someone"), speech_8k("thank you goodbye")]
    result = await SimulatedCall(url, audio=audio, polite=True, reply_timeout_s=4.0, hold_s=6).run()
    restarts = [e for e in events(result, "child_restarted") if e["child"] == "upstream"]
    assert len(restarts) == 1 and "KeyError" in restarts[0]["error"], restarts
    assert [e["text"] for e in events(result, "agent.reply")] == ["Turn 2. Goodbye!"]
    assert result.record["stop_reason"] == "the agent ended the call"
