"""``RECORDING=local``: the recordings of one process, written off the event loop.

``Recordings`` owns ``RECORDINGS_DIR`` for this process: one writer thread, fed through a
queue, writes each call stream's chunks (``gateway/recorder.py``: mu-law, both channels)
as a stereo WAV (8 kHz, 16-bit PCM, caller left, agent right) named after the call:
``<CallSid>.wav`` for a call's first stream, ``<CallSid>.<n>.wav`` for the n-th (a call
that resumed on a new stream gets a second part; its media time starts again at 0). A
file is written as ``<name>.part`` and renamed when complete, so a finished name always
holds a whole file. The event loop only puts items on the queue (no syscall per frame, no
file I/O): past ``MAX_QUEUED`` chunks waiting (the disk is not keeping up) chunks are
dropped and counted, and the file gets silence in their place.

Disk use is bounded: after each file and every ``SWEEP_EVERY_S`` the thread sweeps the
directory: finished files older than ``RECORDINGS_RETENTION_H`` go, ``.part`` files nobody
has written to for ``STALE_PART_S`` (a process that died) go, then the oldest finished files
until the total is under ``RECORDINGS_MAX_MB``. Files being written count toward the total
but are never removed, so the most on disk is the cap plus, per live call, at most
``RECORDINGS_MAX_CALL_S`` x 32 KB. Gauge ``callbridge_recordings_bytes`` and counter
``callbridge_recordings_removed{reason}`` report it (``metrics.py``).

Names come from a CallSid that passed ``SID_RE`` (letters, digits, ``_`` and ``-``: no
dot, no slash), so no CallSid can form a path; ``path_of`` checks the same before the
route serves a file. In production mode every shard of a node runs its own ``Recordings``
on the same directory: the route finds a file by its name, whichever shard wrote it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..codecs.g711 import ulaw_decode
from ..codecs.mediastreams import SID_RE
from .recorder import RATE, CallRecorder

log = logging.getLogger("callbridge.recordings")

MAX_QUEUED = 1024
"""Chunks (about a second of one call each, 16 KB) waiting for the writer: at most ~16 MB."""
SWEEP_EVERY_S = 60.0
STALE_PART_S = 600.0
MAX_PARTS = 99
BYTES_PER_S = RATE * 2 * 2
"""Stereo 16-bit at 8 kHz: 32 KB a second."""

Ready = Callable[[str, dict[str, Any]], None]
"""Told (callSid, what ``recording.ready`` carries) when a file is complete (on the loop)."""


def file_name(call_sid: str, part: int) -> str | None:
    """The file of a call's ``part`` (1: its first stream), or None for a CallSid that
    could form a path or a part out of range."""
    if not SID_RE.match(call_sid) or not 1 <= part <= MAX_PARTS:
        return None
    return f"{call_sid}.wav" if part == 1 else f"{call_sid}.{part}.wav"


@dataclass
class _Open:
    writer: wave.Wave_write
    part_path: Path
    path: Path
    call_sid: str
    part: int
    written: int = 0
    gaps: int = 0


class Recording:
    """One call stream's file, from the loop's side: ``recorder`` takes the frames."""

    def __init__(
        self, owner: Recordings, key: int, call_sid: str, part: int, t0: float, max_s: float
    ) -> None:
        self.owner = owner
        self.key = key
        self.call_sid = call_sid
        self.part = part
        self.recorder = CallRecorder(t0, max_s, self._chunk)
        self.closed = False

    def _chunk(self, start: int, caller: bytes, agent: bytes) -> None:
        self.owner.put_chunk(self.key, start, caller, agent)

    def close(self) -> None:
        """The stream ended: the rest goes to the writer, which completes the file and
        then tells ``Recordings.ready`` (on the loop)."""
        if self.closed:
            return
        self.closed = True
        samples = self.recorder.finish()
        self.owner.put_control(("close", self.key, samples, self.recorder.dropped))


class Recordings:
    def __init__(
        self,
        directory: str | Path,
        max_mb: float,
        retention_h: float,
        max_call_s: float,
        metrics: Any = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.dir = Path(directory)
        self.cap_bytes = int(max_mb * 1_000_000)
        self.retention_s = retention_h * 3600.0
        self.max_call_s = max_call_s
        self.metrics = metrics
        self.clock = clock
        self.ready: Ready | None = None
        self._queue: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._keys = 0
        self.chunks_dropped = 0
        self.bytes_on_disk = 0
        self.removed = {"cap": 0, "retention": 0, "stale": 0}
        self._files: dict[int, _Open] = {}

    # -- the loop's side -------------------------------------------------------------------

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="recordings", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        """Finish the files in progress and end the thread (waits off the loop)."""
        if self._thread is None:
            return
        self._queue.put(("stop",))
        await asyncio.to_thread(self._thread.join, 30.0)
        self._thread = None

    def begin(self, call_sid: str, part: int, t0: float) -> Recording | None:
        """A new stream of ``call_sid`` (its ``part``-th) starts at ``t0`` (gateway clock)."""
        name = file_name(call_sid, part)
        if name is None or self._thread is None:
            return None
        self._keys += 1
        self._queue.put(("open", self._keys, call_sid, part, name))
        return Recording(self, self._keys, call_sid, part, t0, self.max_call_s)

    def put_chunk(self, key: int, start: int, caller: bytes, agent: bytes) -> None:
        if self._queue.qsize() >= MAX_QUEUED:
            self.chunks_dropped += 1
            if self.chunks_dropped == 1 or self.chunks_dropped % 100 == 0:
                log.warning("recordings: the disk is not keeping up, %d chunks dropped", self.chunks_dropped)
            return
        self._queue.put(("data", key, start, caller, agent))

    def put_control(self, item: tuple[Any, ...]) -> None:
        self._queue.put(item)

    def path_of(self, call_sid: str, part: int = 1) -> Path | None:
        """The finished file of a call's part, if there is one."""
        name = file_name(call_sid, part)
        if name is None:
            return None
        path = self.dir / name
        return path if path.parent == self.dir and path.is_file() else None

    def _tell(self, call_sid: str, info: dict[str, Any]) -> None:
        loop, ready = self._loop, self.ready
        if loop is None or ready is None:
            return
        try:
            loop.call_soon_threadsafe(ready, call_sid, info)
        except RuntimeError:  # the loop closed during shutdown
            pass

    # -- the writer thread -----------------------------------------------------------------

    def _run(self) -> None:
        self._sweep_safely()
        next_sweep = time.monotonic() + SWEEP_EVERY_S
        while True:
            try:
                item = self._queue.get(timeout=max(0.0, next_sweep - time.monotonic()))
            except queue.Empty:
                item = ("sweep",)
            kind = item[0]
            try:
                if kind == "data":
                    self._write(*item[1:])
                elif kind == "open":
                    self._open(*item[1:])
                elif kind == "close":
                    self._close(*item[1:])
                    self._sweep_safely()
                elif kind == "stop":
                    for key in list(self._files):
                        self._close(key, self._files[key].written, 0)
                    return
            except OSError as exc:
                log.warning("recordings: %s: %s", kind, exc)
            if kind == "sweep" or time.monotonic() >= next_sweep:
                self._sweep_safely()
                next_sweep = time.monotonic() + SWEEP_EVERY_S

    def _open(self, key: int, call_sid: str, part: int, name: str) -> None:
        path = self.dir / name
        part_path = path.with_name(name + ".part")
        writer = wave.open(str(part_path), "wb")  # noqa: SIM115 - open for the call's length, closed by _close
        writer.setnchannels(2)
        writer.setsampwidth(2)
        writer.setframerate(RATE)
        self._files[key] = _Open(writer, part_path, path, call_sid, part)

    def _write(self, key: int, start: int, caller: bytes, agent: bytes) -> None:
        f = self._files.get(key)
        if f is None:
            return
        if start > f.written:  # chunks dropped before this one: silence in their place
            f.gaps += 1
            f.writer.writeframes(bytes(4 * (start - f.written)))
            f.written = start
        elif start < f.written:  # cannot happen: the recorder hands chunks on in order
            return
        stereo = np.empty((len(caller), 2), "<i2")
        stereo[:, 0] = ulaw_decode(caller)
        stereo[:, 1] = ulaw_decode(agent)
        f.writer.writeframes(stereo.tobytes())
        f.written += len(caller)

    def _close(self, key: int, samples: int, frames_dropped: int) -> None:
        f = self._files.pop(key, None)
        if f is None:
            return
        if samples > f.written:
            f.writer.writeframes(bytes(4 * (samples - f.written)))
            f.written = samples
        f.writer.close()  # patches the header's sizes
        os.replace(f.part_path, f.path)
        size = f.path.stat().st_size
        self._tell(
            f.call_sid,
            {
                "path": f.path.name,
                "part": f.part,
                "seconds": round(f.written / RATE, 2),
                "bytes": size,
                "gaps": f.gaps,
                "frames_dropped": frames_dropped,
            },
        )

    def _sweep_safely(self) -> None:
        try:
            self.sweep()
        except OSError as exc:
            log.warning("recordings: sweeping %s: %s", self.dir, exc)

    def sweep(self) -> None:
        """Apply retention and the cap to the directory (the writer thread's job; also
        safe from elsewhere: a file already gone is skipped)."""
        now = self.clock()
        finished: list[tuple[float, str, int]] = []
        total = 0
        mine = {f.part_path.name for f in self._files.values()}
        with os.scandir(self.dir) as entries:
            for entry in entries:
                name = entry.name
                if not name.endswith((".wav", ".wav.part")) or not entry.is_file():
                    continue
                st = entry.stat()
                if name.endswith(".part"):
                    if name not in mine and st.st_mtime < now - STALE_PART_S:
                        self._remove(entry.path, "stale")
                    else:
                        total += st.st_size
                elif self.retention_s > 0 and st.st_mtime < now - self.retention_s:
                    self._remove(entry.path, "retention")
                else:
                    total += st.st_size
                    finished.append((st.st_mtime, entry.path, st.st_size))
        finished.sort()
        for _, path, size in finished:
            if total <= self.cap_bytes:
                break
            self._remove(path, "cap")
            total -= size
        self.bytes_on_disk = total
        if self.metrics is not None:
            self.metrics.recordings_bytes.set(total)

    def _remove(self, path: str, reason: str) -> None:
        """Remove one file (another shard sweeping the same directory may have already)."""
        try:
            os.unlink(path)
        except FileNotFoundError:
            return
        self.removed[reason] += 1
        if self.metrics is not None:
            self.metrics.recordings_removed.labels(reason).inc()
        log.info("recordings: removed %s (%s)", os.path.basename(path), reason)
