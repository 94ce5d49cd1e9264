"""Production mode, for real: ``run.py serve --mode prod`` as a process tree on thespian's
multiprocTCPBase, real shard processes sharing the port, real simulated Twilio calls;
faults are real signals. Each test bounds its time; every process is reaped."""

from __future__ import annotations

import asyncio
import json
import os
import signal

import aiohttp
import pytest

from callbridge.cli import bundled_turns
from callbridge.sim.caller import SimulatedCall
from callbridge.sim.wavio import read_wav
from callbridge.testing.nodes import AUTH_TOKEN, CONSOLE_TOKEN, PUBLIC_URL

pytestmark = [pytest.mark.prod, pytest.mark.slow]

OPERATOR = {"Authorization": f"Bearer {CONSOLE_TOKEN}"}

TURNS = [read_wav(p) for p in bundled_turns()]


def new_call(url: str, **kwargs) -> SimulatedCall:
    return SimulatedCall(
        url,
        audio=TURNS,
        polite=True,
        hold_s=4.0,
        auth_token=AUTH_TOKEN,
        public_url=PUBLIC_URL,
        console_token=CONSOLE_TOKEN,
        **kwargs,
    )


async def call_record(url: str, call_sid: str, until: str, limit_s: float = 30.0) -> dict:
    """The call's record once its timeline has ``until`` (any shard answers)."""
    async with aiohttp.ClientSession(headers=OPERATOR) as http:
        for _ in range(int(limit_s / 0.05)):
            async with http.get(f"{url}/calls/{call_sid}") as resp:
                if resp.status == 200:
                    record = await resp.json()
                    if any(e["event"] == until for e in record["timeline"]):
                        return record
            await asyncio.sleep(0.05)
    raise AssertionError(f"call never reached {until}")


def booked(record: dict) -> bool:
    replies = [e for e in record["timeline"] if e["event"] in ("agent.reply", "transcript.final")]
    assert any(e.get("state", {}).get("bookings") for e in replies), [e.get("text") for e in replies]
    return True


async def test_sigkill_of_the_shard_carrying_a_call_resumes_it_elsewhere(nodes):
    node = nodes(workers=2)
    node.wait_ready()
    health = node.wait_for(lambda h: len(h.get("pool", {}).get("shards", [])) == 2)
    pids = {s["pid"] for s in health["pool"]["shards"]}
    call = new_call(node.url)
    running = asyncio.create_task(call.run())
    record = await call_record(node.url, call.call_sid, "agent.reply")
    victim = record["pid"]
    assert victim in pids
    for _ in range(4):  # whichever shard answers lists every shard's calls
        status, listing = await asyncio.to_thread(node.get, "/calls")
        assert status == 200 and call.call_sid in [c["callSid"] for c in listing["calls"]]
    os.kill(victim, signal.SIGKILL)
    result = await asyncio.wait_for(running, 90)

    assert len(result.streams) == 2 and result.ended_by == "hangup", (result.streams, result.ended_by)
    final = result.record
    assert final["pid"] != victim and final["pid"] in pids | {
        s["pid"] for s in node.health()["pool"]["shards"]
    }
    assert next(e for e in final["timeline"] if e["event"] == "resumed")["from_pid"] == victim
    assert booked(final), "the agent's state (the pending booking) survived the crash"
    # The pool replaced the dead shard; two shards serve again.
    health = node.wait_for(
        lambda h: (
            h["pool"]["shard_restarts"] >= 1
            and sum(s["up"] for s in h["pool"]["shards"]) == 2
            and victim not in {s["pid"] for s in h["pool"]["shards"]}
        )
    )
    # Whichever shard is scraped reports the deployment's shard restarts.
    for _ in range(50):
        metrics = await asyncio.to_thread(node.text, "/metrics")
        if "callbridge_shard_restarts_total 1.0" in metrics:
            break
        await asyncio.sleep(0.2)
    assert "callbridge_shard_restarts_total 1.0" in metrics
    assert node.terminate() == 0


async def test_exception_in_each_child_keeps_the_call(nodes):
    node = nodes(workers=2, FAULT_INJECTION="1")
    node.wait_ready()
    call = new_call(node.url)
    running = asyncio.create_task(call.run())
    await call_record(node.url, call.call_sid, "started")
    connector = aiohttp.TCPConnector(force_close=True)  # a new connection (and shard) each try
    async with aiohttp.ClientSession(connector=connector, headers=OPERATOR) as http:
        for role in ("codec", "jitter", "upstream", "bargein"):
            for _ in range(40):  # the kernel picks the shard: retry until the call's own answers
                async with http.post(f"{node.url}/calls/{call.call_sid}/fault?child={role}") as resp:
                    if resp.status == 200:
                        break
                    assert resp.status == 404
            else:
                raise AssertionError(f"never reached the shard carrying the call ({role})")
            await asyncio.sleep(0.3)
    result = await asyncio.wait_for(running, 90)
    assert len(result.streams) == 1 and result.ended_by == "hangup"
    restarted = [e["child"] for e in result.record["timeline"] if e["event"] == "child_restarted"]
    assert sorted(restarted) == ["bargein", "codec", "jitter", "upstream"]
    assert booked(result.record)
    assert node.terminate() == 0


