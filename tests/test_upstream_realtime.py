"""OpenAI Realtime behind the Upstream interface: the real gateway, the simulator playing
Twilio, and a local server speaking the Realtime protocol (tests/remote_fakes.py)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy

import aiohttp
import numpy as np
import orjson
import pytest

from callbridge.codecs.g711 import ulaw_encode
from callbridge.sim.caller import SimulatedCall
from callbridge.upstreams.openai_realtime import (
    append_audio,
    greet,
    padding_in_force,
    realtime_url,
    session_update,
    speech_onset_ms,
    truncate,
)

from .conftest import events, inject_fault, rms, speech_8k, until
from .remote_fakes import START_MS, FakeRealtime, tone

FAST_RETRIES = "0.05,0.1,0.2"


async def realtime_server(start_server, fake: FakeRealtime, **settings):
    return await start_server(
        upstream="openai-realtime",
        openai_realtime_url=fake.url,
        openai_api_key="sk-test",
        upstream_retries_s=FAST_RETRIES,
        upstream_timeout_s=3.0,
        **settings,
    )


def greetings(session) -> list[dict]:
    return [e for e in session.events if e["type"] == "response.create" and "Greet" in str(e.get("response"))]


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
        "type": "conversation.item.truncate",
        "item_id": "item_1",
        "content_index": 0,
        "audio_end_ms": 1234,
    }


# -- calls ---------------------------------------------------------------------------------------


@pytest.mark.slow
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
    assert greetings(session)
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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
    assert not greetings(second)  # no second greeting
    assert events(result, "transcript.final")
    assert events(result, "agent.reply")[-1]["text"] == "Here is my answer."
    assert result.close_code == 1000


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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
    assert greetings(fake.sessions[1]) and "conversation.item.create" not in second_events
    assert second.end_marks_echoed()[:1] == ["u1"]
    assert not events(second, "transcript.final") and events(first, "transcript.final")


@pytest.mark.slow
async def test_upstream_actor_restart_resumes_the_conversation(start_server):
    fake = FakeRealtime()
    async with fake.running():
        url = await realtime_server(start_server, fake, fault_injection=True)
        call = SimulatedCall(url, audio=[speech_8k("Book Monday.")], polite=True, hold_s=3.0)
        running = asyncio.ensure_future(call.run())
        await until(lambda: fake.replies >= 2)
        await inject_fault(url, call.call_sid, "upstream")
        result = await running
        await asyncio.wait_for(fake.sessions[0].closed.wait(), 3)
    assert "child_restarted" in result.timeline_events()
    assert len(fake.sessions) == 2
    second = [e["type"] for e in fake.sessions[1].events]
    assert "conversation.item.create" in second and not greetings(fake.sessions[1])
    roles = [e["item"]["role"] for e in fake.sessions[1].events if e["type"] == "conversation.item.create"]
    assert roles[:3] == ["assistant", "user", "assistant"]


# -- the fake refuses what the API refuses ---------------------------------------------------


@contextlib.asynccontextmanager
async def realtime_socket(
    fake: FakeRealtime, key: str | None = "sk-test", query: str = "?model=gpt-realtime"
):
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    async with aiohttp.ClientSession() as http, http.ws_connect(fake.url + query, headers=headers) as ws:
        created = await ws.receive_json(timeout=3)
        assert created["type"] == "session.created"
        yield ws


async def answer(ws, event: dict, until: str = "") -> dict:
    """Send ``event``; the next event that is ``until`` or an error."""
    await ws.send_json(event)
    while True:
        got = await ws.receive_json(timeout=3)
        if got["type"] in (until, "error"):
            return got


GOOD_UPDATE = session_update("gpt-realtime", "marin", 500)


@pytest.mark.parametrize(
    "key, query, status",
    [(None, "?model=gpt-realtime", 401), ("sk-wrong", "?model=gpt-realtime", 401), ("sk-test", "", 400)],
)
async def test_fake_refuses_the_handshake_without_the_key_or_model(key, query, status):
    fake = FakeRealtime()
    async with fake.running():
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            async with realtime_socket(fake, key, query):
                pass
    assert refused.value.status == status
    assert not fake.sessions


def _update_with(path: str, value) -> dict:
    update = copy.deepcopy(GOOD_UPDATE)
    *parents, last = path.split(".")
    node = update["session"]
    for name in parents:
        node = node[name]
    node[last] = value
    return update


@pytest.mark.parametrize(
    "path, value, param",
    [
        ("colour", "blue", "session.colour"),
        ("type", "transcription", "session.type"),
        ("audio.input.format", {"type": "g711_ulaw"}, "session.audio.input.format.type"),
        ("audio.input.format", "g711_ulaw", "session.audio.input.format"),
        ("audio.output.format", {"type": "audio/pcm", "rate": 16000}, "session.audio.output.format.rate"),
        ("audio.input.turn_detection.silence", 500, "session.audio.input.turn_detection.silence"),
        ("audio.input.turn_detection.type", "vad", "session.audio.input.turn_detection.type"),
        ("audio.input.turn_detection.threshold", 2, "session.audio.input.turn_detection.threshold"),
        (
            "audio.input.turn_detection.interrupt_response",
            "no",
            "session.audio.input.turn_detection.interrupt_response",
        ),
        (
            "audio.input.turn_detection.prefix_padding_ms",
            -1,
            "session.audio.input.turn_detection.prefix_padding_ms",
        ),
        ("audio.input.transcription.engine", "x", "session.audio.input.transcription.engine"),
        ("output_modalities", ["audio", "text"], "session.output_modalities"),
    ],
)
async def test_fake_refuses_a_bad_session_update(path, value, param):
    fake = FakeRealtime()
    async with fake.running(), realtime_socket(fake) as ws:
        got = await answer(ws, _update_with(path, value), "session.updated")
        assert got["type"] == "error" and got["error"]["param"] == param, got
        assert got["error"]["type"] == "invalid_request_error"
        assert (await answer(ws, GOOD_UPDATE, "session.updated"))["type"] == "session.updated"


async def test_fake_refuses_truncate_delete_cancel_and_create_it_cannot_do():
    fake = FakeRealtime()
    fake.greeting_s = 0.6
    async with fake.running(), realtime_socket(fake) as ws:
        assert (await answer(ws, GOOD_UPDATE, "session.updated"))["type"] == "session.updated"
        got = await answer(
            ws,
            {
                "type": "conversation.item.truncate",
                "item_id": "item_nope",
                "content_index": 0,
                "audio_end_ms": 10,
            },
            "conversation.item.truncated",
        )
        assert got["type"] == "error" and "not found" in got["error"]["message"]
        got = await answer(
            ws, {"type": "conversation.item.delete", "item_id": "item_nope"}, "conversation.item.deleted"
        )
        assert got["type"] == "error" and "not found" in got["error"]["message"]
        got = await answer(ws, {"type": "response.cancel"}, "response.done")
        assert got["type"] == "error" and got["error"]["code"] == "response_cancel_not_active"
        got = await answer(ws, {"type": "input_audio_buffer.commit_all"}, "never")
        assert got["type"] == "error" and got["error"]["param"] == "type"
        # a reply in progress: its audio so far bounds a truncate; a second create is refused
        added = await answer(ws, greet("Hi."), "response.output_item.added")
        item = added["item"]["id"]
        got = await answer(ws, greet("Hi."), "never")
        assert got["error"]["code"] == "conversation_already_has_active_response"
        got = await answer(ws, truncate(item, 5000), "conversation.item.truncated")
        assert got["type"] == "error" and "shorter than 5000ms" in got["error"]["message"]
        got = await answer(ws, truncate(item, -1), "conversation.item.truncated")
        assert got["type"] == "error" and got["error"]["param"] == "audio_end_ms"
        got = await answer(ws, truncate(item, 50), "conversation.item.truncated")
        assert got["type"] == "conversation.item.truncated" and got["audio_end_ms"] == 50
        got = await answer(ws, {"type": "response.cancel"}, "response.done")
        assert got["response"]["status"] == "cancelled"
    assert fake.cancelled == [(1, "client")]


async def _speak_to(ws, silence_s: float, loud_s: float) -> list[dict]:
    """Caller audio straight to the fake: silence, a loud tone, silence; what it said."""
    audio = np.concatenate(
        [np.zeros(int(silence_s * 8000), np.int16), tone(loud_s, 8000, 8000.0), np.zeros(8000, np.int16)]
    )
    ulaw = ulaw_encode(audio)
    for i in range(0, len(ulaw), 160):
        await ws.send_str(append_audio(ulaw[i : i + 160]))
    got: list[dict] = []
    with contextlib.suppress(asyncio.TimeoutError):
        while True:
            got.append(await ws.receive_json(timeout=0.5))
    return got


@pytest.mark.parametrize("padding", [300, 100, 0])
async def test_fake_speech_started_includes_the_prefix_padding(padding):
    fake = FakeRealtime()
    async with fake.running(), realtime_socket(fake) as ws:
        update = _update_with("audio.input.turn_detection.prefix_padding_ms", padding)
        updated = await answer(ws, update, "session.updated")
        assert updated["session"]["audio"]["input"]["turn_detection"]["prefix_padding_ms"] == padding
        said = await _speak_to(ws, 1.0, 0.5)
    (started,) = [e for e in said if e["type"] == "input_audio_buffer.speech_started"]
    assert started["audio_start_ms"] == 1000 - padding


@pytest.mark.slow
@pytest.mark.parametrize("interrupt, create", [(True, True), (False, False)])
async def test_fake_honours_interrupt_response_and_create_response(interrupt, create):
    fake = FakeRealtime()
    fake.greeting_s = 4.0
    async with fake.running(), realtime_socket(fake) as ws:
        update = _update_with("audio.input.turn_detection.interrupt_response", interrupt)
        update["session"]["audio"]["input"]["turn_detection"]["create_response"] = create
        await answer(ws, update, "session.updated")
        await ws.send_json(greet("Hi."))
        said = await _speak_to(ws, 0.2, 0.5)
    kinds = [e["type"] for e in said]
    assert "input_audio_buffer.speech_started" in kinds and "input_audio_buffer.committed" in kinds
    assert fake.cancelled == ([(1, "vad")] if interrupt else [])
    assert kinds.count("response.created") == (2 if create else 1)


# -- who owns interruption: the bridge ---------------------------------------------------------


@pytest.mark.slow
async def test_bridge_owns_turn_taking_and_the_fake_finds_nothing_to_refuse(start_server):
    fake = FakeRealtime()
    async with fake.running():
        url = await realtime_server(start_server, fake)
        result = await SimulatedCall(
            url, audio=[speech_8k("Book me in on Monday.")], polite=True, hold_s=2.5
        ).run()
    (session,) = fake.sessions
    update = next(e for e in session.events if e["type"] == "session.update")["session"]
    td = update["audio"]["input"]["turn_detection"]
    assert (td["interrupt_response"], td["create_response"]) == (False, False)
    # the greeting, then one response.create for the caller's committed turn
    creates = [e for e in session.events if e["type"] == "response.create"]
    assert len(creates) == 2 and creates[0] in greetings(session)
    assert events(result, "agent.reply")[-1]["text"] == "Here is my answer."
    assert fake.errors == [] and not events(result, "upstream.remote_error")


@pytest.mark.slow
async def test_the_agents_own_echo_neither_cancels_the_reply_nor_gets_answered(start_server):
    """The agent's voice comes back on the line loud enough for the server's VAD: BargeIn
    calls it echo, so nothing is cancelled or cleared, and the echo's turn is deleted."""
    fake = FakeRealtime()
    fake.greeting_s = 3.0
    fake.amplitude = 16000.0  # -20 dB of it is still "speech" to the fake's VAD
    async with fake.running():
        url = await realtime_server(start_server, fake)
        result = await SimulatedCall(url, echo_db=-20, hold_s=4.5).run()
    (session,) = fake.sessions
    said = [e["type"] for e in session.events]
    assert events(result, "echo_ignored")
    assert fake.cancelled == [] and "response.cancel" not in said
    assert result.clears == [] and not events(result, "barge_in")
    deleted = [e["item_id"] for e in session.events if e["type"] == "conversation.item.delete"]
    assert deleted and len(events(result, "upstream.echo_turn_dropped")) == len(deleted)
    assert len([e for e in session.events if e["type"] == "response.create"]) == 1  # the greeting only
    assert not events(result, "transcript.final")
    assert fake.errors == []
    # the whole greeting played
    played = np.frombuffer(bytes(result.agent_audio), np.uint8).reshape(-1, 160)
    assert ((played != 0xFF).any(axis=1)).sum() * 20 >= 3000 - 100


