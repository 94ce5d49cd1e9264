"""Vapi's WebSocket transport behind the Upstream interface: the real gateway, the
simulator playing Twilio, and a local server speaking Vapi's protocol
(``POST /call`` + binary/JSON WebSocket; tests/remote_fakes.py)."""

from __future__ import annotations

import asyncio
import os
import signal

import numpy as np
import orjson
import pytest

from callbridge.codecs.g711 import ulaw_encode
from callbridge.codecs.resample import StreamingResampler
from callbridge.config import ConfigError, Settings
from callbridge.sim.caller import SimulatedCall
from callbridge.testing.nodes import AUTH_TOKEN, CONSOLE_TOKEN, PUBLIC_URL, ProdNode
from callbridge.upstreams.base import Conversation
from callbridge.upstreams.remote import RemoteFailure
from callbridge.upstreams.vapi import VapiOptions, create_call_body, ends_call, parse_created

from .conftest import events, inject_fault, rms, speech_8k, until
from .fake_vapi import FakeVapi

FAST_RETRIES = "0.05,0.1,0.2"


async def vapi_server(start_server, fake: FakeVapi, base: str, **settings):
    return await start_server(
        upstream="vapi",
        vapi_api_url=base,
        vapi_api_key=fake.api_key,
        vapi_assistant_id="asst_test",
        upstream_retries_s=FAST_RETRIES,
        upstream_timeout_s=3.0,
        **settings,
    )


def as_8k(pcm16k: bytes) -> np.ndarray:
    return StreamingResampler(16000, 8000).process(np.frombuffer(pcm16k, "<i2"))


def similarity(sent: np.ndarray, got: np.ndarray, n: int) -> float:
    """Best correlation of the first ``n`` samples over the resamplers' delay (8-12 ms)."""
    return max(
        float(np.corrcoef(sent[:n].astype(float), got[lag : lag + n].astype(float))[0, 1])
        for lag in range(60, 100)
    )


# -- the protocol, pure ------------------------------------------------------------------------


def test_create_call_body_and_answer():
    s = Settings(upstream="vapi", vapi_api_key="k", vapi_assistant_id="asst_1").backend(VapiOptions)
    body = create_call_body(s)
    assert body == {
        "assistantId": "asst_1",
        "transport": {
            "provider": "vapi.websocket",
            "audioFormat": {"format": "pcm_s16le", "container": "raw", "sampleRate": 16000},
        },
    }
    assert create_call_body(s, reconnect=True)["assistantOverrides"] == {
        "firstMessageMode": "assistant-waits-for-user"
    }
    inline = Settings(upstream="vapi", vapi_api_key="k", vapi_assistant='{"firstMessage": "Hi"}').backend(
        VapiOptions
    )
    assert create_call_body(inline)["assistant"] == {"firstMessage": "Hi"}
    assert parse_created({"id": "c1", "transport": {"websocketCallUrl": "wss://x/y"}}) == (
        "c1",
        "wss://x/y",
        "",
    )
    answer = {
        "id": "c1",
        "transport": {"websocketCallUrl": "wss://x/y"},
        "monitor": {"controlUrl": "https://x/c"},
    }
    assert parse_created(answer) == ("c1", "wss://x/y", "https://x/c")
    for bad in (
        [],
        {"id": "c1"},
        {"id": "", "transport": {"websocketCallUrl": "wss://x"}},
        {"id": "c1", "transport": {"websocketCallUrl": "https://x"}},
    ):
        with pytest.raises(RemoteFailure):
            parse_created(bad)
    assert ends_call({"type": "hangup"}) and ends_call({"type": "status-update", "status": "ended"})
    assert not ends_call({"type": "status-update", "status": "in-progress"})


def test_vapi_settings_are_checked():
    with pytest.raises(ConfigError, match="VAPI_API_KEY"):
        Settings(upstream="vapi")
    with pytest.raises(ConfigError, match="VAPI_ASSISTANT"):
        Settings(upstream="vapi", vapi_api_key="k")
    with pytest.raises(ConfigError, match="not JSON"):
        Settings(upstream="vapi", vapi_api_key="k", vapi_assistant="{nope")
    with pytest.raises(ConfigError, match="UPSTREAM must be"):
        Settings(upstream="nope")


# -- calls ---------------------------------------------------------------------------------------


