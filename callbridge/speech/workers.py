"""Speech worker processes shared by every call of a serving process: the neural
recogniser and voice run there, never on the event loop's GIL.

``SpeechPool(config)`` starts ``config.workers`` processes (``spawn``); each loads the
engines it is configured for (Whisper ``stt_model``, the Piper voice) once, then runs jobs
one at a time: ``await pool.run("transcribe", pcm16k, hint)`` -> text, ``await
pool.run("speak", text)`` -> int16 audio at the voice's rate. A job goes to the worker with
the fewest jobs in hand (``speak`` before ``transcribe`` within a worker: a voice waiting
is heard); transcriptions queued together (same hint) are decoded as one batch of up to
``MAX_BATCH``. Each process has a sender and a reader thread here, so ``run`` never blocks the
loop, whatever the pipe holds.

Limits: at most ``MAX_JOBS`` jobs in the pool (queued or running); past that ``run`` raises
``SpeechBusy``. ``saturated`` is true from ``config.backlog`` jobs per worker: the gateway
then answers new calls busy, rather than every caller waiting longer. A worker that dies
(killed, crashed in native code) is restarted at once and its jobs run again on the new
one; a job that was in hand at two crashes fails with ``SpeechError`` (it is the cause).
Workers that die while loading their models, ``MAX_FAILED_LOADS`` times in a row, are not
restarted (their jobs fail): a broken install does not spin.
A job's own error (bad input) fails that job only: ``SpeechError`` with the message.
``close()`` stops the processes; jobs not done fail with ``SpeechError``. A worker ignores
SIGINT and SIGTERM and exits when its pipe closes: when ``close()`` runs (at exit), or
when the serving process is gone, however it died.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import multiprocessing
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

MAX_JOBS = 64
MAX_FAILED_LOADS = 3
"""Workers in a row that may die while loading before the pool stops restarting them."""
MAX_BATCH = 4
"""Transcriptions a worker decodes together (those queued behind the one it takes)."""
READY_TIMEOUT_S = 120.0
"""How long ``start`` waits for the workers to load their models."""


class SpeechError(RuntimeError):
    """A speech job failed (its input, or the worker it ran on crashed twice)."""


class SpeechBusy(SpeechError):
    """The pool holds ``MAX_JOBS`` jobs already."""


@dataclass(frozen=True)
class WorkerConfig:
    workers: int = 2
    threads: int = 1
    """CPU threads per worker (CTranslate2, onnxruntime)."""
    stt_model: str | None = "base"
    """The Whisper model each worker loads; None: none."""
    piper: bool = True
    """Whether each worker loads the Piper voice."""
    backlog: int = 3
    """Jobs per worker from which the pool is ``saturated``."""


@dataclass(eq=False)
class _Job:
    ident: int
    kind: str
    args: tuple
    future: asyncio.Future
    crashes: int = 0


@dataclass(eq=False)
class _Worker:
    """One process, its pipe and the two threads that move jobs over it."""

    number: int
    process: Any
    conn: Any
    outbox: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    jobs: dict[int, _Job] = field(default_factory=dict)
    load_s: float = 0.0
    rss_mb: float = 0.0
    loaded: bool = False
    """It said it was ready (had loaded its models)."""


class SpeechPool:
    """See the module doc."""

    def __init__(self, config: WorkerConfig) -> None:
        if not 1 <= config.workers <= 16 or not 1 <= config.threads <= 16:
            raise ValueError("a SpeechPool needs 1-16 workers of 1-16 threads")
        self.config = config
        self._lock = threading.Lock()
        self._workers: list[_Worker] = []
        self._next_job = 0
        self._closed = False
        self.restarts = 0
        self.failed_loads = 0
        """Workers in a row that exited before they had loaded their models."""
        self.completed = 0
        """Jobs answered (with a result or an error) since the start."""
        self._ctx = multiprocessing.get_context("spawn")
        for n in range(config.workers):
            self._workers.append(self._spawn(n))
        # After the first start registered multiprocessing's own exit hook, which runs
        # later (atexit is last in, first out): it would wait for workers still served.
        atexit.register(self.close)

    # -- lifecycle ---------------------------------------------------------------

    def _spawn(self, number: int) -> _Worker:
        parent, child = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(
            target=_serve, args=(child, self.config), name=f"callbridge-speech-{number}", daemon=True
        )
        process.start()
        child.close()
        worker = _Worker(number, process, parent)
        threading.Thread(target=self._send, args=(worker,), name=f"speech-send-{number}", daemon=True).start()
        threading.Thread(target=self._read, args=(worker,), name=f"speech-read-{number}", daemon=True).start()
        return worker

    async def start(self) -> None:
        """Wait until every worker has loaded its models (``READY_TIMEOUT_S``); raises
        ``SpeechError`` if they cannot (``MAX_FAILED_LOADS``)."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            with self._lock:
                workers, closed = list(self._workers), self._closed
            if not workers:
                raise SpeechError(
                    "the speech workers cannot load their models (see the log)" if closed else "no workers"
                )
            if all(w.loaded for w in workers):
                return
            if time.monotonic() > deadline:
                raise SpeechError(f"the speech workers did not load their models in {READY_TIMEOUT_S:g} s")
            await asyncio.sleep(0.05)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            workers, self._workers = self._workers, []
        for w in workers:
            w.outbox.put(None)
            w.conn.close()  # the worker sees its pipe end and exits
            self._fail(list(w.jobs.values()), SpeechError("the speech pool was closed"))
            w.jobs.clear()
        for w in workers:
            w.process.join(timeout=2)
            if w.process.is_alive():
                w.process.kill()

    # -- jobs ----------------------------------------------------------------------

    @property
    def jobs(self) -> int:
        """Jobs queued or running now."""
        return sum(len(w.jobs) for w in self._workers)

    @property
    def saturated(self) -> bool:
        return self.jobs >= self.config.backlog * max(1, len(self._workers))

    def stats(self) -> dict[str, Any]:
        return {
            "workers": len(self._workers),
            "jobs": self.jobs,
            "restarts": self.restarts,
            "completed": self.completed,
            "load_s": [round(w.load_s, 2) for w in self._workers],
            "rss_mb": [round(w.rss_mb, 1) for w in self._workers],
        }

    async def run(self, kind: str, *args: Any) -> Any:
        future = asyncio.get_running_loop().create_future()
        with self._lock:
            if self._closed:
                raise SpeechError("the speech pool was closed")
            if self.jobs >= MAX_JOBS:
                raise SpeechBusy(f"{MAX_JOBS} speech jobs in hand")
            job = _Job(self._next_job, kind, args, future)
            self._next_job += 1
            self._assign(job)
        return await future

    def _assign(self, job: _Job) -> None:  # under the lock
        worker = min(self._workers, key=lambda w: len(w.jobs))
        worker.jobs[job.ident] = job
        worker.outbox.put(job)

    # -- threads -------------------------------------------------------------------

    def _send(self, worker: _Worker) -> None:
        while (job := worker.outbox.get()) is not None:
            try:
                worker.conn.send((job.ident, job.kind, job.args))
            except (OSError, ValueError):
                return  # the reader sees the process go and restarts it

    def _read(self, worker: _Worker) -> None:
        conn = worker.conn
        try:
            while True:
                message = conn.recv()
                if message[0] == "ready":
                    worker.load_s, worker.rss_mb = message[1], message[2]
                    worker.loaded = True
                    continue
                ident, ok, value, rss_mb = message
                worker.rss_mb = rss_mb
                with self._lock:
                    job = worker.jobs.pop(ident, None)
                    self.completed += 1
                if job is not None:
                    _settle(job.future, value if ok else None, None if ok else SpeechError(value))
        except (EOFError, OSError, TypeError):  # TypeError: the pipe was closed under recv
            pass
        self._crashed(worker)

    def _crashed(self, worker: _Worker) -> None:
        worker.process.join(timeout=5)
        with self._lock:
            if self._closed or worker not in self._workers:
                return
            code = worker.process.exitcode
            self.failed_loads = 0 if worker.loaded else self.failed_loads + 1
            if self.failed_loads > MAX_FAILED_LOADS:  # it cannot load its models: stop trying
                log.error(
                    "speech worker %d exited (%s) while loading, %d times: not restarted",
                    worker.number,
                    code,
                    self.failed_loads,
                )
                self._workers.remove(worker)
                lost = list(worker.jobs.values())
                worker.jobs.clear()
                self._fail(lost, SpeechError("the speech workers cannot load their models (see the log)"))
                if not self._workers:
                    self._closed = True
                return
            self.restarts += 1
            log.error("speech worker %d exited (%s); restarting it", worker.number, code)
            replacement = self._spawn(worker.number)
            self._workers[self._workers.index(worker)] = replacement
            again: list[_Job] = []
            failed: list[_Job] = []
            for job in worker.jobs.values():
                job.crashes += 1
                (failed if job.crashes >= 2 else again).append(job)
            worker.outbox.put(None)
            for job in again:
                self._assign(job)
        self._fail(
            failed,
            SpeechError(f"a speech job ({failed[0].kind}) crashed its worker twice") if failed else None,
        )

    @staticmethod
    def _fail(jobs: list[_Job], exc: BaseException | None) -> None:
        for job in jobs:
            _settle(job.future, None, exc)


