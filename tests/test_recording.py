"""Call recording (``RECORDING``): the local stereo WAV over real sockets (caller left, agent
right as played, cut at a barge-in), its route, the disk cap and retention, the per-call
limit; Twilio's own recording through the REST fake and its signed status callback."""

from __future__ import annotations

import asyncio
import json
import os
import time
import wave
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from aiohttp import web

from callbridge.agents.signing import verify
from callbridge.config import ConfigError, Settings
from callbridge.gateway.recorder import WINDOW, CallRecorder
from callbridge.gateway.recordings import Recordings, file_name
from callbridge.gateway.security import SignatureChecker
from callbridge.metrics import Metrics
from callbridge.sim.caller import SimulatedCall
from callbridge.testing.audio import LONG_GREETING
from callbridge.testing.fake_twilio import ACCOUNT, TOKEN, FakeTwilioApi
from callbridge.testing.nodes import AUTH_TOKEN, CONSOLE_TOKEN, PUBLIC_URL

from .conftest import events, speech_8k, until
from .remote_fakes import serve

CONSOLE = "console-secret-recordings"


def read_stereo(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (2, 2, 8000)
        return np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, 2)


async def call_record(url: str, call_sid: str) -> dict:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{url}/calls/{call_sid}", headers={"Authorization": f"Bearer {CONSOLE}"}) as resp,
    ):
        assert resp.status == 200
        return await resp.json()


async def wait_ready(url: str, call_sid: str, count: int = 1) -> dict:
    """The call's record once ``count`` ``recording.ready`` events are in it."""
    for _ in range(250):
        record = await call_record(url, call_sid)
        if len(ready_events(record)) >= count:
            return record
        await asyncio.sleep(0.02)
    raise AssertionError(
        f"no recording.ready: {[(e['event'], e.get('part')) for e in record['timeline'] if 'record' in e['event'] or e['event'] in ('started', 'resumed', 'stopped')]}"
    )


async def recorded_server(start_server, folder: Path, **settings) -> str:
    """A gateway with ``RECORDING=local`` into ``folder``, operators holding ``CONSOLE``."""
    return await start_server(
        recording="local", recordings_dir=str(folder), console_token=CONSOLE, **settings
    )


def ready_events(record: dict) -> list[dict]:
    return [e for e in record["timeline"] if e["event"] == "recording.ready"]


# -- the layout, pure ------------------------------------------------------------------------


def test_recorder_lays_out_both_channels_and_cuts_at_a_clear():
    chunks: list[tuple[int, bytes, bytes]] = []
    rec = CallRecorder(100.0, 60.0, lambda start, c, a: chunks.append((start, c, a)))
    tone = bytes(range(160))
    for k in range(10):  # 200 ms of caller audio, its frames out of order in pairs
        j = k ^ 1
        rec.caller(j * 20, bytes([j]) * 160, 100.0 + k * 0.02)
    # Agent frames sent at 100.05 back to back: they play one after another (pacer).
    for k in range(5):
        rec.agent(100.05 + k * 0.02, tone, 100.05)
    cut = rec.cleared(100.09)  # the clear: what would play from 90 ms on is not heard
    assert cut == 160 * 5 - 320
    rec.agent(100.15, tone, 100.15)  # the next reply
    rec.caller(-20 + 20, b"\x00" * 160, 100.2)  # a stale duplicate of frame 0: still in the window
    rec.caller(10_000_000, tone, 100.2)  # far past the clock: dropped, no memory grows
    assert rec.dropped == 1
    total = rec.finish()
    assert total == 1600
    caller_all = b"".join(c for _, c, _ in chunks)
    agent_all = b"".join(a for _, _, a in chunks)
    assert chunks[0][0] == 0 and len(caller_all) == len(agent_all) == 1600
    assert caller_all[160:] == b"".join(bytes([j]) * 160 for j in range(1, 10))
    assert agent_all[:400] == b"\xff" * 400  # silence before the agent spoke
    assert agent_all[400:720] == tone * 2  # 40 ms played, then the clear
    assert agent_all[720:1200] == b"\xff" * 480
    assert agent_all[1200:1360] == tone and agent_all[1360:] == b"\xff" * 240