async def test_sigterm_drains_a_running_call_then_exits_0(nodes):
    node = nodes(workers=1, DRAIN_S="60")
    node.wait_ready()
    # Thespian's sockets (they unpickle what arrives) bind THESPIAN_BASE_IPADDR only.
    listening = node.listening()
    assert (("127.0.0.1", node.admin_port)) in listening and len(listening) >= 4
    assert {ip for ip, _ in listening} == {"127.0.0.1"}, listening
    call = new_call(node.url)
    running = asyncio.create_task(call.run())
    await call_record(node.url, call.call_sid, "transcript.final")
    node.proc.send_signal(signal.SIGTERM)
    await asyncio.to_thread(node.wait_for, lambda h: h["status"] == "draining", 10)
    status, _ = await asyncio.to_thread(node.get, "/healthz")
    assert status == 503
    # A new call is turned away while draining, not hung.
    refused = await asyncio.wait_for(new_call(node.url).run(), 30)
    assert refused.ended_by == "hangup" and not refused.streams
    result = await asyncio.wait_for(running, 90)  # the running call finishes normally
    assert result.ended_by == "hangup" and len(result.streams) == 1 and booked(result.record)
    assert await asyncio.to_thread(node.proc.wait, 30) == 0
    assert "drained" in node.proc.stdout.read().decode()


async def test_a_hung_shard_is_noticed_by_heartbeat_and_replaced(nodes):
    node = nodes(workers=2)
    node.wait_ready()
    health = node.wait_for(lambda h: len(h.get("pool", {}).get("shards", [])) == 2)
    victim = health["pool"]["shards"][0]["pid"]
    os.kill(victim, signal.SIGSTOP)  # alive to the kernel and to thespian, but silent
    try:
        health = node.wait_for(
            lambda h: (
                h["pool"]["shard_restarts"] >= 1
                and victim not in {s["pid"] for s in h["pool"]["shards"]}
                and all(s["up"] for s in h["pool"]["shards"])
            ),
            timeout_s=30,
        )
    finally:
        try:
            os.kill(victim, signal.SIGCONT)
        except ProcessLookupError:
            pass
    assert "silent for" in node.log_path.read_text(errors="replace")  # all of it: polls fill the tail
    assert node.terminate() == 0


async def test_two_nodes_share_a_pool_and_a_lost_member_s_call_resumes_on_the_leader(nodes):
    leader = nodes(workers=1, node="alpha")
    leader.wait_ready()
    member = nodes(workers=1, node="beta", leader=f"127.0.0.1:{leader.admin_port}")
    member.wait_ready(marker="joined leader")
    health = leader.wait_for(
        lambda h: sorted(s["node"] for s in h["pool"]["shards"] if s["up"]) == ["alpha", "beta"], timeout_s=60
    )
    member_pids = {s["pid"] for s in health["pool"]["shards"] if s["node"] == "beta"}
    # A call through the member's gateway is carried there, checkpointed to the leader.
    call = new_call(member.url)
    running = asyncio.create_task(call.run())
    record = await call_record(member.url, call.call_sid, "agent.reply")
    assert record["pid"] in member_pids
    # The whole member machine goes away; the load balancer now sends Twilio to the leader.
    member.kill()
    call.base_url = leader.url
    result = await asyncio.wait_for(running, 90)
    assert len(result.streams) == 2 and result.ended_by == "hangup"
    resumed = [e for e in result.record["timeline"] if e["event"] == "resumed"]
    assert resumed and resumed[0]["from_pid"] in member_pids
    assert booked(result.record)
    # Heartbeat silence: the leader stops counting the member's shard.
    leader.wait_for(lambda h: [s["node"] for s in h["pool"]["shards"]] == ["alpha"], timeout_s=30)
    assert leader.terminate() == 0