@pytest.mark.slow
async def test_mulaw_transport_passes_twilio_bytes_through(start_server):
    fake = FakeVapi()
    async with fake.running() as base:
        url = await vapi_server(start_server, fake, base, vapi_audio="mulaw")
        hello = speech_8k("I would like to book an appointment on Monday.")
        result = await SimulatedCall(url, audio=[hello], polite=True, hold_s=2.5).run()
    (created,) = fake.created
    assert created["transport"]["audioFormat"] == {"format": "mulaw", "container": "raw", "sampleRate": 8000}
    (session,) = fake.sessions
    sent, got = bytes(result.caller_audio), bytes(session.audio)
    assert len(got) >= len(sent) - 160 * 10 and got == sent[: len(got)]  # untouched, in order
    tone_8k = ulaw_encode((4000 * np.sin(2 * np.pi * 440 * np.arange(800) / 8000)).astype(np.int16))
    assert tone_8k in bytes(result.agent_audio)  # the assistant's bytes, only framed
    assert events(result, "agent.reply")[-1]["text"] == "Here is my answer."


@pytest.mark.slow
async def test_conversation_over_the_websocket_transport(start_server):
    fake = FakeVapi()
    async with fake.running() as base:
        url = await vapi_server(start_server, fake, base)
        hello = speech_8k("I would like to book an appointment on Monday.")
        result = await SimulatedCall(url, audio=[hello], polite=True, hold_s=2.5).run()
        (session,) = fake.sessions
        await asyncio.wait_for(session.closed.wait(), 3)

    assert result.close_code == 1000 and result.outbound_errors == []
    (created,) = fake.created
    assert created["transport"]["audioFormat"] == {
        "format": "pcm_s16le",
        "container": "raw",
        "sampleRate": 16000,
    }
    assert created["assistantId"] == "asst_test"
    (bound,) = events(result, "upstream.bound")
    assert bound["remote_id"] == "vapi-call-1"
    # The assistant got the caller as 16 kHz s16le: all of it, in order.
    sent = result.caller_pcm()
    got = as_8k(bytes(session.audio))
    assert abs(len(got) - len(sent)) <= 160 * 10
    assert similarity(sent, got, min(len(got), len(sent)) - 100) > 0.85
    # Its greeting and answer were played at the caller.
    assert result.end_marks_echoed()[:2] == ["u1", "u2"]
    assert rms(result.agent_pcm()) > 500
    assert events(result, "transcript.final")[0]["source"] == "vapi"
    assert events(result, "agent.reply")[-1]["text"] == "Here is my answer."
    # The caller hung up: Vapi was told (end-call on the socket), and the socket closed.
    assert fake.hangups == ["vapi-call-1"] and session.events[-1] == {"type": "end-call"}
    assert fake.open_calls == set() and fake.refusals == []


@pytest.mark.slow
async def test_slow_call_creation_loses_nothing(start_server):
    fake = FakeVapi()
    fake.create_delay_s = 0.6
    async with fake.running() as base:
        url = await vapi_server(start_server, fake, base)
        hello = speech_8k("Hello, I need some help.")
        result = await SimulatedCall(url, audio=[hello], gap_s=0.0, hold_s=2.0).run()
    (session,) = fake.sessions
    sent, got = result.caller_pcm(), as_8k(bytes(session.audio))
    assert abs(len(got) - len(sent)) <= 160 * 10  # from the very first frame
    first = 8 * 400  # the first 400 ms, spoken while Vapi was not ready
    assert rms(sent[:first]) > 300
    assert similarity(sent, got, first) > 0.85
    (ready,) = events(result, "upstream.ready")
    assert ready["held_ms"] >= 300


@pytest.mark.slow
@pytest.mark.parametrize(
    ("vapi_says", "audio"),
    [(True, "pcm_s16le"), (False, "pcm_s16le"), (False, "mulaw")],
    ids=["vapi-says", "our-vad", "our-vad-mulaw"],
)
async def test_caller_talks_over_the_assistant_playback_is_cleared(start_server, vapi_says, audio):
    fake = FakeVapi()
    fake.greeting_s = 5.0
    fake.speech_updates = vapi_says
    async with fake.running() as base:
        url = await vapi_server(start_server, fake, base, vapi_audio=audio)
        wait = speech_8k("Wait, I want to cancel my appointment.")
        result = await SimulatedCall(url, audio=[wait], gap_s=1.5, hold_s=2.5).run()
    (barge,) = events(result, "barge_in")
    assert len(result.clears) == 1 and barge["utterance"] == 1
    assert 1400 <= barge["heard_ms"] <= 2300
    assert barge["detection_ms"] < 500
    assert events(result, "agent.reply")[-1]["text"] == "Here is my answer."