@pytest.mark.slow
async def test_a_real_barge_in_cancels_the_reply_and_detection_counts_from_the_speech(start_server):
    fake = FakeRealtime()
    fake.greeting_s = 5.0
    async with fake.running():
        url = await realtime_server(start_server, fake)
        wait = speech_8k("Wait, I want to cancel my appointment.")
        result = await SimulatedCall(url, audio=[wait], gap_s=1.5, hold_s=2.5).run()
    (barge,) = events(result, "barge_in")
    (session,) = fake.sessions
    said = [e["type"] for e in session.events]
    assert fake.cancelled == [(1, "client")]
    assert said.index("response.cancel") < said.index("conversation.item.truncate")
    assert fake.errors == []
    # The fake's VAD confirms speech START_MS of audio after it began (less wall time when
    # frames arrive in a burst); audio_start_ms names the start of the padding before it
    # (300 ms earlier), which the bridge adds back: without that, ~400 ms.
    assert START_MS - 60 <= barge["detection_ms"] <= START_MS + 150, barge
    assert events(result, "agent.reply")[-1]["text"] == "Here is my answer."


def test_padding_and_onset_from_the_protocol():
    updated = {
        "type": "session.updated",
        "session": {"audio": {"input": {"turn_detection": {"prefix_padding_ms": 120}}}},
    }
    assert padding_in_force(updated) == 120
    assert padding_in_force({"type": "session.updated", "session": {}}) == 300
    assert padding_in_force({"session": {"audio": {"input": {"turn_detection": None}}}}, 250) == 250
    assert speech_onset_ms(700, 300) == 1000.0
    assert speech_onset_ms(0, 300) == 0.0  # speech in the input's first 300 ms: padding cut short
    assert speech_onset_ms(None, 300) is None and speech_onset_ms(True, 300) is None
