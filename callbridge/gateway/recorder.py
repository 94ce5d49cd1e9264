"""One call stream's recording, laid out in time: pure logic, no I/O, time passed in.

Two channels of mu-law at 8 kHz on one time base, the stream's media time (sample 0 = the
stream's start):

- the caller's frames go where their Media Streams ``timestamp`` says (ms since the stream
  started, Twilio's clock);
- the agent's frames go where they start playing at Twilio: a frame sent at ``now`` plays
  once what was sent before it has played (``Pacer``), so at ``max(play_end, now)``, on the
  gateway's clock since the stream started;
- a ``clear`` sent at ``T`` makes Twilio drop what it had buffered: the agent channel from
  ``T`` on is silenced (sample-exact, mid-frame too), which is what the caller really heard.

Only a short window (``HOLD_S``) stays in memory: late caller frames (a jittery line) and a
``clear`` (at most ``OUTBOUND_LEAD_MS`` ahead) may still change it; what is older is handed
to ``sink(start_sample, caller, agent)`` in chunks of ``CHUNK_S`` (equal-length mu-law
bytes; the writer thread decodes and writes them). Per frame that is one slice assignment
into a ``bytearray``: no allocation past the window's growth, no syscall.

Bounds: a frame placed before the window (later than ``HOLD_S``) or more than ``AHEAD_S``
past the stream's clock is dropped and counted (a peer's timestamps cannot grow memory); at
``max_s`` of media time the recording stops (``stopped``) and takes nothing more.
"""

from __future__ import annotations

from collections.abc import Callable

RATE = 8000
"""Samples per second (mu-law, one byte a sample)."""
SILENT = 0xFF
"""mu-law for 0."""
HOLD_S = 2.0
CHUNK_S = 1.0
AHEAD_S = 2.0

Sink = Callable[[int, bytes, bytes], None]


WINDOW = int((HOLD_S + CHUNK_S + AHEAD_S) * RATE) + 320
"""Each channel's buffer (samples): the held window, a chunk waiting to go, the clock's lead."""
_SILENCE = b"\xff" * WINDOW


class CallRecorder:
    __slots__ = (
        "_agent",
        "_agent_end",
        "_ahead",
        "_base",
        "_caller",
        "_caller_end",
        "_chunk",
        "_hold",
        "_limit",
        "_sink",
        "dropped",
        "stopped",
        "t0",
    )

    def __init__(self, t0: float, max_s: float, sink: Sink) -> None:
        """``t0``: the gateway's clock at the stream's start; ``max_s``: the longest
        recording (media time)."""
        self.t0 = t0
        self._sink = sink
        self._limit = int(max_s * RATE)
        self._hold = int(HOLD_S * RATE)
        self._chunk = int(CHUNK_S * RATE)
        self._ahead = int(AHEAD_S * RATE)
        self._base = 0
        """Sample at ``_caller[0]`` / ``_agent[0]``: everything before went to the sink."""
        self._caller = memoryview(bytearray(_SILENCE))
        self._agent = memoryview(bytearray(_SILENCE))
        """Fixed buffers (``WINDOW``), written in place: no allocation per frame."""
        self._caller_end = 0
        self._agent_end = 0
        """One past the last sample placed in each channel (absolute)."""
        self.dropped = 0
        self.stopped = False

    @property
    def samples(self) -> int:
        """The recording's length so far (samples)."""
        return max(self._caller_end, self._agent_end)

    def _put(self, buf: memoryview, pos: int, payload: bytes, now: float) -> int:
        """Place a frame; returns where it ends (absolute), or -1: dropped (too late for
        the window, or ahead of the clock). Past the per-call limit, only what fits is
        placed and the recording stops. (The hot path: a few integer operations and one
        copy into the fixed buffer; the flush once a second.)"""
        clock = int((now - self.t0) * RATE)
        base = self._base
        if clock - self._hold - base >= self._chunk:  # a chunk aged out of the window
            self._flush(clock - self._hold)
            base = self._base
        start = pos - base
        end = start + len(payload)
        if start < 0 or end > WINDOW or pos > clock + self._ahead:
            self.dropped += 1
            return -1
        if base + end > self._limit:  # the part that fits, then no more
            self.stopped = True
            payload = payload[: max(0, self._limit - pos)]
            end = start + len(payload)
        buf[start:end] = payload
        return base + end

    def caller(self, timestamp_ms: int, payload: bytes, now: float) -> None:
        """A caller frame (its Media Streams ``timestamp``), received at ``now``."""
        if not self.stopped:
            end = self._put(self._caller, timestamp_ms * 8, payload, now)
            if end > self._caller_end:
                self._caller_end = end

    def agent(self, plays_at: float, payload: bytes, now: float) -> None:
        """An agent frame sent at ``now`` that starts playing at ``plays_at`` (gateway clock)."""
        if not self.stopped:
            pos = round((plays_at - self.t0) * RATE)
            last = self._agent_end
            # Back to back (no float-rounding gap or overlap), or behind: right after the last.
            end = self._put(self._agent, last if pos - 2 <= last else pos, payload, now)
            if end >= 0:
                self._agent_end = end

    def cleared(self, now: float) -> int:
        """A ``clear`` sent at ``now``: what would have played from then on is silenced.
        Returns the samples cut."""
        cut = max(round((now - self.t0) * RATE), self._base)
        if self._agent_end <= cut:
            return 0
        start, end = cut - self._base, self._agent_end - self._base
        self._agent[start:end] = _SILENCE[: end - start]
        cut_samples = self._agent_end - cut
        self._agent_end = cut
        return cut_samples

    def _flush(self, upto: int) -> None:
        """Hand on everything before ``upto`` (silence past what the buffers hold)."""
        n = upto - self._base
        if n <= 0:
            return
        out = []
        for buf in (self._caller, self._agent):
            if n >= WINDOW:
                out.append(bytes(buf) + _SILENCE[:1] * (n - WINDOW))
                buf[:] = _SILENCE
            else:
                out.append(bytes(buf[:n]))
                buf[: WINDOW - n] = bytes(buf[n:])
                buf[WINDOW - n :] = _SILENCE[:n]
        self._sink(self._base, out[0], out[1])
        self._base = upto

    def finish(self) -> int:
        """Hand everything left to the sink; returns the recording's length (samples)."""
        end = self.samples
        self._flush(end)
        self.stopped = True
        return end