@pytest.mark.slow
async def test_drop_ends_the_old_vapi_call_before_creating_a_new_one(start_server):
    fake = FakeVapi()
    fake.drop_after_s = {1: 1.5}
    async with fake.running() as base:
        url = await vapi_server(start_server, fake, base)
        hello = speech_8k("Can I book for Monday?")
        result = await SimulatedCall(url, audio=[hello], gap_s=2.5, hold_s=2.5).run()
    assert len(fake.created) == 2
    assert fake.created[1]["assistantOverrides"] == {"firstMessageMode": "assistant-waits-for-user"}
    # The dropped call was ended through Live Call Control before the second was created:
    # never two Vapi calls open for one phone call, and none left open after it.
    assert fake.controls == [("vapi-call-1", {"type": "end-call"})]
    assert fake.max_open == 1 and fake.open_calls == set()
    assert [e["remote_id"] for e in events(result, "upstream.released")] == ["vapi-call-1"]
    names = result.timeline_events()
    assert "upstream.error" in names and "fallback_audio" in names
    assert names.index("upstream.released") < names.index("upstream.bound", names.index("upstream.error"))
    assert [b["remote_id"] for b in events(result, "upstream.bound")] == ["vapi-call-1", "vapi-call-2"]
    # The new call waited for the caller: the greeting was not spoken twice.
    assert fake.greeted == ["vapi-call-1"]
    assert events(result, "agent.reply")[-1]["text"] == "Here is my answer."


@pytest.mark.slow
@pytest.mark.parametrize("why", ["no-control-url", "control-refused"])
async def test_drop_without_a_way_to_end_the_call_gives_up_rather_than_open_a_second(start_server, why):
    fake = FakeVapi()
    fake.drop_after_s = {1: 1.0}
    if why == "no-control-url":
        fake.control_url = False
    else:
        fake.control_status = 500
    async with fake.running() as base:
        url = await vapi_server(start_server, fake, base)
        result = await SimulatedCall(url, hold_s=6.0, max_s=12.0).run()
    assert len(fake.created) == 1 and fake.max_open == 1  # no second paid call
    errors = events(result, "upstream.error")
    assert "not starting a second one" in errors[-1]["error"]
    assert "upstream.gave_up" in result.timeline_events() and result.close_code == 1000


@pytest.mark.slow
async def test_caller_hangs_up_while_reconnecting_ends_the_vapi_call(start_server):
    fake = FakeVapi()
    fake.drop_after_s = {1: 0.8}
    async with fake.running() as base:
        url = await start_server(
            upstream="vapi",
            vapi_api_url=base,
            vapi_api_key=fake.api_key,
            vapi_assistant_id="asst_test",
            upstream_retries_s="5",
            upstream_timeout_s=3.0,
        )
        await SimulatedCall(url, hold_s=2.0).run()
        for _ in range(100):
            if not fake.open_calls:
                break
            await asyncio.sleep(0.02)
    assert len(fake.created) == 1 and fake.open_calls == set()
    assert fake.controls == [("vapi-call-1", {"type": "end-call"})]


@pytest.mark.slow
async def test_refused_call_creation_gives_up_politely(start_server):
    fake = FakeVapi()
    fake.refuse_from = 1
    async with fake.running() as base:
        url = await vapi_server(start_server, fake, base)
        result = await SimulatedCall(url, hold_s=8.0, max_s=12.0).run()
    errors = events(result, "upstream.error")
    assert len(errors) == 4 and "503" in errors[0]["error"]
    assert "upstream.gave_up" in result.timeline_events()
    assert "call_ending" in result.timeline_events() and result.close_code == 1000


@pytest.mark.slow
async def test_assistant_hangs_up(start_server):
    fake = FakeVapi()
    fake.end_call_after_replies = 2
    async with fake.running() as base:
        url = await vapi_server(start_server, fake, base)
        bye = speech_8k("That is all, goodbye.")
        result = await SimulatedCall(url, audio=[bye], polite=True, hold_s=6.0).run()
    names = result.timeline_events()
    assert "upstream.ended" in names and "call_ending" in names
    assert events(result, "call_ending")[0]["t_ms"] >= result.marks_echoed[-1][0] * 1000 - 50


