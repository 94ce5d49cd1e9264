"""Barge-in over real sockets: the simulator talks over the agent like a caller would."""

from __future__ import annotations

import numpy as np

from callbridge.codecs.marks import MarkName
from callbridge.sim.caller import SimulatedCall

from .conftest import events, speech_8k

LONG_GREETING = (
    "Hello, and thanks for calling the appointment desk. I can book, move or cancel an "
    "appointment for you, and tell you our opening hours. How can I help you today?"
)


SR = 8000


def _burst(
    out: np.ndarray,
    rng: np.random.Generator,
    at_s: float,
    dur_s: float,
    level: float,
    shape: np.ndarray | None = None,
) -> None:
    """Add a decaying noise burst (optionally filtered by ``shape``) to ``out`` at ``at_s``."""
    n = int(dur_s * SR)
    x = rng.normal(0, level, n) * np.exp(-np.arange(n) / (0.3 * n))
    if shape is not None:
        x = np.convolve(x, shape, mode="same")
    out[int(at_s * SR) : int(at_s * SR) + n] += x


def _add(out: np.ndarray, at_s: float, x: np.ndarray) -> None:
    out[int(at_s * SR) : int(at_s * SR) + len(x)] += x


def _bark(freq: float) -> np.ndarray:
    """A harmonic burst of 120 ms."""
    t = np.arange(int(0.12 * SR)) / SR
    return 6000 * np.sign(np.sin(2 * np.pi * freq * t)) * np.exp(-t / 0.05)


def _breath(rng: np.random.Generator, seconds: float, level: float, smooth: int) -> np.ndarray:
    """Slowly modulated, low-passed noise."""
    n = int(seconds * SR)
    breath = np.convolve(rng.normal(0, level, n), np.ones(smooth) / smooth, mode="same")
    return breath * (0.5 + 0.5 * np.sin(np.linspace(0, 4 * np.pi, n)))


def noises_8k(seed: int = 7) -> np.ndarray:
    """A door slam, a cough, two dog barks and breathing, with pauses: 3 s at 8 kHz."""
    rng = np.random.default_rng(seed)
    out = np.zeros(3 * SR)
    _burst(out, rng, 0.1, 0.06, 12000)  # door slam
    _burst(out, rng, 0.6, 0.15, 6000, np.hanning(9) / 2)  # cough
    for at in (1.1, 1.4):  # barks
        _add(out, at, _bark(450))
    _add(out, 1.7, _breath(rng, 1.2, 400, 25))  # breathing: quiet
    return np.clip(out, -32768, 32767).astype(np.int16)


def hard_noises_8k(seed: int = 7) -> np.ndarray:
    """Noises close together, so that their sound runs on for longer than MIN_SPEECH_MS
    (what the speech-onset back-dating must not be fooled by): a door slam with a cough
    40 ms after it, two barks, 0.6 s of typing with a cough straight after it, then loud
    breathing 40 ms after that cough: 4 s at 8 kHz."""
    rng = np.random.default_rng(seed)
    out = np.zeros(4 * SR)
    _burst(out, rng, 0.1, 0.06, 12000)  # door slam
    _burst(out, rng, 0.2, 0.15, 6000, np.hanning(9) / 2)  # a cough 40 ms after it
    for at in (0.8, 1.05):  # two barks, 130 ms apart
        _add(out, at, _bark(400 + 100 * rng.random()))
    for k in range(14):  # typing: a click every 45 ms for 0.6 s
        _burst(out, rng, 1.7 + 0.045 * k, 0.008, 9000)
    _burst(out, rng, 2.35, 0.15, 6000, np.hanning(9) / 2)  # a cough straight after it
    _add(out, 2.54, _breath(rng, 1.0, 1500, 15))  # loud breathing, 40 ms after the cough
    return np.clip(out, -32768, 32767).astype(np.int16)


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


async def test_noise_over_agent_speech_is_not_a_barge_in(start_server):
    url = await start_server(greeting=LONG_GREETING)
    result = await SimulatedCall(url, audio=[noises_8k()], gap_s=0.5, hold_s=0.5).run()
    assert result.clears == []
    assert events(result, "barge_in") == []
    assert events(result, "transcript.final") == []


async def test_noises_back_to_back_are_not_a_barge_in(start_server):
    url = await start_server(greeting=LONG_GREETING)
    noise = (hard_noises_8k(3).astype(np.float32) * 0.75).astype(np.int16)
    result = await SimulatedCall(url, audio=[noise], gap_s=0.5, hold_s=0.5).run()
    assert result.clears == []
    assert events(result, "barge_in") == []


async def test_agent_echo_is_not_a_barge_in(start_server):
    url = await start_server(greeting=LONG_GREETING)
    silence = np.zeros(8000 * 6, np.int16)
    result = await SimulatedCall(url, audio=[silence], gap_s=0.1, hold_s=0.5, echo_db=-22).run()
    assert result.clears == []
    assert events(result, "barge_in") == []
    assert events(result, "agent.reply") == []  # the agent did not answer itself


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
