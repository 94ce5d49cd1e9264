"""Whole calls on the default, neural speech engines (Whisper in the speech workers, the
Piper voice) over real sockets: the desk still books, and any English is heard."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import aiohttp
import pytest

from callbridge.codecs.resample import StreamingResampler
from callbridge.config import Settings
from callbridge.sim.caller import SimulatedCall, new_sid
from callbridge.speech import engines
from callbridge.testing.audio import natural_speech
from callbridge.testing.nodes import AUTH_TOKEN, CONSOLE_TOKEN, PUBLIC_URL
from callbridge.testing.wer import word_errors, words

from .conftest import events, rms

pytestmark = [pytest.mark.slow, pytest.mark.alone]  # the speech workers take the CPU in bursts

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
    said = "My sister moved to Chicago last year for a new job."
    result = await SimulatedCall(url, audio=[natural_speech(said)], polite=True, hold_s=0.3).run()
    finals = [e["text"] for e in events(result, "transcript.final")]
    assert len(finals) == 1, finals
    assert word_errors(words(said), words(finals[0])) <= 1, finals
    # The desk does not know what to do with it, and says so: it was heard, not misheard.
    assert events(result, "agent.reply")


async def test_new_calls_are_answered_busy_while_the_speech_workers_are_behind(start_server, caplog):
    url = await start_server(**NEURAL)
    pool = engines.pool_for(Settings(**NEURAL).speech)  # the server's: the same options
    assert pool is not None
    await pool.start()
    audio = StreamingResampler(8000, 16000).process(
        natural_speech("Can you move my appointment to Friday morning?")
    )
    jobs = [asyncio.ensure_future(pool.run("transcribe", audio, "")) for _ in range(4)]  # backlog: 3 a worker
    async with aiohttp.ClientSession() as http:
        await asyncio.sleep(0.05)
        async with http.post(url + "/voice/inbound", data={"CallSid": new_sid("CA")}) as resp:
            assert "busy" in await resp.text() and "<Hangup" in await resp.text()
        assert "the speech workers have 4 jobs in hand" in caplog.text
        await asyncio.gather(*jobs)
        async with http.post(url + "/voice/inbound", data={"CallSid": new_sid("CA")}) as resp:
            assert "<Stream" in await resp.text()


@pytest.mark.prod
async def test_a_prod_shard_runs_its_calls_on_its_own_speech_workers(nodes):
    node = nodes(workers=1, STT="whisper", TTS="piper", SPEECH_WORKERS="1")
    node.wait_ready()
    said = natural_speech("I'd like to book an appointment on Monday at 3 PM.")
    call = SimulatedCall(
        node.url,
        audio=[said],
        polite=True,
        hold_s=0.3,
        auth_token=AUTH_TOKEN,
        public_url=PUBLIC_URL,
        console_token=CONSOLE_TOKEN,
    )
    result = await call.run()
    assert "Monday at 3 PM" in events(result, "transcript.final")[0]["text"]
    assert "Monday at 3 PM" in events(result, "agent.reply")[0]["text"]
    # The shard's workers are its children; killed, it leaves none behind.
    shard = result.record["pid"]
    children = [p for p in node.pids() if _parent(p) == shard]
    workers = [p for p in children if "spawn_main" in _cmdline(p)]
    assert len(workers) == 1  # and multiprocessing's resource tracker
    os.kill(shard, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in children):
        assert time.monotonic() < deadline, "a speech worker outlived its shard"
        await asyncio.sleep(0.1)


def _parent(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except OSError:
        return 0


def _cmdline(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().decode(errors="replace")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
