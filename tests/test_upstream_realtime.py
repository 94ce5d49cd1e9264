"""OpenAI Realtime behind the Upstream interface: the real gateway, the simulator playing
Twilio, and a local server speaking the Realtime protocol (tests/remote_fakes.py)."""

from __future__ import annotations

import asyncio
import base64

import aiohttp
import numpy as np
import orjson

from callbridge.codecs.g711 import ulaw_encode
from callbridge.sim.caller import SimulatedCall
from callbridge.upstreams.openai_realtime import append_audio, realtime_url, session_update, truncate

from .conftest import events, rms, speech_8k
from .remote_fakes import FakeRealtime

FAST_RETRIES = "0.05,0.1,0.2"


async def realtime_server(start_server, fake: FakeRealtime, **settings):
    return await start_server(
        upstream="openai-realtime", openai_realtime_url=fake.url, openai_api_key="sk-test",
        upstream_retries_s=FAST_RETRIES, upstream_timeout_s=3.0, **settings,
    )


# -- the protocol, pure ------------------------------------------------------------------------


def test_protocol_messages():
    assert realtime_url("wss://api.openai.com/v1/realtime", "gpt-realtime") == (
        "wss://api.openai.com/v1/realtime?model=gpt-realtime"
    )
    assert realtime_url("ws://h/v1/realtime?model=x", "y").endswith("model=x")
    update = session_update("m", "marin", 500)["session"]
    assert update["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    assert update["audio"]["output"]["format"] == {"type": "audio/pcmu"}
    assert update["audio"]["input"]["turn_detection"]["type"] == "server_vad"
    frame = bytes(range(160))
    event = orjson.loads(append_audio(frame))
    assert event == {"type": "input_audio_buffer.append", "audio": base64.b64encode(frame).decode()}
    assert truncate("item_1", 1234) == {
        "type": "conversation.item.truncate", "item_id": "item_1", "content_index": 0, "audio_end_ms": 1234,
    }


# -- calls ---------------------------------------------------------------------------------------


async def test_conversation_mulaw_end_to_end(start_server):
    fake = FakeRealtime()
    async with fake.running():
        url = await realtime_server(start_server, fake)
        hello = speech_8k("I would like to book an appointment on Monday.")
        result = await SimulatedCall(url, audio=[hello], polite=True, hold_s=2.5).run()

    assert result.close_code == 1000 and result.outbound_errors == []
    (session,) = fake.sessions
    assert session.headers["Authorization"] == "Bearer sk-test"
    assert "model=gpt-realtime" in session.headers["query"]
    update = next(e for e in session.events if e["type"] == "session.update")
    assert update["session"]["audio"]["input"]["format"]["type"] == "audio/pcmu"
    assert any(e["type"] == "response.create" for e in session.events)  # the greeting
    # No transcoding: the model got exactly the caller's mu-law bytes, in order.
    sent = bytes(result.caller_audio)
    got = bytes(session.audio)
    assert len(got) >= len(sent) - 160 * 10
    assert got == sent[: len(got)]
    # Its replies (greeting + answer) were played, bit-exact mu-law tone.
    names = result.end_marks_echoed()
    assert names[:2] == ["u1", "u2"]
    expected = ulaw_encode(np.asarray((4000 * np.sin(2 * np.pi * 440 * np.arange(800) / 8000)), np.int16))
    assert expected[:800] in bytes(result.agent_audio)
    assert rms(result.agent_pcm()) > 500
    finals = events(result, "transcript.final")
    replies = events(result, "agent.reply")
    assert finals and finals[0]["source"] == "openai-realtime"
    assert [r["text"] for r in replies][:2] == ["Hello from the fake model.", "Here is my answer."]
    ready = events(result, "upstream.ready")
    assert len(ready) == 1 and ready[0]["session"] == 1
    assert events(result, "upstream.closed"), "the socket is closed when the call ends"
    await asyncio.wait_for(session.closed.wait(), 3)


async def test_slow_cold_start_loses_nothing(start_server):
    fake = FakeRealtime()
    fake.ready_delay_s = 0.6
    async with fake.running():
        url = await realtime_server(start_server, fake)
        hello = speech_8k("Hello, I need some help.")
        result = await SimulatedCall(url, audio=[hello], gap_s=0.0, hold_s=2.0).run()
    (session,) = fake.sessions
    sent, got = bytes(result.caller_audio), bytes(session.audio)
    # The caller spoke from the very first frame, while the model was not ready: all of
    # it arrived, in order, from the first byte.
    assert got[: 8 * 400] == sent[: 8 * 400]
    assert got == sent[: len(got)] and len(got) >= len(sent) - 160 * 10
    (ready,) = events(result, "upstream.ready")
    assert ready["held_ms"] >= 300  # audio held during the cold start, then flushed
    assert events(result, "transcript.final")


async def test_barge_in_truncates_to_what_was_heard(start_server):
    fake = FakeRealtime()
    fake.greeting_s = 5.0
    async with fake.running():
        url = await realtime_server(start_server, fake)
        wait = speech_8k("Wait, I want to cancel my appointment.")
        result = await SimulatedCall(url, audio=[wait], gap_s=1.5, hold_s=2.5).run()

    (barge,) = events(result, "barge_in")
    assert len(result.clears) == 1
    (session,) = fake.sessions
    (cut,) = [e for e in session.events if e["type"] == "conversation.item.truncate"]
    assert cut["item_id"].startswith("item_")
    # What the caller really heard of the greeting: frames played before the clear.
    audio = np.frombuffer(bytes(result.agent_audio), np.uint8).reshape(-1, 160)
    loud = np.nonzero((audio != 0xFF).any(axis=1))[0]
    first_tick = int(loud[0])
    clear_tick = int(result.clears[0] / 0.020)
    heard_ms = (clear_tick - first_tick) * 20
    assert abs(cut["audio_end_ms"] - heard_ms) <= 200 + 40, (cut, heard_ms)
    assert cut["audio_end_ms"] == barge["heard_ms"]
    (noted,) = events(result, "agent.truncated")
    assert noted["audio_end_ms"] == cut["audio_end_ms"]
    # Nothing of the cut greeting after the clear, and the answer still came.
    assert events(result, "agent.reply")[-1]["text"] == "Here is my answer."


async def test_drop_and_reconnect_mid_call(start_server):
    fake = FakeRealtime()
    fake.drop_after_s = {1: 1.5}
    async with fake.running():
        url = await realtime_server(start_server, fake)
        hello = speech_8k("Can I book for Monday?")
        result = await SimulatedCall(url, audio=[hello], gap_s=2.5, hold_s=2.5).run()

    assert len(fake.sessions) == 2
    names = result.timeline_events()
    for expected in ("upstream.error", "upstream.retry", "fallback_audio"):
        assert expected in names, names
    ready = events(result, "upstream.ready")
    assert [r["session"] for r in ready] == [1, 2]
    second = fake.sessions[1]
    # The new session got the conversation so far, then the caller's turn, and answered.
    context = [e for e in second.events if e["type"] == "conversation.item.create"]
    assert context and context[0]["item"]["role"] == "assistant"
    assert not any(e["type"] == "response.create" for e in second.events)  # no second greeting
    assert events(result, "transcript.final")
    assert events(result, "agent.reply")[-1]["text"] == "Here is my answer."
    assert result.close_code == 1000


async def test_reconnect_exhausted_apologises_and_hangs_up(start_server):
    fake = FakeRealtime()
    fake.drop_after_s = {1: 1.0}
    fake.refuse_from = 2
    async with fake.running():
        url = await realtime_server(start_server, fake)
        result = await SimulatedCall(url, hold_s=12.0, max_s=15.0).run()
    names = result.timeline_events()
    assert names.count("upstream.error") == 4  # the drop, then three refused reconnects
    assert "upstream.gave_up" in names and "apology_synthesised" in names
    assert "call_ending" in names
    assert result.close_code == 1000
    assert fake.refused == 3


async def test_agent_ends_the_call_with_the_tool(start_server):
    fake = FakeRealtime()
    fake.end_call_after_replies = 2
    async with fake.running():
        url = await realtime_server(start_server, fake)
        bye = speech_8k("That is all, goodbye.")
        result = await SimulatedCall(url, audio=[bye], polite=True, hold_s=6.0).run()
    names = result.timeline_events()
    assert "upstream.ended" in names and "call_ending" in names
    ending = events(result, "call_ending")[0]
    assert ending["t_ms"] >= result.marks_echoed[-1][0] * 1000 - 50  # after the goodbye played


async def test_each_call_has_its_own_session_nothing_carried_over(start_server):
    fake = FakeRealtime()
    async with fake.running():
        url = await realtime_server(start_server, fake)
        first = await SimulatedCall(url, audio=[speech_8k("Book Monday.")], polite=True, hold_s=1.0).run()
        second = await SimulatedCall(url, hold_s=1.5).run()
        for session in fake.sessions:
            await asyncio.wait_for(session.closed.wait(), 3)
    assert len(fake.sessions) == 2
    # The second call is greeted afresh, gets no context from the first, starts at u1.
    second_events = [e["type"] for e in fake.sessions[1].events]
    assert "response.create" in second_events and "conversation.item.create" not in second_events
    assert second.end_marks_echoed()[:1] == ["u1"]
    assert not events(second, "transcript.final") and events(first, "transcript.final")


async def test_upstream_actor_restart_resumes_the_conversation(start_server):
    fake = FakeRealtime()
    async with fake.running():
        url = await realtime_server(start_server, fake, fault_injection=True)
        call = SimulatedCall(url, audio=[speech_8k("Book Monday.")], polite=True, hold_s=3.0)
        running = asyncio.ensure_future(call.run())
        for _ in range(500):
            if fake.replies >= 2:
                break
            await asyncio.sleep(0.02)
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{url}/calls/{call.call_sid}/fault?child=upstream") as resp:
                assert resp.status == 200
        result = await running
        await asyncio.wait_for(fake.sessions[0].closed.wait(), 3)
    assert "child_restarted" in result.timeline_events()
    assert len(fake.sessions) == 2
    second = [e["type"] for e in fake.sessions[1].events]
    assert "conversation.item.create" in second and "response.create" not in second
    roles = [e["item"]["role"] for e in fake.sessions[1].events if e["type"] == "conversation.item.create"]
    assert roles[:3] == ["assistant", "user", "assistant"]
