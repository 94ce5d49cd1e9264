"""Whole calls over real sockets: the simulator plays Twilio against a real gateway."""

from __future__ import annotations

import asyncio
import logging
import os

import aiohttp
import numpy as np
import pytest

from callbridge.cli import bundled_turns
from callbridge.sim.caller import SimulatedCall
from callbridge.sim.wavio import read_wav

from .conftest import rms, speech_8k


@pytest.mark.slow
async def test_conversation_books_an_appointment_both_sides_recorded(start_server):
    url = await start_server()
    turns = [read_wav(path) for path in bundled_turns()[:2]]  # the demo's caller lines
    result = await SimulatedCall(url, audio=turns, polite=True, hold_s=0.3).run()

    assert result.close_code == 1000
    assert result.outbound_errors == []
    # Every outbound payload is exactly one 20 ms mu-law frame.
    assert result.media_sizes and set(result.media_sizes) == {160}
    agent = result.agent_pcm()
    assert rms(agent[: 8000 * 3]) > 300, "the greeting should be audible speech"
    # Both sides recorded on the same time base.
    assert len(result.caller_audio) == len(result.agent_audio)
    assert rms(result.caller_pcm()) > 100

    record = result.record
    assert record is not None and record["state"] == "ended"
    timeline = record["timeline"]
    events = result.timeline_events()
    for expected in (
        "started",
        "greeting_audio",
        "first_audio_sent",
        "mark_played",
        "speech_started",
        "transcript.partial",
        "transcript.final",
        "agent.reply",
        "turn",
        "stopped",
    ):
        assert expected in events, f"{expected} missing from {events}"
    assert events.index("mark_played") < events.index("speech_started")  # polite caller
    # It answers as soon as the agent stops: a normal turn, not a barge-in (nothing to clear).
    assert "barge_in" not in events and result.clears == [] and "quick_answer" in events
    finals = [e["text"] for e in timeline if e["event"] == "transcript.final"]
    assert len(finals) == 2
    for word in ("book", "appointment", "monday", "three"):
        assert word in finals[0].split()
    replies = [e for e in timeline if e["event"] == "agent.reply"]
    assert "Monday at 3 PM" in replies[0]["text"]
    assert replies[1]["state"]["bookings"][0]["spoken"] == "Monday at 3 PM"
    turns_done = [e for e in timeline if e["event"] == "turn"]
    assert len(turns_done) == 2 and all(t["voice_to_voice_ms"] > 0 for t in turns_done)
    stats = record["stats"]
    assert stats["frames_in"] == len(result.caller_audio) // 160
    assert stats["frames_out"] == len(result.media_sizes)
    assert stats["marks_played"] == stats["marks_sent"] > 3  # progress marks every 200 ms
    assert result.end_marks_echoed() == ["u1", "u2", "u3"]
    # The greeting mark came back once its audio had played: no earlier than its length.
    greeting_ms = next(e for e in timeline if e["event"] == "greeting_synthesised")["audio_ms"]
    u1_echo = next(t for t, name in result.marks_echoed if name == "u1")
    assert u1_echo * 1000 >= greeting_ms - 40
    # The reply is audible in the recording after the caller's first turn.
    reply_at = next(e for e in timeline if e["event"] == "turn")["t_ms"] / 1000
    assert rms(agent[int(reply_at * 8000) : int((reply_at + 1.5) * 8000)]) > 300


@pytest.mark.slow
async def test_agent_says_goodbye_and_hangs_up(start_server, caplog):
    caplog.set_level(logging.INFO, logger="callbridge")
    url = await start_server(greeting="Hi.")
    bye = read_wav(bundled_turns()[2])
    result = await SimulatedCall(url, audio=[bye], polite=True, hold_s=5.0).run()
    events = result.timeline_events()
    assert "call_ending" in events
    assert result.record["stop_reason"] == "the agent ended the call"
    ending = next(e for e in result.record["timeline"] if e["event"] == "call_ending")
    last_mark = result.marks_echoed[-1][0] * 1000
    assert ending["t_ms"] >= last_mark - 50  # only after the goodbye played
    # A call that ends as it should is not a warning.
    ends = [r.levelname for r in caplog.records if "ending: the agent ended the call" in r.getMessage()]
    assert ends == ["INFO"]


@pytest.mark.slow
async def test_outbound_audio_is_paced_not_burst(start_server):
    url = await start_server(outbound_lead_ms=200)
    result = await SimulatedCall(url, hold_s=2.5).run()
    arrivals = np.array(result.media_received)
    assert len(arrivals) > 100
    # After the initial lead (10 frames), frames arrive at real-time pace: 2.0 s of audio
    # cannot arrive in much less than ~1.8 s.
    span = arrivals[110] - arrivals[10]
    assert span > 1.6, f"100 frames arrived within {span:.2f} s: bursty, not paced"


