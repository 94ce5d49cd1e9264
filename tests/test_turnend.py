"""Ending turns on meaning: the verdict on a pause's words (``speech.turnend``), the desk's
opinion, the recogniser's hypothesis mid-utterance, and the listener acting on them."""

from __future__ import annotations

import numpy as np
import pytest

from callbridge.agents.desk import DeskAgent
from callbridge.config import Settings
from callbridge.sim.caller import SimulatedCall
from callbridge.speech.turnend import judge

from .conftest import events, speech_8k


@pytest.mark.parametrize(
    "text",
    [
        "i would like to book an appointment on",
        "can you move my appointment to",
        "i need to cancel my appointment and",
        "my appointment is at",
        "um",
        "I'd like to book, um,",
        "I'd like to book the...",
    ],
)
def test_words_that_cannot_end_a_request_mean_unfinished(text):
    assert judge(text) == "unfinished"
    assert judge(text, lambda _: True) == "unfinished"  # the words win over the agent


@pytest.mark.parametrize("text", ["Book me for Monday.", "What are your hours?", "Wait!"])
def test_final_punctuation_means_complete(text):
    assert judge(text) == "complete"


def test_otherwise_the_agent_decides_then_the_silence():
    assert judge("book me for monday") == "unknown"
    assert judge("book me for monday", lambda _: True) == "complete"
    assert judge("book me for monday", lambda _: False) == "unfinished"
    assert judge("book me for monday", lambda _: None) == "unknown"
    assert judge("   ") == "unknown"


@pytest.mark.parametrize(
    ("text", "opinion"),
    [
        ("i would like to book an appointment on monday at three pm", True),
        ("what are your hours", True),
        ("i need to cancel my appointment", True),
        ("do you have anything free tomorrow afternoon", True),
        ("monday at ten", True),
        ("i would like to book an appointment", None),  # the day may follow
        ("i would like to book an appointment on monday", None),  # the time may follow
        ("yes", None),  # answers and courtesies often go on: "Yes, book it."
        ("wait", None),
        ("that's all thank you", None),
        ("", None),
    ],
)
def test_the_desk_knows_a_whole_request(text, opinion):
    assert DeskAgent().turn_complete(text) is opinion


# -- in a call: the embedded listener acting on the verdicts -------------------------------


@pytest.mark.slow
async def test_a_complete_request_ends_its_turn_before_the_silence_would(start_server):
    url = await start_server(greeting="Hi.")
    said = speech_8k("I would like to book an appointment on Monday at three pm.")
    result = await SimulatedCall(url, audio=[said], polite=True, hold_s=0.5).run()
    (final,) = events(result, "transcript.final")
    assert {"book", "monday", "three"} <= set(final["text"].split())
    assert "complete" in [e["verdict"] for e in events(result, "turn.judged")]
    (turn,) = events(result, "turn")
    assert turn["endpoint_ms"] < Settings().speech.endpoint_silence_ms  # the pause's words ended it


@pytest.mark.slow
async def test_a_request_that_pauses_where_it_is_unfinished_is_one_turn(start_server):
    """ "...on [0.7 s] Monday": silence alone (500 ms) would have cut it in two."""
    url = await start_server(greeting="Hi.")
    pause = np.zeros(int(0.7 * 8000), np.int16)
    said = np.concatenate(
        [speech_8k("I would like to book an appointment on"), pause, speech_8k("Monday at three pm.")]
    )
    result = await SimulatedCall(url, audio=[said], polite=True, hold_s=0.5).run()
    (final,) = events(result, "transcript.final")
    assert {"book", "monday", "three"} <= set(final["text"].split())
    assert "unfinished" in [e["verdict"] for e in events(result, "turn.judged")]