@pytest.mark.slow
async def test_upstream_actor_restart_ends_the_vapi_call_before_the_next(start_server):
    fake = FakeVapi()
    async with fake.running() as base:
        url = await vapi_server(start_server, fake, base, fault_injection=True)
        call = SimulatedCall(url, audio=[speech_8k("Book Monday.")], polite=True, hold_s=3.0)
        running = asyncio.ensure_future(call.run())
        await until(lambda: fake.replies >= 1)
        await inject_fault(url, call.call_sid, "upstream")
        result = await running
    assert "child_restarted" in result.timeline_events()
    assert len(fake.created) == 2 and fake.max_open == 1 and fake.open_calls == set()
    assert fake.greeted == ["vapi-call-1"]  # the new call waited for the caller


def test_the_open_vapi_call_travels_in_the_checkpoint():
    conv = Conversation()
    conv.remote_call = ("vapi", "vapi-call-7", "https://x/control")
    restored = Conversation.restore(orjson.loads(orjson.dumps(conv.snapshot())), played_upto=0)
    assert restored.remote_call == ("vapi", "vapi-call-7", "https://x/control")
    assert Conversation.restore(Conversation().snapshot(), 0).remote_call is None


@pytest.mark.slow
async def test_a_resumed_call_ends_the_vapi_call_its_checkpoint_holds(start_server):
    """The Twilio stream drops and the call resumes from its checkpoint, which still names
    the first Vapi call: the resumed back end makes sure it has ended (its controlUrl
    answers 404 once it has; GET /call/{id} says ended) before it creates the next."""
    fake = FakeVapi()
    async with fake.running() as base:
        url = await vapi_server(start_server, fake, base, fault_injection=True)
        call = SimulatedCall(url, audio=[speech_8k("Book Monday.")], gap_s=2.0, hold_s=2.5)
        running = asyncio.ensure_future(call.run())
        await until(lambda: fake.replies >= 1)
        await inject_fault(url, call.call_sid, "socket")
        result = await asyncio.wait_for(running, 60)
    assert result.record["resumes"] == 1 and "upstream.gave_up" not in result.timeline_events()
    assert len(fake.created) == 2 and fake.max_open == 1 and fake.open_calls == set()
    assert fake.greeted == ["vapi-call-1"]  # the resumed call's Vapi call waited for the caller
    assert [e["remote_id"] for e in events(result, "upstream.released")] == ["vapi-call-1"]


@pytest.mark.slow
@pytest.mark.prod
async def test_sigkill_of_the_shard_ends_its_vapi_call_before_the_resumed_call_makes_one(tmp_path):
    """Production mode: the shard carrying a Vapi call dies (its socket to Vapi dies
    with it, the Vapi call runs on). The call resumes on the other shard from its
    checkpoint, which names that Vapi call: it is ended before a new one is created."""
    fake = FakeVapi()
    async with fake.running() as base:
        node = ProdNode(
            tmp_path,
            workers=2,
            UPSTREAM="vapi",
            VAPI_API_URL=base,
            VAPI_API_KEY=fake.api_key,
            VAPI_ASSISTANT_ID="asst_test",
            UPSTREAM_RETRIES_S=FAST_RETRIES,
        )
        try:
            await asyncio.to_thread(node.wait_ready)
            await asyncio.to_thread(node.wait_for, lambda h: len(h.get("pool", {}).get("shards", [])) == 2)
            call = SimulatedCall(
                node.url,
                audio=[speech_8k("Book Monday.")],
                gap_s=3.0,
                hold_s=3.0,
                auth_token=AUTH_TOKEN,
                public_url=PUBLIC_URL,
                console_token=CONSOLE_TOKEN,
            )
            running = asyncio.ensure_future(call.run())
            for _ in range(600):
                if fake.replies >= 1:
                    break
                await asyncio.sleep(0.02)
            status, record = await asyncio.to_thread(node.get, f"/calls/{call.call_sid}")
            assert status == 200 and fake.open_calls == {"vapi-call-1"}
            os.kill(record["pid"], signal.SIGKILL)
            result = await asyncio.wait_for(running, 90)
        finally:
            await asyncio.to_thread(node.close)
    assert result.record["resumes"] == 1
    assert len(fake.created) == 2 and fake.max_open == 1 and fake.open_calls == set()
    assert fake.controls[0] == ("vapi-call-1", {"type": "end-call"})
    assert fake.greeted == ["vapi-call-1"]