def _settle(future: asyncio.Future, value: Any, exc: BaseException | None) -> None:
    def settle() -> None:
        if not future.done():
            if exc is not None:
                future.set_exception(exc)
            else:
                future.set_result(value)

    try:
        future.get_loop().call_soon_threadsafe(settle)
    except RuntimeError:  # that loop is closed: nobody waits any more
        pass


# --------------------------------------------------------------------------- #
# The worker process
# --------------------------------------------------------------------------- #


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6
    except (OSError, ValueError):
        return 0.0


def _serve(conn: Any, config: WorkerConfig) -> None:
    """A worker process's main: load the engines, then answer jobs until the pipe closes.
    ``speak`` jobs go before ``transcribe`` jobs queued behind them (a reader thread
    keeps the queue, so a long job does not hide the next ones)."""
    # A worker ends when its pipe does (close(), or the serving process gone, even by
    # SIGKILL), not on the terminal's or a supervisor's signal to the process group: the
    # serving process is still draining its calls then.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.environ.setdefault("OMP_NUM_THREADS", str(config.threads))
    t0 = time.perf_counter()
    handlers: dict[str, Callable[..., Any]] = {}
    batch_transcribe: Callable[..., list[str]] | None = None
    if config.stt_model is not None:
        from .whisper import WhisperEngine

        whisper = WhisperEngine(config.stt_model, config.threads)
        handlers["transcribe"] = whisper.transcribe
        batch_transcribe = whisper.transcribe_batch
    if config.piper:
        from .piper import PiperEngine

        piper = PiperEngine(threads=config.threads)
        handlers["speak"] = piper.synthesize
    conn.send(("ready", time.perf_counter() - t0, _rss_mb()))
    inbox: queue.PriorityQueue = queue.PriorityQueue()

    def receive() -> None:
        try:
            while True:
                ident, kind, args = conn.recv()
                inbox.put((0 if kind == "speak" else 1, ident, kind, args))
        except (EOFError, OSError):
            inbox.put((2, -1, "stop", ()))

    threading.Thread(target=receive, daemon=True).start()
    while True:
        item = inbox.get()
        if item[2] == "stop":
            return
        batch = [item]
        if item[2] == "transcribe" and batch_transcribe is not None and _batchable(item[3]):
            # The turns queued behind it with the same hint go with it (speak jobs, first
            # in the queue, are never behind a transcribe job).
            held: list[tuple] = []
            while len(batch) < MAX_BATCH and not inbox.empty():
                other = inbox.get_nowait()
                fits = other[2] == "transcribe" and _batchable(other[3]) and other[3][1] == item[3][1]
                (batch if fits else held).append(other)
            for other in held:
                inbox.put(other)
        if len(batch) > 1 and batch_transcribe is not None:
            try:
                texts = batch_transcribe([b[3][0] for b in batch], item[3][1])
                results = [(b[1], True, t, _rss_mb()) for b, t in zip(batch, texts, strict=True)]
            except Exception:  # one at a time, so a bad one fails alone
                results = [_answer(handlers, *b[1:]) for b in batch]
        else:
            results = [_answer(handlers, *b[1:]) for b in batch]
        for result in results:
            try:
                conn.send(result)
            except (OSError, ValueError):
                return


def _batchable(args: tuple) -> bool:
    """Transcribe arguments of the right shape: (1-D audio, a hint)."""
    return len(args) == 2 and getattr(args[0], "ndim", 0) == 1 and isinstance(args[1], str)


def _answer(handlers: dict[str, Callable[..., Any]], ident: int, kind: str, args: tuple) -> tuple:
    try:
        handler = handlers.get(kind)
        if handler is None:
            raise ValueError(f"this worker does not {kind}")
        return (ident, True, handler(*args), _rss_mb())
    except Exception as exc:  # the job's fault: report it, keep serving
        return (ident, False, f"{kind}: {type(exc).__name__}: {exc}", _rss_mb())
