"""Whole calls on the default, neural speech engines (Whisper in the speech workers, the
Piper voice) over real sockets: the desk still books, and any English is heard."""

from __future__ import annotations

import pytest

from callbridge.sim.caller import SimulatedCall
from callbridge.testing.audio import natural_speech

from .conftest import events, rms

pytestmark = pytest.mark.slow

NEURAL = {"stt": "whisper", "tts": "piper", "speech_workers": 1}


async def test_the_desk_books_on_the_general_recogniser(start_server):
    url = await start_server(**NEURAL)
    turns = [
        natural_speech("I'd like to book an appointment on Monday at 3 PM."),
        natural_speech("Yes, book it."),
    ]
    result = await SimulatedCall(url, audio=turns, polite=True, hold_s=0.3).run()
    assert result.close_code == 1000 and result.outbound_errors == []
    finals = [e["text"] for e in events(result, "transcript.final")]
    assert "Monday at 3 PM" in finals[0], finals
    replies = events(result, "agent.reply")
    assert "Monday at 3 PM" in replies[0]["text"]
    assert replies[1]["state"]["bookings"][0]["spoken"] == "Monday at 3 PM"
    # The greeting (spoken at start-up, cached) starts at once; the voice is Piper's.
    greeting = events(result, "greeting_audio")[0]
    assert greeting["latency_ms"] < 50
    assert rms(result.agent_pcm()[: 8000 * 3]) > 300
    turns_done = events(result, "turn")
    assert len(turns_done) == 2 and all(0 < t["voice_to_voice_ms"] < 3000 for t in turns_done)


async def test_any_english_is_heard(start_server):
    url = await start_server(**NEURAL)
    said = "He was not an ill disposed young man, unless to be rather cold hearted is to be ill disposed."
    result = await SimulatedCall(url, audio=[natural_speech(said)], polite=True, hold_s=0.3).run()
    final = events(result, "transcript.final")[0]["text"].lower()
    for word in ("ill", "disposed", "young", "man", "cold", "hearted"):
        assert word in final, final