@pytest.mark.slow
async def test_dtmf_gets_a_spoken_reply(start_server):
    url = await start_server(greeting="Hi.")
    result = await SimulatedCall(url, dtmf="7", hold_s=1.5).run()
    events = result.timeline_events()
    assert "dtmf" in events and "dtmf_reply_audio" in events
    assert result.end_marks_echoed() == ["u1", "u2"]
    reply = next(e for e in result.record["timeline"] if e["event"] == "dtmf_reply_synthesised")
    assert reply["text"] == "You pressed 7."


@pytest.mark.slow
async def test_crash_in_each_child_is_restarted_and_audio_keeps_flowing(start_server):
    url = await start_server(fault_injection=True)
    caller = speech_8k("One two three four five six seven eight nine ten.")
    call = SimulatedCall(url, audio=caller, dtmf="5", hold_s=1.5)
    task = asyncio.create_task(call.run())
    await call.started.wait()
    roles = ["codec", "jitter", "bargein", "upstream"]
    async with aiohttp.ClientSession() as http:
        await asyncio.sleep(0.5)  # greeting playing, caller audio flowing
        for role in roles:
            async with http.post(f"{url}/calls/{call.call_sid}/fault", params={"child": role}) as resp:
                assert resp.status == 200, await resp.text()
            await asyncio.sleep(0.1)
        async with http.get(f"{url}/calls/{call.call_sid}") as resp:
            during = await resp.json()
    faults_done_at = 0.5 + 0.1 * len(roles)
    result = await task

    record = result.record
    assert result.close_code == 1000
    assert record["stats"]["restarts"] == {"codec": 1, "jitter": 1, "upstream": 1, "bargein": 1}
    restarted = [e["child"] for e in record["timeline"] if e["event"] == "child_restarted"]
    assert sorted(restarted) == sorted(roles)
    # Inbound: every caller frame reached the call, before and after the crashes.
    assert record["stats"]["frames_in"] == len(result.caller_audio) // 160
    assert record["stats"]["frames_in"] > during["stats"]["frames_in"] + 50
    # Outbound: the agent still speaks after the crashes (the DTMF reply comes from a
    # restarted Upstream through a restarted Codec).
    late = [t for t in result.media_received if t > faults_done_at + 0.5]
    assert len(late) > 20
    assert "dtmf_reply_audio" in result.timeline_events()
    tail = result.agent_pcm()[int(8000 * (faults_done_at + 0.5)) :]
    assert rms(tail) > 100


async def test_a_child_that_keeps_failing_ends_the_call_cleanly(start_server, caplog):
    url = await start_server(fault_injection=True)
    call = SimulatedCall(url, hold_s=4.0)
    task = asyncio.create_task(call.run())
    await call.started.wait()
    async with aiohttp.ClientSession() as http:
        for _ in range(6):  # the policy allows 5 restarts within 30 s
            async with http.post(f"{url}/calls/{call.call_sid}/fault", params={"child": "codec"}) as resp:
                assert resp.status == 200
    result = await task
    events = result.timeline_events()
    assert events.count("child_restarted") == 5
    assert "child_gave_up" in events
    assert result.close_code == 1000
    assert "codec failed" in result.record["stop_reason"]
    ends = [r.levelname for r in caplog.records if "ending: codec failed" in r.getMessage()]
    assert ends == ["WARNING"]


@pytest.mark.slow
async def test_health_and_call_listing(start_server):
    url = await start_server()
    call = SimulatedCall(url, hold_s=1.0)
    task = asyncio.create_task(call.run())
    await call.started.wait()
    await asyncio.sleep(0.2)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{url}/healthz") as resp:
            health = await resp.json()
            assert {k: health[k] for k in ("status", "calls", "sockets", "pid")} == {
                "status": "ok",
                "calls": 1,
                "sockets": 1,
                "pid": os.getpid(),
            }
            assert health["tasks"] > 0
        async with http.get(f"{url}/calls") as resp:
            listing = await resp.json()
        assert [c["callSid"] for c in listing["calls"]] == [call.call_sid]
        await task
        async with http.get(f"{url}/healthz") as resp:
            health = await resp.json()
            assert (health["status"], health["calls"], health["sockets"]) == ("ok", 0, 0)
        async with http.get(f"{url}/calls/CAnope") as resp:
            assert resp.status == 404
        async with http.post(f"{url}/calls/{call.call_sid}/fault", params={"child": "codec"}) as resp:
            assert resp.status in (404, 405)  # fault injection is off by default


@pytest.mark.slow
async def test_concurrent_calls_are_independent(start_server):
    url = await start_server()
    calls = [SimulatedCall(url, dtmf=d, hold_s=1.2) for d in "123"]
    results = await asyncio.gather(*(c.run() for c in calls))
    for digit, result in zip("123", results, strict=True):
        replies = [e["text"] for e in result.record["timeline"] if e["event"] == "dtmf_reply_synthesised"]
        assert replies == [f"You pressed {digit}."]
        assert result.close_code == 1000