async def test_the_pool_supervisor_dies_a_new_one_adopts_the_shards_and_calls_go_on(nodes):
    node = nodes(workers=2)
    node.wait_ready()
    health = node.wait_for(lambda h: len(h.get("pool", {}).get("shards", [])) == 2)
    shards = {s["pid"] for s in health["pool"]["shards"]}
    pool_pid = {_ppid(p) for p in shards}.pop()  # the shards' parent is the pool
    call = new_call(node.url)
    running = asyncio.create_task(call.run())
    await call_record(node.url, call.call_sid, "agent.reply")
    os.kill(pool_pid, signal.SIGKILL)
    # run.py serve notices and starts a new pool, which adopts the running shards.
    health = await asyncio.to_thread(node.wait_for, lambda h: bool(h.get("pool")), 15)
    assert {s["pid"] for s in health["pool"]["shards"]} == shards
    # The call was never dropped, and the new pool holds its state again: a shard crash
    # after the pool's death still resumes it.
    record = await call_record(node.url, call.call_sid, "agent.reply")
    os.kill(record["pid"], signal.SIGKILL)
    result = await asyncio.wait_for(running, 90)
    assert len(result.streams) == 2 and result.ended_by == "hangup"
    assert booked(result.record)
    node.wait_for(
        lambda h: (
            h["pool"]["shard_restarts"] >= 1
            and all(s["up"] for s in h["pool"]["shards"])
            and len(h["pool"]["shards"]) == 2
        )
    )
    assert node.terminate() == 0


async def test_a_stream_token_starts_one_stream_whichever_shard_it_reaches(nodes):
    """Single-use holds across shards: the pool's store remembers the token; replays land
    on either shard (the kernel spreads connections) and every one is refused."""
    from callbridge.codecs import mediastreams as ms
    from callbridge.gateway.security import SignatureChecker
    from callbridge.sim.caller import new_sid, parse_stream_twiml

    node = nodes(workers=2)
    node.wait_ready()
    node.wait_for(lambda h: len(h.get("pool", {}).get("shards", [])) == 2)
    call_sid = new_sid("CA")
    params = {"CallSid": call_sid}
    webhook_sig = SignatureChecker.sign(AUTH_TOKEN, PUBLIC_URL + "/voice/inbound", params)
    ws_url = node.url.replace("http://", "ws://") + "/media"
    handshake = {"X-Twilio-Signature": SignatureChecker.sign(AUTH_TOKEN, "wss://callbridge.test/media", {})}
    async with aiohttp.ClientSession() as http:
        async with http.post(
            node.url + "/voice/inbound", data=params, headers={"X-Twilio-Signature": webhook_sig}
        ) as resp:
            _, parameters = parse_stream_twiml(await resp.text())

        async def closed(ws: aiohttp.ClientWebSocketResponse) -> int | None:
            while (await ws.receive(timeout=10)).type not in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSED,
            ):
                pass  # the greeting's audio, before the close
            return ws.close_code

        async def start(stream_sid: str) -> aiohttp.ClientWebSocketResponse:
            ws = await http.ws_connect(ws_url, headers=handshake)
            await ws.send_str(ms.twilio_start(1, stream_sid, call_sid, "AC1", parameters))
            return ws

        first_sid = new_sid("MZ")
        first = await start(first_sid)
        await first.send_str(ms.twilio_stop(2, first_sid, call_sid, "AC1"))
        assert await closed(first) == 1000
        codes = [await closed(await start(new_sid("MZ"))) for _ in range(8)]
        assert codes == [1008] * 8, codes
    assert node.log_text().count("stream token already used") == 8


def _ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


async def test_json_logs_make_every_line_of_a_node_one_json_object(nodes):
    """``LOG_FORMAT=json``: what the node process prints, what its shards and pool log
    (through thespian's logger process or straight to the inherited stderr) and thespian's
    own lines are each one JSON object per line, on stdout and stderr alike."""
    node = nodes(workers=2, LOG_FORMAT="json")
    node.wait_ready()
    node.wait_for(lambda h: len(h.get("pool", {}).get("shards", [])) == 2)
    call = SimulatedCall(
        node.url,
        audio=[TURNS[2]],  # "Goodbye": the agent ends the call
        polite=True,
        hold_s=5.0,
        auth_token=AUTH_TOKEN,
        public_url=PUBLIC_URL,
        console_token=CONSOLE_TOKEN,
    )
    result = await asyncio.wait_for(call.run(), 60)
    assert result.record["stop_reason"] == "the agent ended the call"
    assert await asyncio.to_thread(node.terminate) == 0
    stdout = node.banner + node.proc.stdout.read().decode()
    stderr = node.log_text()
    events = []
    for stream, text in (("stdout", stdout), ("stderr", stderr)):
        for line in text.splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                raise AssertionError(f"not JSON on {stream}: {line!r}") from None
            assert isinstance(event, dict) and {"ts", "level", "logger", "msg"} <= event.keys(), line
            events.append(event)
    msgs = [e["msg"] for e in events]
    assert any("prod mode listening on" in m for m in msgs) and "drained" in msgs
    assert any(m.startswith("++++ Actor System") for m in msgs)  # thespian's own
    assert any("shard 0 up" in m for m in msgs) and any("shard 1 (pid" in m for m in msgs)
    assert len({e["pid"] for e in events if "pid" in e}) >= 4  # admin, logger, pool, shards
    ending = [e for e in events if "ending: the agent ended the call" in e["msg"]]
    assert [(e["level"], e["callSid"]) for e in ending] == [("INFO", call.call_sid)]