def test_recorder_stops_at_the_per_call_limit_and_bounds_memory():
    chunks: list[int] = []
    rec = CallRecorder(0.0, 1.0, lambda start, c, a: chunks.append(len(c)))
    for k in range(500):  # 10 s of frames, at their real times
        rec.caller(k * 20, b"\x01" * 160, k * 0.02)
        if rec.stopped:
            break
    assert rec.stopped and k == 50  # the frame that would cross 1 s
    assert rec.finish() == 8000 and sum(chunks) == 8000
    # A long call keeps only the window in memory: chunks go out as they age.
    out: list[int] = []
    long = CallRecorder(0.0, 600.0, lambda start, c, a: out.append(start))
    for k in range(1500):  # 30 s
        long.caller(k * 20, b"\x01" * 160, k * 0.02)
        long.agent(k * 0.02, b"\x02" * 160, k * 0.02)
    assert len(out) >= 25 and len(long._caller) == WINDOW <= 8000 * 6  # a fixed window, not the call


def test_file_names_never_form_a_path():
    assert file_name("CA" + "a" * 32, 1) == "CA" + "a" * 32 + ".wav"
    assert file_name("CA" + "a" * 32, 2) == "CA" + "a" * 32 + ".2.wav"
    for bad in ("../etc/passwd", "CA/../../x", "..", "CA.wav", "", "a" * 65, "CA\x00"):
        assert file_name(bad, 1) is None
    assert file_name("CA1", 0) is None and file_name("CA1", 100) is None


async def test_sweep_removes_oldest_past_the_cap_and_expired_ones(tmp_path):
    metrics = Metrics()
    now = time.time()
    names = []
    for i, age_h in enumerate((50, 30, 20, 10, 1)):  # oldest first
        path = tmp_path / f"CA{i:032d}.wav"
        path.write_bytes(b"x" * 300_000)
        os.utime(path, (now - age_h * 3600, now - age_h * 3600))
        names.append(path.name)
    (tmp_path / "notes.txt").write_text("not ours")
    stale = tmp_path / ("CA" + "9" * 32 + ".wav.part")
    stale.write_bytes(b"x" * 1000)
    os.utime(stale, (now - 3600, now - 3600))
    recordings = Recordings(tmp_path, max_mb=1.0, retention_h=40, max_call_s=60, metrics=metrics)
    recordings.sweep()
    left = sorted(p.name for p in tmp_path.iterdir())
    # 50 h: past retention; then 4 x 300 KB > 1 MB: the oldest (30 h) goes; the rest fit.
    assert left == sorted([*names[2:], "notes.txt"])
    assert recordings.removed == {"cap": 1, "retention": 1, "stale": 1}
    assert recordings.bytes_on_disk == 900_000
    text = metrics.render().decode()
    assert "callbridge_recordings_bytes 900000.0" in text
    assert 'callbridge_recordings_removed_total{reason="cap"} 1.0' in text


# -- over real sockets -------------------------------------------------------------------------


@pytest.mark.slow
async def test_local_recording_is_the_call_in_stereo_and_served_to_operators(start_server, tmp_path):
    # Two older recordings fill most of the cap: this call's file pushes the oldest out.
    now = time.time()
    old = [tmp_path / f"CA{'0' * 31}{i}.wav" for i in (1, 2)]
    for i, path in enumerate(old):
        path.write_bytes(b"x" * 450_000)
        os.utime(path, (now - 7200 + i, now - 7200 + i))
    url = await recorded_server(
        start_server,
        tmp_path,
        upstream="echo",
        recordings_max_mb=1.0,
    )
    audio = speech_8k("Hello there, this is a test of the recording.")
    result = await SimulatedCall(url, audio=[audio], hold_s=1.0, console_token=CONSOLE).run()
    record = await wait_ready(url, result.call_sid)
    (ready,) = ready_events(record)
    path = tmp_path / ready["path"]
    assert ready["path"] == f"{result.call_sid}.wav" and ready["mode"] == "local"
    assert ready["bytes"] == path.stat().st_size and ready["seconds"] > 3

    stereo = read_stereo(path)
    caller = result.caller_pcm()
    # Left: exactly what the caller sent, at its media time (timestamp 0 = sample 0).
    assert np.array_equal(stereo[: len(caller), 0], caller)
    # Right: the agent (here the echo of the caller): the samples the simulator played, in
    # order (its silences aside), and in time with the caller: the echo starts just after
    # the speech it repeats.
    agent, played = stereo[:, 1], result.agent_pcm()
    ours, theirs = agent[agent != 0], played[played != 0]
    k = min(len(ours), len(theirs))
    assert k > 8000 and np.array_equal(ours[:k], theirs[:k])
    assert len(ours) - len(theirs) <= 1600  # both end where the call did
    spoke, echoed = int(np.flatnonzero(caller)[0]), int(np.flatnonzero(agent)[0])
    assert 0 < echoed - spoke < 8000, (spoke, echoed)

    # The cap: the oldest of the two old files went; the newer one and this call's stayed.
    assert not old[0].exists() and old[1].exists() and path.exists()

    async with aiohttp.ClientSession() as http:
        where = f"{url}/calls/{result.call_sid}/recording"
        async with http.get(where) as resp:
            assert resp.status == 401
        async with http.get(where, headers={"Authorization": "Bearer wrong"}) as resp:
            assert resp.status == 401
        auth = {"Authorization": f"Bearer {CONSOLE}"}
        async with http.get(where, headers=auth) as resp:
            assert resp.status == 200 and resp.headers["Content-Type"] == "audio/wav"
            assert await resp.read() == path.read_bytes()
        for bad in ("CA" + "f" * 32, "..%2F..%2Fetc%2Fpasswd", "CA..", "x.wav"):
            async with http.get(f"{url}/calls/{bad}/recording", headers=auth) as resp:
                assert resp.status == 404, bad
        async with http.get(where + "?part=x", headers=auth) as resp:
            assert resp.status == 400
        async with http.get(where + "?part=2", headers=auth) as resp:
            assert resp.status == 404
        async with http.get(f"{url}/metrics", headers=auth) as resp:
            text = await resp.text()
    assert 'callbridge_recordings_removed_total{reason="cap"} 1.0' in text
    assert 'callbridge_recordings_ready_total{mode="local"} 1.0' in text


