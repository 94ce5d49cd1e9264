"""Turn discipline of the embedded back end: one turn in flight, timeouts, fallback,
retries, apology, goodbye. Real back end, real TTS, real tasks; the agents are small
real ``Agent`` subclasses whose timing the test controls, and the port records what the
back end asks of the call."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Sequence
from typing import Any

import pytest

from callbridge.actors import messages as m
from callbridge.agents.base import Agent, AgentError, Turn
from callbridge.codecs.marks import MarkName
from callbridge.config import Settings
from callbridge.upstreams.base import Conversation
from callbridge.upstreams.embedded import APOLOGY, FALLBACK, EmbeddedBackend
from callbridge.upstreams.listener import Heard


class RecordingPort:
    def __init__(self) -> None:
        self.audio_ms: dict[int, float] = {}
        self.ends: list[int] = []
        self.notes: list[tuple[str, dict[str, Any]]] = []
        self.ended: list[str] = []
        self.acts: list[tuple[str, dict[str, Any]]] = []
        self.tasks: list[asyncio.Task[Any]] = []
        self.onsets: list[float] = []

    def audio(self, utterance: int, pcm: bytes, rate: int) -> None:
        self.audio_ms[utterance] = self.audio_ms.get(utterance, 0) + len(pcm) / 2 / rate * 1000

    def utterance_end(self, utterance: int) -> None:
        self.ends.append(utterance)

    def ulaw(self, utterance: int, payload: bytes) -> None:
        raise AssertionError("the embedded back end sends PCM")

    def bound(self, provider: str, remote_id: str) -> None:
        raise AssertionError("the embedded back end binds no remote call")

    def caller_speech(self, onset: float) -> None:
        self.onsets.append(onset)

    def note(self, event: str, **data: Any) -> None:
        self.notes.append((event, data))

    def end_call(self, reason: str) -> None:
        self.ended.append(reason)

    async def act(self, kind: str, args: dict[str, Any]) -> dict[str, Any]:
        self.acts.append((kind, args))
        return {"ok": True}

    def spawn(self, coro, name):
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.append(task)
        return task

    def now(self) -> float:
        return time.monotonic()

    def events(self, name: str) -> list[dict[str, Any]]:
        return [d for e, d in self.notes if e == name]

    async def settle(self, b: EmbeddedBackend, limit_s: float = 10.0) -> None:
        """Until no turn is in progress and nothing is left to say."""
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            speaker = b.speaker
            busy = (b.turn_task is not None and not b.turn_task.done()) or b.pending
            if not busy and speaker.current is None and speaker._queue.empty():
                return
        raise AssertionError("the back end did not settle")

    def close(self) -> None:
        for task in self.tasks:
            task.cancel()


class ScriptedAgent(Agent):
    """Replies after ``delay`` s, or fails ``failures`` times first."""

    name = "scripted"

    def __init__(self, delay: float = 0.0, failures: int = 0, fail_midway: bool = False) -> None:
        self.delay = delay
        self.failures = failures
        self.fail_midway = fail_midway
        self.calls: list[str] = []
        self.active = 0
        self.max_active = 0
        self._ended = False

    def greeting(self) -> str | None:
        return ""

    async def reply(self, transcript: str, history: Sequence[Turn]) -> AsyncGenerator[str, None]:
        self.calls.append(transcript)
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            await asyncio.sleep(self.delay)
            if self.failures:
                self.failures -= 1
                raise AgentError("backend down")
            yield f"You said {transcript}. "
            if self.fail_midway:
                raise AgentError("stream broke")
            if "bye" in transcript:
                self._ended = True
                yield "Goodbye."
            else:
                yield "What else?"
        finally:
            self.active -= 1

    @property
    def ended(self) -> bool:
        return self._ended

    def state(self) -> dict[str, Any]:
        return {"calls": len(self.calls)}


def backend(agent: Agent, **settings: Any) -> tuple[EmbeddedBackend, RecordingPort]:
    port = RecordingPort()
    settings.setdefault("upstream_retries_s", "0.05,0.1,0.2")
    b = EmbeddedBackend(port, Conversation(agent=agent), Settings(greeting="", **settings))
    b.start(m.CallStarted("CA1", "MZ1"))
    return b, port


def heard(text: str) -> Heard:
    now = time.monotonic()
    return Heard(text, now - 0.5, now - 0.01, now)


async def test_finals_during_a_reply_wait_and_are_answered_once_together():
    agent = ScriptedAgent(delay=0.2)
    b, port = backend(agent)
    b.heard(heard("first"))
    await asyncio.sleep(0.05)  # the first reply is being produced
    b.heard(heard("second"))
    b.heard(heard("third"))
    b.heard(heard(""))  # noise: no turn
    await port.settle(b)
    assert agent.calls == ["first", "second third"]
    assert agent.max_active == 1  # never two replies at once
    replies = port.events("agent.reply")
    assert [r["text"] for r in replies] == ["You said first. What else?", "You said second third. What else?"]
    assert port.ends == [r["utterance"] for r in replies]  # one utterance each, in order
    history = b.conversation.history
    assert [t.role for t in history] == ["caller", "agent", "caller", "agent"]


async def test_timeout_then_fallback_and_retry_succeeds():
    agent = ScriptedAgent(delay=0.0, failures=2)
    b, port = backend(agent, agent_timeout_s=0.5)
    b.heard(heard("hello"))
    await port.settle(b)
    assert len(agent.calls) == 3
    errors = port.events("agent.error")
    assert [e["attempt"] for e in errors] == [1, 2]
    assert [d["text"] for d in port.events("fallback_synthesised")] == [FALLBACK]  # said once
    assert port.events("agent.reply")[0]["text"].startswith("You said hello")
    assert port.ended == []


@pytest.mark.slow
async def test_slow_agent_times_out_and_call_ends_after_apology():
    agent = ScriptedAgent(delay=5.0)
    b, port = backend(agent, agent_timeout_s=0.5)
    b.heard(heard("hello"))
    await port.settle(b)
    errors = port.events("agent.error")
    assert [e["error"] for e in errors] == ["timeout"] * 4
    apology = port.events("apology_synthesised")
    assert [a["text"] for a in apology] == [APOLOGY]
    # The call ends only once the apology has played (its mark comes back).
    assert port.ended == []
    b.mark_played(MarkName(apology[0]["utterance"]))
    assert port.ended == ["the agent ended the call"]


async def test_reply_broken_half_way_keeps_what_was_said():
    agent = ScriptedAgent(fail_midway=True)
    b, port = backend(agent)
    b.heard(heard("hello"))
    await port.settle(b)
    assert len(agent.calls) == 1  # no retry: it would repeat itself
    assert port.events("agent.reply")[0]["text"] == "You said hello. "
    assert port.events("fallback_synthesised") == []


async def test_goodbye_ends_the_call_after_it_played_and_stops_listening():
    agent = ScriptedAgent()
    b, port = backend(agent)
    b.heard(heard("ok bye"))
    await port.settle(b)
    reply = port.events("agent.reply")[0]
    b.mark_played(MarkName(999))
    assert port.ended == []
    b.mark_played(MarkName(reply["utterance"]))
    assert port.ended == ["the agent ended the call"]
    b.heard(heard("are you there"))  # after goodbye: no more turns
    await port.settle(b)
    assert agent.calls == ["ok bye"]


async def test_audio_sent_reports_the_turn_latencies():
    agent = ScriptedAgent()
    b, port = backend(agent)
    b.heard(heard("hello"))
    await port.settle(b)
    utterance = port.events("agent.reply")[0]["utterance"]
    b.audio_sent(utterance)
    (turn,) = port.events("turn")
    assert turn["utterance"] == utterance
    assert abs(turn["endpoint_ms"] - 490) < 1
    for key in ("stt_ms", "agent_ms", "tts_ms"):
        assert turn[key] >= 0
    assert turn["voice_to_voice_ms"] >= turn["endpoint_ms"]
    assert port.audio_ms[utterance] > 500  # the reply was synthesised


async def test_barge_in_truncates_the_history_to_what_was_heard():
    agent = ScriptedAgent()
    b, port = backend(agent)
    b.heard(heard("tell me everything about your opening hours and prices"))
    await port.settle(b)
    reply = port.events("agent.reply")[0]
    said = reply["text"]
    b.interrupted(reply["utterance"], played_ms=600)
    (truncated,) = port.events("agent.truncated")
    assert truncated["said"] == said
    heard_words = truncated["heard"].split()
    assert 0 < len(heard_words) < len(said.split())
    assert said.startswith(truncated["heard"])
    assert b.conversation.history[-1] == Turn("agent", truncated["heard"] + " —")
    # Nothing more is spoken for the cut turn.
    assert b.speaker.current is None and b.speaker._queue.empty()


async def test_cut_goodbye_does_not_hang_up():
    agent = ScriptedAgent()
    b, port = backend(agent)
    b.heard(heard("ok bye"))
    await port.settle(b)
    reply = port.events("agent.reply")[0]
    b.interrupted(reply["utterance"], played_ms=100)
    b.mark_played(MarkName(reply["utterance"]))  # even if its end mark were reported
    assert port.ended == []
