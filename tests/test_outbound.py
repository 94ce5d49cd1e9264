"""Framing and pacing of outbound audio, with time passed in."""

from __future__ import annotations

import asyncio
import itertools
import json
import time

from hypothesis import given
from hypothesis import strategies as st

from callbridge.codecs.framing import Framer
from callbridge.codecs.marks import MarkName
from callbridge.gateway.output import OutboundWriter, Pacer


@given(st.lists(st.binary(max_size=700), max_size=30))
def test_framer_cuts_exact_frames_and_loses_nothing(pieces):
    framer = Framer(160)
    frames = [f for p in pieces for f in framer.push(p)]
    last = framer.flush()
    assert all(len(f) == 160 for f in frames)
    joined = b"".join(frames)
    total = b"".join(pieces)
    assert joined == total[: len(joined)]
    if last is not None:
        assert len(last) == 160 and last == total[len(joined) :].ljust(160, b"\xff")
    else:
        assert joined == total
    assert framer.pending == 0


def test_pacer_keeps_lead_bounded_and_steady():
    pacer = Pacer(lead_s=0.2)
    now, sent, times = 100.0, 0, []
    while sent < 100:  # a producer with 100 frames ready at once
        if pacer.next_send_at(now) <= now:
            pacer.sent(now)
            times.append(now)
            sent += 1
        else:
            now += 0.001
        assert pacer.buffered_s(now) <= 0.2 + 0.02 + 1e-9
    # The first ~10 frames leave at once (the lead), then one per 20 ms.
    assert sum(t == 100.0 for t in times) == 11
    gaps = [b - a for a, b in itertools.pairwise(times[11:])]
    assert all(0.019 <= g <= 0.021 for g in gaps)


def test_pacer_after_underrun_and_clear():
    pacer = Pacer(lead_s=0.1)
    pacer.sent(10.0)
    assert abs(pacer.buffered_s(10.0) - 0.02) < 1e-9
    assert pacer.buffered_s(11.0) == 0.0  # played out long ago
    pacer.sent(11.0)  # playback restarts from now, not from the stale end
    assert abs(pacer.play_end - 11.02) < 1e-9
    pacer.cleared(11.005)
    assert pacer.buffered_s(11.005) == 0.0


# -- OutboundWriter: pacing, a send that waits, order -----------------------------------------


class Peer:
    """The socket's send side as the writer sees it: ``send`` returns at once, or waits
    on ``gate`` while it is set (a paused transport), as aiohttp's does."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []
        self.gate: asyncio.Future[None] | None = None
        self.fail = False

    async def send(self, text: str) -> None:
        if self.fail:
            raise ConnectionResetError("gone")
        msg = json.loads(text)
        kind = msg["event"]
        self.sent.append(
            (kind, msg.get("media", msg.get("mark", {})).get("payload", msg.get("mark", {}).get("name", "")))
        )
        if self.gate is not None:
            await self.gate


async def _writer(peer: Peer, lead_s: float = 0.1) -> tuple[OutboundWriter, asyncio.Task[None]]:
    w = OutboundWriter(peer.send, "MZ1", lead_s, time.monotonic)
    task = asyncio.get_running_loop().create_task(w.run())
    await asyncio.sleep(0)  # the task parks on its empty queue
    return w, task


def _b64(i: int) -> str:
    import base64

    return base64.b64encode(bytes([i]) * 160).decode()


async def test_writer_paces_at_the_lead_then_real_time_in_order():
    peer = Peer()
    w, task = await _writer(peer, lead_s=0.1)
    for i in range(1, 21):
        w.frame(bytes([i]) * 160)
    await asyncio.sleep(0.005)
    assert len(peer.sent) == 6  # the lead: 100 ms ahead of real time, then it waits
    await asyncio.sleep(0.15)
    assert 11 <= len(peer.sent) <= 14  # then one per 20 ms
    assert [p for _, p in peer.sent] == [_b64(i) for i in range(1, len(peer.sent) + 1)]
    w.close()
    await task


async def test_writer_send_that_waits_keeps_order_and_reports_blocked():
    peer = Peer()
    w, task = await _writer(peer, lead_s=2.0)
    peer.gate = asyncio.get_running_loop().create_future()
    w.frame(bytes([1]) * 160)
    await asyncio.sleep(0.005)  # sent, then waiting for the peer (a paused transport)
    assert w.blocked_since is not None and peer.sent == [("media", _b64(1))]
    w.frame(bytes([2]) * 160)
    w.mark(MarkName(1))
    w.frame(bytes([3]) * 160)
    await asyncio.sleep(0.01)
    assert len(peer.sent) == 1  # everything else waits behind it, in order
    gate, peer.gate = peer.gate, None
    gate.set_result(None)
    await asyncio.sleep(0.01)
    assert peer.sent == [("media", _b64(1)), ("media", _b64(2)), ("mark", "u1"), ("media", _b64(3))]
    assert w.blocked_since is None and w.frames_sent == 3 and w.marks_sent == 1
    w.close()
    await task


async def test_writer_clear_jumps_the_queue():
    peer = Peer()
    w, task = await _writer(peer, lead_s=0.04)
    for i in range(1, 6):
        w.frame(bytes([i]) * 160)
    await asyncio.sleep(0.005)  # 3 leave (the lead), 2 wait for their time
    w.clear()
    w.frame(bytes([9]) * 160)
    await asyncio.sleep(0.01)
    kinds = [k for k, _ in peer.sent]
    assert kinds[:3] == ["media"] * 3 and kinds[3] == "clear"
    assert peer.sent[4:] == [("media", _b64(9))]  # the 2 pending were dropped
    w.close()
    await task


async def test_writer_stops_when_the_socket_is_gone():
    peer = Peer()
    w, task = await _writer(peer)
    peer.fail = True
    w.frame(b"\x01" * 160)
    await asyncio.wait_for(task, 1.0)  # no exception out of the task
    assert w.closed and w.frames_sent == 0
    w.frame(b"\x02" * 160)  # later frames are dropped
    assert w.frames_sent == 0


async def test_writer_awaits_only_the_marks_it_sent_and_a_clear_cuts_them():
    peer = Peer()
    w, task = await _writer(peer, lead_s=0.01)
    w.frame(bytes([1]) * 160)
    w.mark(MarkName(1, 10))  # leaves with the first frame (within the lead)
    w.frame(bytes([2]) * 160)
    w.mark(MarkName(1))  # still queued behind a frame waiting for its time
    await asyncio.sleep(0.005)
    assert ("mark", "u1.10") in peer.sent and ("mark", "u1") not in peer.sent
    assert w.marks.echoed("u1") is None  # not sent: not awaited
    w.clear()  # u1 is dropped unsent; u1.10 will come back unplayed
    w.mark(MarkName(2))
    await asyncio.sleep(0.01)
    assert w.marks.echoed("u1.10") == (MarkName(1, 10), False)
    assert w.marks.echoed("u1") is None
    assert w.marks.echoed("u2") == (MarkName(2), True)
    w.close()
    await task