@pytest.mark.slow
async def test_a_call_past_the_per_call_limit_stops_recording(start_server, tmp_path):
    url = await recorded_server(
        start_server,
        tmp_path,
        upstream="echo",
        recordings_max_call_s=1.0,
    )
    result = await SimulatedCall(url, audio=[speech_8k("One two three four five.")], hold_s=0.5).run()
    record = await wait_ready(url, result.call_sid)
    (stopped,) = [e for e in record["timeline"] if e["event"] == "recording.stopped"]
    assert stopped["reason"] == "RECORDINGS_MAX_CALL_S reached"
    (ready,) = ready_events(record)
    assert ready["seconds"] == 1.0
    assert len(read_stereo(tmp_path / ready["path"])) == 8000  # exactly the limit


@pytest.mark.slow
@pytest.mark.alone
async def test_agent_channel_is_cut_where_the_barge_in_cut_it(start_server, tmp_path):
    url = await recorded_server(
        start_server,
        tmp_path,
        greeting=LONG_GREETING,
        outbound_lead_ms=1000,  # 1 s sent ahead of play: what the clear cuts is long
    )
    wait = speech_8k("Wait, I want to cancel my appointment.")
    result = await SimulatedCall(url, audio=[wait], gap_s=1.0, hold_s=2.5, console_token=CONSOLE).run()
    assert len(result.clears) == 1
    record = await wait_ready(url, result.call_sid)
    stereo = read_stereo(tmp_path / ready_events(record)[0]["path"])
    agent, played = stereo[:, 1], result.agent_pcm()
    clear_at = round(result.clears[0] * 8000)
    received = sum(
        size
        for t, size in zip(result.media_received, result.media_sizes, strict=True)
        if t < result.clears[0]
    )
    spoke = np.flatnonzero(agent[: clear_at + 1600])
    first, last = int(spoke[0]), int(spoke[-1])
    # The agent channel ends where the clear was sent: what the simulator had received
    # (sent up to OUTBOUND_LEAD_MS ahead of play) but not played is not in it.
    assert abs(last - clear_at) <= 800, (last, clear_at)  # 100 ms: clocks apart, a loaded machine
    assert last - first + 1 < received - 4000, (first, last, received)
    # Up to the cut it is the audio the simulator played, sample for sample (silences aside).
    ours = agent[: last + 1][agent[: last + 1] != 0]
    theirs = played[: clear_at + 800][played[: clear_at + 800] != 0]
    k = min(len(ours), len(theirs))
    assert k > 4000 and np.array_equal(ours[:k], theirs[:k])
    # After the cut the agent channel is silent until the next reply, which comes only
    # after the caller's turn was heard.
    after = np.flatnonzero(agent[last + 1 :])
    assert len(after) and int(after[0]) > 4000


# -- RECORDING=twilio ------------------------------------------------------------------------


