"""The call store's promises across a production cluster, for real: one live stream per
CallSid on any shard, and single-use stream tokens and ended calls that outlive a pool
restart. Real ``run.py serve --mode prod`` process trees, real sockets, real signals."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket

import aiohttp
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from callbridge.codecs import mediastreams as ms
from callbridge.gateway.security import SignatureChecker, stream_url
from callbridge.sim.caller import new_sid, parse_stream_twiml, parse_twiml
from callbridge.testing.nodes import AUTH_TOKEN, PUBLIC_URL, ProdNode

from .test_prod import _ppid, booked, call_record, new_call

pytestmark = [pytest.mark.prod, pytest.mark.slow]

HANDSHAKE = {"X-Twilio-Signature": SignatureChecker.sign(AUTH_TOKEN, stream_url(PUBLIC_URL), {})}


async def webhook(node: ProdNode, call_sid: str, path: str = "/voice/inbound") -> str:
    """POST the voice webhook for ``call_sid`` as Twilio signs it; the TwiML."""
    params = {"CallSid": call_sid}
    headers = {"X-Twilio-Signature": SignatureChecker.sign(AUTH_TOKEN, PUBLIC_URL + path, params)}
    async with (
        aiohttp.ClientSession() as http,
        http.post(node.url + path, data=params, headers=headers) as resp,
    ):
        return await resp.text()


async def stream_parameters(node: ProdNode, call_sid: str) -> dict[str, str]:
    """What the webhook (a first one, or a replay) hands the stream of ``call_sid``."""
    return parse_stream_twiml(await webhook(node, call_sid))[1]


async def redirect_verbs(node: ProdNode, call_sid: str) -> list[str]:
    """What Twilio's ``<Redirect>`` after the stream gets."""
    return [verb for verb, _, _ in parse_twiml(await webhook(node, call_sid, "/voice/inbound?attempt=1"))]


def _connection_to(node: ProdNode, pid: int | None, tries: int = 200) -> socket.socket:
    """A TCP connection that the kernel gave to the shard ``pid`` (any shard if None):
    ask ``/healthz`` on it (keep-alive) and keep the one whose answer names that pid."""
    for _ in range(tries):
        sock = socket.create_connection(("127.0.0.1", node.port), timeout=5)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
        while len(body) < length:
            body += sock.recv(65536)
        if pid is None or json.loads(body)["pid"] == pid:
            sock.settimeout(None)
            return sock
        sock.close()
    raise AssertionError(f"no connection reached shard {pid} in {tries} tries")


async def stream_on(node: ProdNode, pid: int | None) -> ClientConnection:
    """A Media Streams socket (Twilio's handshake signature) on the shard ``pid``."""
    sock = await asyncio.to_thread(_connection_to, node, pid)
    return await connect(
        node.url.replace("http://", "ws://") + "/media",
        sock=sock,
        additional_headers=HANDSHAKE,
        proxy=None,
        compression=None,
        open_timeout=10,
    )


async def close_code(ws: ClientConnection, limit_s: float = 10.0) -> int | None:
    """Read until the server closes; its close code (the greeting's audio may come
    first), None if it is still open after ``limit_s``."""

    async def drain() -> None:
        try:
            while True:
                await ws.recv()
        except ConnectionClosed:
            pass

    try:
        await asyncio.wait_for(drain(), limit_s)
    except TimeoutError:
        return None
    return ws.close_code


def two_shards(nodes) -> tuple[ProdNode, set[int]]:
    """A node with two shards up, and their pids."""
    node = nodes(workers=2)
    node.wait_ready()
    health = node.wait_for(lambda h: len(h.get("pool", {}).get("shards", [])) == 2)
    return node, {s["pid"] for s in health["pool"]["shards"]}


async def test_a_live_call_gets_no_second_stream_on_any_shard(nodes):
    """A replayed webhook of a live call yields a token with resume=1; the stream it opens
    is refused with 1008 on the other shard as on the call's own, and the call goes on."""
    node, pids = two_shards(nodes)
    call = new_call(node.url)
    running = asyncio.create_task(call.run())
    record = await call_record(node.url, call.call_sid, "agent.reply")
    owner = record["pid"]
    [other] = pids - {owner}
    frames_before = record["stats"]["frames_in"]
    for shard in (other, owner):
        params = await stream_parameters(node, call.call_sid)
        assert params["resume"] == "1"  # the store knows the call: a live one
        ws = await stream_on(node, shard)
        await ws.send(ms.twilio_start(1, new_sid("MZ"), call.call_sid, call.account_sid, params))
        assert await close_code(ws) == 1008, f"a second stream was taken on shard {shard} (owner {owner})"
    result = await asyncio.wait_for(running, 90)
    assert len(result.streams) == 1 and result.close_code == 1000 and result.ended_by == "hangup"
    assert result.record["resumes"] == 0 and result.record["pid"] == owner
    assert result.record["stats"]["frames_in"] > frames_before + 100  # its audio kept flowing
    assert booked(result.record)
    assert node.log_text().count("already has a live stream") == 2
    assert node.terminate() == 0


async def test_used_tokens_and_ended_calls_survive_a_pool_restart(nodes):
    """Use a token, end the call, SIGKILL the pool supervisor: once the new pool has
    adopted the shards, the token is still refused on every shard and the redirect after
    the hang-up still gets ``<Hangup/>``."""
    node, shards = two_shards(nodes)
    pool_pid = {_ppid(p) for p in shards}.pop()
    call_sid = new_sid("CA")
    params = await stream_parameters(node, call_sid)  # the first webhook of a new call
    stream_sid = new_sid("MZ")
    ws = await stream_on(node, None)
    await ws.send(ms.twilio_start(1, stream_sid, call_sid, "AC1", params))
    await ws.send(ms.twilio_stop(2, stream_sid, call_sid, "AC1"))
    assert await close_code(ws) == 1000
    assert await redirect_verbs(node, call_sid) == ["hangup"]

    await asyncio.sleep(2.5)  # run.py serve learns the shards to hand over from its 1 s health checks
    os.kill(pool_pid, signal.SIGKILL)
    await asyncio.to_thread(
        node.wait_for, lambda h: bool(h.get("pool")) and {s["pid"] for s in h["pool"]["shards"]} == shards, 20
    )
    assert "pool supervisor lost" in node.proc.stdout.read().decode()
    assert await redirect_verbs(node, call_sid) == ["hangup"]
    for shard in sorted(shards) * 2:
        replay = await stream_on(node, shard)
        await replay.send(ms.twilio_start(1, new_sid("MZ"), call_sid, "AC1", params))
        assert await close_code(replay) == 1008, f"a used token started a stream on shard {shard}"
    assert node.log_text().count("stream token already used") == 4
    assert node.terminate() == 0
