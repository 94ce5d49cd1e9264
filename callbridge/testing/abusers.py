"""Abusive Media Streams peers, shared by ``tests/test_abuse.py`` and ``bench/abuse.py``.

Each ``Abuse`` is one socket doing one bad thing over a real loopback connection: before
or after a valid ``start``, it sends ``message(n)`` at ``rate`` messages per second
(``rate`` 0: as fast as the socket takes them) for ``seconds`` or ``count`` messages,
whichever comes first, reading whatever the server sends so its close is seen.
``run_abuse`` plays one and says what happened; the measuring is the caller's
(log records, the call's record, checkpoints, a bystander: ``fuzz_targets.Bystander``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
import orjson

from callbridge.codecs import mediastreams as ms
from callbridge.sim.caller import new_sid, parse_stream_twiml

ALLOWED_RATE = 120.0
"""Messages per second an abuser keeps to: under the default ``INBOUND_RATE`` (3 x 50
frames/s), so the server must cope with the abuse rather than close the socket."""


@dataclass(frozen=True)
class Abuse:
    message: Callable[[int, str], str]
    """(n, streamSid) -> the n-th message."""
    started: bool = True
    rate: float = ALLOWED_RATE
    seconds: float = 3.0
    count: int = 1_000_000
    trace: str = ""
    """What the peer sent that must not end up stored."""
    ignored: bool = True
    """Every message is bad input the server ignores (and counts)."""


@dataclass
class Outcome:
    call_sid: str
    sent: int = 0
    close_code: int | None = None
    seconds: float = 0.0


def _mark(name: str) -> Callable[[int, str], str]:
    return lambda n, sid: ms.twilio_mark(n + 2, sid, name)


def _unknown(n: int, sid: str) -> str:
    return orjson.dumps({"event": f"surprise-{n}", "sequenceNumber": str(n + 2), "streamSid": sid}).decode()


ABUSES: dict[str, Abuse] = {
    "marks with 60 KB names": Abuse(_mark("x" * 60_000), trace="x" * 100),
    "marks named u²": Abuse(_mark("u²"), trace="u²"),
    "marks named u and 5,000 digits": Abuse(_mark("u" + "7" * 5000), trace="7" * 100),
    "50,000 unknown events before start": Abuse(_unknown, started=False, rate=0, seconds=15.0, count=50_000),
    "unknown events after start": Abuse(_unknown, trace="surprise-"),
    "DTMF at the allowed rate": Abuse(lambda n, sid: ms.twilio_dtmf(n + 2, sid, "5"), ignored=False),
}


async def stream_token(http: aiohttp.ClientSession, url: str, call_sid: str) -> str:
    async with http.post(url + "/voice/inbound", data={"CallSid": call_sid}) as resp:
        return parse_stream_twiml(await resp.text())[1]["token"]


async def run_abuse(http: aiohttp.ClientSession, url: str, abuse: Abuse) -> Outcome:
    """One abusive socket, from connect to close (ours, with a ``stop``, if the server
    did not close it first)."""
    out = Outcome(new_sid("CA"))
    stream_sid = new_sid("MZ")
    ws = await http.ws_connect(url + "/media", max_msg_size=1 << 20)
    reader = asyncio.create_task(_drain(ws))
    if abuse.started:
        token = await stream_token(http, url, out.call_sid)
        await ws.send_str(ms.twilio_start(1, stream_sid, out.call_sid, "AC1", {"token": token}))
    t0 = time.monotonic()
    try:
        while out.sent < abuse.count and time.monotonic() - t0 < abuse.seconds and not reader.done():
            await ws.send_str(abuse.message(out.sent, stream_sid))
            out.sent += 1
            if abuse.rate:
                await asyncio.sleep(max(0.0, t0 + out.sent / abuse.rate - time.monotonic()))
            elif out.sent % 100 == 0:
                await asyncio.sleep(0)  # let the reader see a close
    except (ConnectionError, RuntimeError):
        pass  # the server closed the socket under us
    out.seconds = time.monotonic() - t0
    if not reader.done() and not ws.closed:
        try:
            await ws.send_str(ms.twilio_stop(out.sent + 2, stream_sid, out.call_sid, "AC1"))
        except (ConnectionError, RuntimeError):
            pass
    out.close_code = await asyncio.wait_for(reader, 10)
    await ws.close()
    return out


async def _drain(ws: aiohttp.ClientWebSocketResponse) -> int | None:
    while True:
        msg = await ws.receive()
        if msg.type in (
            aiohttp.WSMsgType.CLOSE,
            aiohttp.WSMsgType.CLOSED,
            aiohttp.WSMsgType.CLOSING,
            aiohttp.WSMsgType.ERROR,
        ):
            return ws.close_code