async def test_fake_refuses_recordings_twilio_refuses():
    api = FakeTwilioApi()
    live, done = "CA" + "1" * 32, "CA" + "2" * 32
    api.calls[live], api.calls[done] = "in-progress", "completed"
    base = f"/2010-04-01/Accounts/{ACCOUNT}/Calls"
    good = aiohttp.BasicAuth(ACCOUNT, TOKEN)
    ok = {"RecordingChannels": "dual", "RecordingStatusCallback": "https://v.example.com/cb"}
    async with serve(api.app()) as host, aiohttp.ClientSession(f"http://{host}") as http:

        async def status(sid: str, form: dict[str, str], auth: aiohttp.BasicAuth | None = good) -> int:
            async with http.post(f"{base}/{sid}/Recordings.json", data=form, auth=auth) as resp:
                return resp.status

        assert await status(live, ok, auth=None) == 401
        assert await status("CA" + "3" * 32, ok) == 404
        assert await status(done, ok) == 400  # not in progress
        assert await status(live, {**ok, "RecordingChannels": "stereo"}) == 400
        assert await status(live, {**ok, "RecordingTrack": "all"}) == 400
        assert await status(live, {**ok, "Trim": "yes"}) == 400
        assert await status(live, {**ok, "RecordingStatusCallbackMethod": "PUT"}) == 400
        assert await status(live, {**ok, "RecordingStatusCallback": "/relative"}) == 400
        assert await status(live, {**ok, "RecordingStatusCallbackEvent": "completed done"}) == 400
        assert await status(live, {**ok, "RecordingStatusCallbackEvent": "completed absent"}) == 201
    assert len(api.recordings) == 1


@pytest.mark.slow
async def test_twilio_recording_started_dual_and_its_callback_gives_ready(start_server):
    api = FakeTwilioApi()
    posted: list[dict] = []

    async def on_event(request: web.Request) -> web.Response:
        body = await request.read()
        h = request.headers
        assert verify(
            "events-secret", h["X-Callbridge-Timestamp"], body, h["X-Callbridge-Signature"], time.time()
        )
        posted.append(json.loads(body))
        return web.Response(status=204)

    receiver = web.Application()
    receiver.router.add_post("/events", on_event)
    async with serve(api.app()) as host, serve(receiver) as events_host:
        url = await start_server(
            upstream="echo",
            recording="twilio",
            twilio_auth_token=TOKEN,
            twilio_account_sid=ACCOUNT,
            twilio_api_url=f"http://{host}",
            console_token=CONSOLE,
            events_url=f"http://{events_host}/events",
            events_secret="events-secret",
        )
        call = SimulatedCall(
            url, audio=[speech_8k("Record this.")], hold_s=0.5, auth_token=TOKEN, console_token=CONSOLE
        )
        api.calls[call.call_sid] = "in-progress"
        # A call Twilio does not know (404): the recording is not started, the timeline says why.
        unknown = SimulatedCall(url, audio=[speech_8k("Record this.")], hold_s=0.5, auth_token=TOKEN)
        result, _ = await asyncio.gather(call.run(), unknown.run())
        await until(lambda: bool(api.recordings), 5.0)
        ((rsid, (sid, form)),) = api.recordings.items()
        assert sid == result.call_sid
        assert form["RecordingChannels"] == "dual" and form["RecordingTrack"] == "both"
        assert form["RecordingStatusCallbackEvent"] == "completed absent"
        callback, params = api.recording_completed(rsid, seconds=4)
        assert callback == f"{url}/twilio/recording-status"
        async with aiohttp.ClientSession() as http:
            async with http.post(callback, data=params, headers={"X-Twilio-Signature": "forged"}) as resp:
                assert resp.status == 403
            signature = SignatureChecker.sign(TOKEN, callback, params)
            async with http.post(callback, data=params, headers={"X-Twilio-Signature": signature}) as resp:
                assert resp.status == 204
        record = await wait_ready(url, result.call_sid)
        await until(lambda: any(p["event"] == "recording.ready" for p in posted), 5.0)
    (ready,) = ready_events(record)
    assert ready["mode"] == "twilio" and ready["recordingSid"] == rsid
    assert ready["url"] == params["RecordingUrl"] and ready["seconds"] == 4
    assert [e["recordingSid"] for e in record["timeline"] if e["event"] == "recording.started"] == [rsid]
    (event,) = [p for p in posted if p["event"] == "recording.ready"]
    assert event["callSid"] == result.call_sid and event["data"]["url"] == params["RecordingUrl"]
    other = await call_record(url, unknown.call_sid)
    (error,) = [e for e in other["timeline"] if e["event"] == "recording.error"]
    assert "404" in error["error"]


# -- the spoken notice ---------------------------------------------------------------------------


