"""Barge-in over real sockets: the simulator talks over the agent like a caller would."""

from __future__ import annotations

import numpy as np
import pytest

from callbridge.codecs.marks import MarkName
from callbridge.sim.caller import SimulatedCall
from callbridge.testing.audio import LONG_GREETING, hard_noises_8k, noises_8k

from .conftest import events, speech_8k


@pytest.mark.slow
@pytest.mark.alone
async def test_caller_talks_over_the_greeting(start_server):
    url = await start_server(greeting=LONG_GREETING)
    wait = speech_8k("Wait, I want to cancel my appointment.")
    result = await SimulatedCall(url, audio=[wait], gap_s=1.0, hold_s=2.5).run()

    (barge,) = events(result, "barge_in")
    assert barge["utterance"] == 1
    assert 600 <= barge["heard_ms"] <= 1600  # the caller started at 1.0 s (+ lead, marks)
    assert barge["detection_ms"] < 400
    assert barge["dropped_s"] > 0
    assert len(result.clears) == 1
    clear_at = result.clears[0]
    # No stale agent audio after the clear: the next audio is the new reply, which comes
    # only after the caller's turn was transcribed.
    final = events(result, "transcript.final")[0]
    assert "cancel" in final["text"]
    after = [t for t in result.media_received if t > clear_at]
    assert after and min(after) * 1000 >= final["t_ms"] - 50
    reply = events(result, "agent.reply")
    assert reply and reply[0]["t_ms"] > barge["t_ms"]
    # Marks echoed because of the clear are not taken as played.
    played = [e["name"] for e in events(result, "mark_played")]
    assert "u1" not in played
    assert result.close_code == 1000


@pytest.mark.slow
@pytest.mark.alone
async def test_noise_over_agent_speech_is_not_a_barge_in(start_server):
    url = await start_server(greeting=LONG_GREETING)
    result = await SimulatedCall(url, audio=[noises_8k()], gap_s=0.5, hold_s=0.5).run()
    assert result.clears == []
    assert events(result, "barge_in") == []
    assert events(result, "transcript.final") == []


@pytest.mark.slow
@pytest.mark.alone
async def test_noises_back_to_back_are_not_a_barge_in(start_server):
    url = await start_server(greeting=LONG_GREETING)
    noise = (hard_noises_8k(3).astype(np.float32) * 0.75).astype(np.int16)
    result = await SimulatedCall(url, audio=[noise], gap_s=0.5, hold_s=0.5).run()
    assert result.clears == []
    assert events(result, "barge_in") == []


@pytest.mark.slow
@pytest.mark.alone
async def test_agent_echo_is_not_a_barge_in(start_server):
    url = await start_server(greeting=LONG_GREETING)
    silence = np.zeros(8000 * 6, np.int16)
    result = await SimulatedCall(url, audio=[silence], gap_s=0.1, hold_s=0.5, echo_db=-22).run()
    assert result.clears == []
    assert events(result, "barge_in") == []
    assert events(result, "agent.reply") == []  # the agent did not answer itself


@pytest.mark.slow
@pytest.mark.alone
async def test_repeated_interruptions_one_barge_in_each(start_server):
    url = await start_server(greeting=LONG_GREETING)
    wait = speech_8k("Wait.")
    turns = [wait, wait, wait]
    result = await SimulatedCall(url, audio=turns, gap_s=0.9, hold_s=3.0).run()
    barges = events(result, "barge_in")
    assert barges, "the first wait must cut the greeting"
    utterances = [b["utterance"] for b in barges]
    assert utterances == sorted(set(utterances))  # never two barge-ins for one utterance
    assert len(result.clears) == len(barges)
    assert result.close_code == 1000 and result.outbound_errors == []
    # The call is still consistent: every mark Twilio echoed as played was really played.
    cut = set(utterances)
    played = [e["name"] for e in events(result, "mark_played")]
    assert all(mark is not None and mark.utterance not in cut for mark in map(MarkName.parse, played))
