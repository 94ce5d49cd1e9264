"""Outbound audio to Twilio: paced, ordered, bounded.

``Pacer`` is pure logic (time passed in): Twilio plays what it receives in real time, so
we track when the audio sent so far will finish playing (``play_end``) and release the
next 20 ms frame only while less than ``lead_s`` is buffered at Twilio. Bursty producers
(TTS runs far ahead of real time) thus leave at a steady pace, and a later ``clear``
discards at most ``lead_s`` of audio.

``OutboundWriter`` owns one socket's send side: frames and marks in one FIFO (a mark
leaves right after the frames queued before it), ``clear`` jumps the queue and drops
what is pending. It knows which marks it sent (``marks``: ``codecs.marks.MarksInFlight``),
so only their echoes count as played. At most ``MAX_QUEUED_FRAMES`` (10 minutes, what
Twilio itself keeps) are queued; beyond, the oldest are dropped and counted.

Sending never blocks the event loop (aiohttp writes into the transport's buffer); a peer
that stops reading fills its socket buffers and then the send itself waits for it.
``blocked_since`` says since when a send has been waiting: the gateway's reaper drops a
peer stuck past ``SEND_STALL_S`` (``gateway/reaper.py``).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable

from ..codecs.framing import FRAME_S
from ..codecs.marks import MarkName, MarksInFlight
from ..codecs.mediastreams import clear_message, mark_message, media_message
from .recorder import CallRecorder

log = logging.getLogger("callbridge.gateway")

MAX_QUEUED_FRAMES = 30_000


class Pacer:
    __slots__ = ("frame_s", "lead_s", "play_end")

    def __init__(self, lead_s: float, frame_s: float = FRAME_S) -> None:
        self.lead_s = lead_s
        self.frame_s = frame_s
        self.play_end = 0.0

    def next_send_at(self, now: float) -> float:
        """Earliest time the next frame may be sent (``<= now`` means: send now)."""
        return self.play_end - self.lead_s

    def sent(self, now: float) -> None:
        self.play_end = max(self.play_end, now) + self.frame_s

    def buffered_s(self, now: float) -> float:
        """Audio sent and not yet played, as far as we can tell."""
        return max(0.0, self.play_end - now)

    def cleared(self, now: float) -> None:
        self.play_end = now


_FRAME, _MARK, _NOTIFY = 0, 1, 2


class OutboundWriter:
    def __init__(
        self,
        send: Callable[[str], Awaitable[None]],
        stream_sid: str,
        lead_s: float,
        clock: Callable[[], float],
        on_first_frame: Callable[[], None] | None = None,
        on_utterance_sent: Callable[[int], None] | None = None,
    ) -> None:
        self._send = send
        self.stream_sid = stream_sid
        self.pacer = Pacer(lead_s)
        self.clock = clock
        # (kind, value): _FRAME with bytes, _MARK with a MarkName, _NOTIFY with an int
        self._queue: deque[tuple[int, bytes | MarkName | int]] = deque()
        self._frames_queued = 0
        self._waiter: asyncio.Future[None] | None = None
        self._clear_pending = False
        self._on_first_frame = on_first_frame
        self._on_utterance_sent = on_utterance_sent
        self._notify_next: int | None = None
        self.frames_sent = 0
        self.last_sent: bytes = b""
        """The latest frame sent (the console's level meter samples it)."""
        self.marks_sent = 0
        self.marks = MarksInFlight()
        self.frames_dropped = 0
        self.closed = False
        self.blocked_since: float | None = None
        """When the send in progress began (None: not sending)."""
        self.recorder: CallRecorder | None = None
        """``RECORDING=local``: told each frame sent (when it will play) and each clear."""

    # -- producers (synchronous, never block) ----------------------------------------

    def frame(self, payload: bytes) -> None:
        if self.closed:
            return
        if self._frames_queued >= MAX_QUEUED_FRAMES:
            self._drop_oldest_frame()
        self._queue.append((_FRAME, payload))
        self._frames_queued += 1
        if len(self._queue) == 1:  # the writer idles only on an empty queue
            self._wake()

    def mark(self, mark: MarkName) -> None:
        if not self.closed:
            self._queue.append((_MARK, mark))
            if len(self._queue) == 1:
                self._wake()

    def notify(self, utterance: int) -> None:
        """Call ``on_utterance_sent(utterance)`` when the next frame queued after this
        point actually leaves."""
        if not self.closed:
            self._queue.append((_NOTIFY, utterance))
            if len(self._queue) == 1:
                self._wake()

    @property
    def idle(self) -> bool:
        """Nothing queued to send (frames, marks or notifications)."""
        return not self._queue

    def clear(self) -> int:
        """Drop everything pending and have ``clear`` sent next. Returns frames dropped.
        Pending marks are dropped too: they were never sent, so Twilio won't echo them;
        those sent will come back at once, unplayed."""
        dropped = self._frames_queued
        self.marks.cleared()
        self._queue.clear()
        self._frames_queued = 0
        self._notify_next = None
        self._clear_pending = True
        self._wake()
        return dropped

    def _drop_oldest_frame(self) -> None:
        for i, (kind, _) in enumerate(self._queue):
            if kind == _FRAME:
                del self._queue[i]
                self._frames_queued -= 1
                self.frames_dropped += 1
                if self.frames_dropped == 1 or self.frames_dropped % 1000 == 0:
                    log.warning(
                        "%s: outbound queue full, %d frames dropped", self.stream_sid, self.frames_dropped
                    )
                return

    # -- the sending task ---------------------------------------------------------------

    async def run(self) -> None:
        """Send until closed or the socket fails. Meant to run as the call's writer task."""
        queue = self._queue
        try:
            while not self.closed:
                if self._clear_pending:
                    self._clear_pending = False
                    cleared_at = self.clock()
                    self.pacer.cleared(cleared_at)
                    if self.recorder is not None:  # what Twilio had buffered is not played
                        self.recorder.cleared(cleared_at)
                    await self._out(clear_message(self.stream_sid))
                    continue
                if not queue:
                    await self._sleep(None)
                    continue
                kind, value = queue[0]
                if kind == _NOTIFY:
                    queue.popleft()
                    self._notify_next = value  # type: ignore[assignment]  # _NOTIFY pairs with an int
                    continue
                if kind == _MARK:
                    queue.popleft()
                    self.marks.sent(value)  # type: ignore[arg-type]  # _MARK pairs with a MarkName
                    await self._out(mark_message(self.stream_sid, value))  # type: ignore[arg-type]  # as above
                    self.marks_sent += 1
                    continue
                now = self.clock()
                wait = self.pacer.next_send_at(now) - now
                if wait > 0:
                    await self._sleep(wait)  # a clear or close wakes us early
                    continue
                queue.popleft()
                self._frames_queued -= 1
                self.blocked_since = now
                await self._send(media_message(self.stream_sid, value))  # type: ignore[arg-type]  # _FRAME: bytes
                self.blocked_since = None
                if self.recorder is not None:  # it plays once what was sent before it has
                    self.recorder.agent(max(self.pacer.play_end, now), value, now)  # type: ignore[arg-type]  # _FRAME: bytes
                self.pacer.sent(now)
                self.frames_sent += 1
                self.last_sent = value  # type: ignore[assignment]  # _FRAME: bytes
                if self.frames_sent == 1 and self._on_first_frame is not None:
                    self._on_first_frame()
                if self._notify_next is not None:
                    utterance, self._notify_next = self._notify_next, None
                    if self._on_utterance_sent is not None:
                        self._on_utterance_sent(utterance)
        except (ConnectionError, RuntimeError) as exc:  # socket gone: the reader ends the call
            log.info("%s: outbound writer stopped: %s", self.stream_sid, exc)
        finally:
            self.closed = True

    async def _out(self, text: str) -> None:
        self.blocked_since = self.clock()
        await self._send(text)
        self.blocked_since = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _sleep(self, delay: float | None) -> None:
        """Until ``delay`` passes or a producer calls ``_wake`` (cheaper than wait_for)."""
        loop = asyncio.get_running_loop()
        self._waiter = waiter = loop.create_future()
        timer = loop.call_later(delay, self._wake) if delay is not None else None
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    def close(self) -> None:
        self.closed = True
        self._queue.clear()
        self._frames_queued = 0
        self._wake()