@pytest.mark.slow
async def test_recording_notice_is_said_before_the_greeting(start_server, tmp_path):
    url = await recorded_server(
        start_server,
        tmp_path,
        recording_notice="This call is recorded.",
    )
    result = await SimulatedCall(
        url, audio=[np.zeros(8000, np.int16)], hold_s=4.0, console_token=CONSOLE
    ).run()
    (notice,) = events(result, "recording_notice_synthesised")
    (greeting,) = events(result, "greeting_synthesised")
    assert notice["text"] == "This call is recorded." and notice["utterance"] < greeting["utterance"]
    names = result.timeline_events()
    assert names.index("recording_notice_audio") < names.index("greeting_audio")


@pytest.mark.slow
async def test_a_resumed_call_gets_a_second_part(start_server, tmp_path):
    url = await recorded_server(
        start_server,
        tmp_path,
        upstream="echo",
        fault_injection=True,
    )
    call = SimulatedCall(url, audio=[speech_8k("One two three four five six seven.")], hold_s=1.0)
    running = asyncio.create_task(call.run())
    await until(call.started.is_set, 10.0)
    await asyncio.sleep(1.5)
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{url}/calls/{call.call_sid}/fault?child=socket", headers={"Authorization": f"Bearer {CONSOLE}"}
        ) as resp,
    ):
        assert resp.status == 200
    result = await asyncio.wait_for(running, 60)
    assert len(result.streams) == 2
    record = await wait_ready(url, result.call_sid, count=2)
    parts = sorted((e["part"], e["path"]) for e in ready_events(record))
    assert parts == [(1, f"{result.call_sid}.wav"), (2, f"{result.call_sid}.2.wav")]
    first, second = (read_stereo(tmp_path / path) for _, path in parts)
    # The first part ends at the drop; the second starts again at its own stream's media time 0.
    drop_s = result.streams[1][0]
    assert abs(len(first) / 8000 - drop_s) < 1.0, (len(first), drop_s)
    assert len(second) > 8000
    async with aiohttp.ClientSession() as http:
        where = f"{url}/calls/{result.call_sid}/recording?part=2"
        async with http.get(where, headers={"Authorization": f"Bearer {CONSOLE}"}) as resp:
            assert resp.status == 200 and await resp.read() == (tmp_path / parts[1][1]).read_bytes()


def test_settings_are_checked():
    with pytest.raises(ConfigError, match="RECORDING must be"):
        Settings(recording="yes")
    with pytest.raises(ConfigError, match="RECORDING=twilio needs"):
        Settings(recording="twilio")
    for name, bad in (
        ("recordings_max_mb", 0.0),
        ("recordings_retention_h", -1.0),
        ("recordings_max_call_s", 0.0),
        ("recordings_dir", " "),
        ("recording_notice", "x" * 501),
    ):
        with pytest.raises(ConfigError):
            Settings(**{name: bad})
    ok = Settings(
        recording="local", recordings_dir="/tmp/r", recordings_max_mb=5.0, recording_notice="Recorded."
    )
    assert (ok.recordings.mode, ok.recordings.dir, ok.recordings.max_mb) == ("local", "/tmp/r", 5.0)


@pytest.mark.prod
@pytest.mark.slow
async def test_prod_shards_write_into_one_directory_any_shard_serves(nodes, tmp_path):
    folder = tmp_path / "recordings"
    node = nodes(workers=2, RECORDING="local", RECORDINGS_DIR=str(folder), UPSTREAM="echo")
    node.wait_ready()
    node.wait_for(lambda h: len(h.get("pool", {}).get("shards", [])) == 2)
    calls = [
        SimulatedCall(
            node.url,
            audio=[speech_8k("Recorded in production mode.")],
            hold_s=0.5,
            auth_token=AUTH_TOKEN,
            public_url=PUBLIC_URL,
            console_token=CONSOLE_TOKEN,
        )
        for _ in range(3)
    ]
    results = await asyncio.gather(*(c.run() for c in calls))
    operator = {"Authorization": f"Bearer {CONSOLE_TOKEN}"}
    async with aiohttp.ClientSession(headers=operator) as http:
        for result in results:
            where = f"{node.url}/calls/{result.call_sid}/recording"
            for _ in range(250):
                async with http.get(where) as resp:
                    if resp.status == 200:
                        break
                await asyncio.sleep(0.02)
            for _ in range(6):  # whichever shard the kernel picks finds it by name
                async with http.get(where) as resp:
                    assert resp.status == 200
                    body = await resp.read()
            stereo = read_stereo(folder / f"{result.call_sid}.wav")
            assert body == (folder / f"{result.call_sid}.wav").read_bytes()
            caller = result.caller_pcm()
            assert np.array_equal(stereo[: len(caller), 0], caller)
    assert node.terminate() == 0
