"""Streaming speech-to-text with pocketsphinx (offline, 16 kHz, asyncio API).

Use::

    rec = get_recognizer(agent.vocabulary())     # process-wide, one per vocabulary
    await rec.prewarm()                          # at start-up: creating decoders holds the GIL
    utt = await rec.start(on_partial=print)      # checks a decoder out of the pool
    for frame in frames:                         # int16 @ 16 kHz, any length
        utt.feed(frame)                          # non-blocking
    text = await utt.finish()                    # "i would like to book ..."

The language model comes from the agent: with a ``Vocabulary`` (what its callers are
expected to say) a trigram model and a dictionary cut down to its words are built at
first use; without one (``None``) the general English model and full CMU dictionary
shipped in the ``pocketsphinx`` wheel are used (any English, ~4x the CPU, less accurate).
Nothing is downloaded.

A ``Recognizer`` is a pool of at most ``pool_size`` decoders, each on its own daemon
thread (no pocketsphinx call runs on the event loop), checked out per utterance (one
caller turn). When all are busy ``start()`` waits, first come first served (bound it with
``asyncio.wait_for``; cancelling is safe). ``feed`` takes 1-D ``np.int16`` at 16 kHz and
never blocks; audio past ``max_utterance_s`` is dropped (``Utterance.truncated``).
``on_partial(text)`` runs on the loop when the hypothesis changed, at most every
``partial_interval_s``, never after ``finish``/``cancel``. ``finish`` returns lowercase
words separated by single spaces (``""`` if nothing); a pocketsphinx failure raises
``SttError`` and that decoder is replaced. Measurements, the GIL and the choices behind
the defaults: ``docs/stt.md``.
"""

from __future__ import annotations

import asyncio
import collections
import io
import logging
import os
import queue
import tempfile
import threading
import time
import weakref
from collections.abc import Callable

import numpy as np

from .vocabulary import Vocabulary

__all__ = [
    "SAMPLE_RATE",
    "Recognizer",
    "SttError",
    "Utterance",
    "Vocabulary",
    "get_recognizer",
]

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000

# --------------------------------------------------------------------------- #
# Language models
# --------------------------------------------------------------------------- #

# Any speech will do: a fresh decoder garbles its first utterance until the live
# cepstral-mean normalisation has converged on telephone audio.
_WARMUP_TEXTS = (
    "hello i would like to book an appointment for next monday at ten am please",
    "can you move it to thursday afternoon at half past two",
    "no thanks that is all goodbye",
)


_model_lock = threading.Lock()
_model_files: dict[Vocabulary, dict[str, str]] = {}
_model_dir: tempfile.TemporaryDirectory | None = None


# fwdflat (the second, flat-lexicon search pass) runs inside end_utt() and holds the GIL
# throughout; without it end_utt() takes ~1-5 ms and accuracy was the same (docs/stt.md).
_COMMON_KWARGS = {"fwdflat": False}


def _decoder_kwargs(vocabulary: Vocabulary | None) -> dict:
    """Decoder config: the shipped general model, or a trigram model and dictionary built
    from ``vocabulary`` once per process, into a temporary directory that lives as long
    as the process."""
    global _model_dir
    if vocabulary is None:
        return dict(_COMMON_KWARGS)
    with _model_lock:
        if vocabulary in _model_files:
            return {**_COMMON_KWARGS, **_model_files[vocabulary]}
        import pocketsphinx
        from pocketsphinx.lm import ArpaBoLM

        words = vocabulary.words
        lm = ArpaBoLM(text="\n".join(vocabulary.sentences), add_start=True)
        lm.compute()
        arpa = io.StringIO()
        lm.write(arpa)
        lines, found = [], set()
        with open(pocketsphinx.get_model_path("en-us/cmudict-en-us.dict"), encoding="utf-8") as f:
            for line in f:
                w = line.split(" ", 1)[0].split("(", 1)[0]
                if w in words:
                    lines.append(line)
                    found.add(w)
        missing = words - found
        if missing:  # a vocabulary edit with a word CMUdict lacks
            raise RuntimeError(f"{vocabulary.name} words missing from the dictionary: {sorted(missing)}")
        if _model_dir is None:
            _model_dir = tempfile.TemporaryDirectory(prefix="callbridge-stt-")
        stem = os.path.join(_model_dir.name, f"{len(_model_files)}")
        with open(stem + ".arpa", "w", encoding="utf-8") as f:
            f.write(arpa.getvalue())
        with open(stem + ".dict", "w", encoding="utf-8") as f:
            f.writelines(lines)
        _model_files[vocabulary] = {"lm": stem + ".arpa", "dict": stem + ".dict"}
        return {**_COMMON_KWARGS, **_model_files[vocabulary]}


_warmup_audio: list[np.ndarray] | None = None


def _warmup_utterances() -> list[np.ndarray]:
    """The warm-up sentences as a caller would send them: espeak at 22.05 kHz
    -> 8 kHz -> mu-law -> 16 kHz.  Synthesised once per process."""
    global _warmup_audio
    with _model_lock:
        if _warmup_audio is None:
            from callbridge.codecs.g711 import ulaw_decode, ulaw_encode
            from callbridge.codecs.resample import StreamingResampler
            from callbridge.speech.tts import get_tts

            tts = get_tts("en-us")
            out = []
            for text in _WARMUP_TEXTS:
                chunks: list[np.ndarray] = []
                tts.synthesize(text, chunks.append)
                pcm8 = StreamingResampler(tts.sample_rate, 8000).process(np.concatenate(chunks))
                pcm8 = ulaw_decode(ulaw_encode(pcm8))
                out.append(StreamingResampler(8000, SAMPLE_RATE).process(pcm8))
            _warmup_audio = out
        return _warmup_audio


# --------------------------------------------------------------------------- #
# Decoder workers and the pool
# --------------------------------------------------------------------------- #


class SttError(RuntimeError):
    """pocketsphinx failed (creating a decoder or decoding an utterance)."""


def _hyp_text(dec) -> str:
    hyp = dec.hyp()
    return " ".join(hyp.hypstr.lower().split()) if hyp is not None else ""


class _Turn:
    """State one utterance shares between the event loop and its decoder
    thread.  It holds no reference to the :class:`Utterance`, so a dropped
    utterance can be collected (and then cancelled by its finalizer)."""

    __slots__ = ("done", "loop", "on_partial", "open")

    def __init__(self, loop: asyncio.AbstractEventLoop, on_partial: Callable[[str], None] | None):
        self.loop = loop
        self.done: asyncio.Future[str] = loop.create_future()
        self.on_partial = on_partial
        self.open = True  # False once finish()/cancel() was called

    def post(self, fn: Callable, *args) -> None:
        """Run ``fn(*args)`` on the turn's loop (from any thread)."""
        try:
            self.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # loop closed: nobody is listening any more
            pass

    def deliver_partial(self, text: str) -> None:  # on the loop
        if self.open and self.on_partial is not None:
            self.on_partial(text)

    def settle(self, text: str, exc: BaseException | None) -> None:  # on the loop
        if not self.done.done():
            if exc is not None:
                self.done.set_exception(exc)
            else:
                self.done.set_result(text)


_STOP = ("stop", None)
_MAX_CHUNK = 320  # samples per process_raw call (20 ms)


class _Worker:
    """One pocketsphinx decoder and the daemon thread that owns it.

    Commands, queued and run in order: ``("start", turn)``, ``("audio", turn,
    int16 array)``, ``("peek", turn, future)``, ``("end", turn)``, ``("cancel", turn)``,
    ``_STOP``.
    """

    def __init__(self, rec: Recognizer, ident: int) -> None:
        self.rec = rec
        self.ident = ident
        self.q: queue.SimpleQueue = queue.SimpleQueue()
        self.create_s = 0.0  # decoder creation + warm-up, seconds
        self._rng = np.random.default_rng(ident)
        self._thread = threading.Thread(target=self._run, name=f"stt-decoder-{ident}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            t0 = time.perf_counter()
            self._create()
            self.create_s = time.perf_counter() - t0
        except Exception as exc:
            log.exception("creating pocketsphinx decoder %d failed", self.ident)
            self.rec._creation_failed(self, exc)
            return
        self.rec._release(self)
        turn: _Turn | None = None  # the utterance being decoded
        while True:
            cmd = self.q.get()
            kind, target = cmd[0], cmd[1]
            if kind == "stop":
                self._fail_all(turn)
                return
            if kind == "start":
                turn = target
            elif kind == "peek":  # the hypothesis over all audio queued before it
                text = _hyp_text(self.dec) if target is turn else ""
                target.post(_settle_future, cmd[2], text, None)
                continue
            elif target is not turn:
                continue  # stale: its utterance already ended
            try:
                if kind == "start":
                    # Same audio, same words: the cepstral mean and the dither start afresh,
                    # so no earlier utterance (another call's) changes what this one hears.
                    self.dec.set_cmn(self._cmn)
                    self.dec.start_utt()
                    self._rng = np.random.default_rng(0)
                    self._partial = ""
                    self._next_partial = time.monotonic() + self.rec.partial_interval_s
                    continue
                if kind == "audio":
                    self._audio(turn, cmd[2])
                    continue
                self.dec.end_utt()
                text = _hyp_text(self.dec) if kind == "end" else ""
            except Exception as exc:
                log.exception("pocketsphinx failed; discarding decoder %d", self.ident)
                self.rec._discard(self)
                turn.post(turn.settle, "", SttError(f"pocketsphinx: {exc}"))
                return
            turn = None
            self.rec._release(self)  # before settling: back in the pool when finish() returns
            target.post(target.settle, text, None)

    def _fail_all(self, turn: _Turn | None) -> None:
        """Closing: settle the current turn and any queued ones with an error."""
        exc = RuntimeError("Recognizer closed")
        turns = {id(turn): turn} if turn is not None else {}
        while True:
            try:
                cmd = self.q.get_nowait()
            except queue.Empty:
                break
            if cmd[0] == "peek":
                cmd[1].post(_settle_future, cmd[2], "", None)
            elif cmd[1] is not None:
                turns[id(cmd[1])] = cmd[1]
        for t in turns.values():
            t.post(t.settle, "", exc)

    def _create(self) -> None:
        import pocketsphinx

        self.dec = pocketsphinx.Decoder(loglevel="FATAL", **_decoder_kwargs(self.rec.vocabulary))
        for pcm in _warmup_utterances():
            self.dec.start_utt()
            self._process(pcm)
            self.dec.end_utt()
        self._cmn = self.dec.get_cmn(True)
        """The cepstral mean converged on the warm-up: every utterance starts from it."""

    def _process(self, pcm: np.ndarray) -> None:
        # process_raw holds the GIL while it runs: feed at most 20 ms per call
        # so the event loop (and other decoders) get the GIL back in between.
        for i in range(0, len(pcm), _MAX_CHUNK):
            chunk = pcm[i : i + _MAX_CHUNK]
            if self.rec.dither > 0:
                noisy = chunk + self._rng.normal(0.0, self.rec.dither, len(chunk))
                chunk = np.clip(noisy, -32768, 32767).astype(np.int16)
            self.dec.process_raw(chunk.tobytes())

    def _audio(self, turn: _Turn, pcm: np.ndarray) -> None:
        self._process(pcm)
        now = time.monotonic()
        if turn.on_partial is not None and now >= self._next_partial:
            self._next_partial = now + self.rec.partial_interval_s
            text = _hyp_text(self.dec)
            if text and text != self._partial:
                self._partial = text
                turn.post(turn.deliver_partial, text)


class Recognizer:
    """A pool of warmed-up pocketsphinx decoders for one language model; see the module doc.

    ``vocabulary``: what callers are expected to say (``None``: any English, the general
    model); ``pool_size``: most decoders (threads) at once, 1..64; ``partial_interval_s``:
    minimum wall time between partial checks, 0..10; ``dither``: noise std in LSB, 0..1000
    (0 = off); ``max_utterance_s``: audio kept per utterance, 1..600. Out-of-range values
    raise ``ValueError``.
    """

    hypothesis_timeout_s = 0.3
    """How long a turn's judge waits for ``Utterance.hypothesis`` (the decoder is behind)."""

    def __init__(
        self,
        vocabulary: Vocabulary | None = None,
        pool_size: int = 2,
        *,
        partial_interval_s: float = 0.2,
        dither: float = 20.0,
        max_utterance_s: float = 30.0,
    ) -> None:
        if vocabulary is not None and not isinstance(vocabulary, Vocabulary):
            raise ValueError(f"vocabulary must be a Vocabulary or None, got {vocabulary!r:.40}")
        if isinstance(pool_size, bool) or not isinstance(pool_size, int) or not 1 <= pool_size <= 64:
            raise ValueError(f"pool_size must be an int in 1..64, got {pool_size!r}")
        for name, value, lo, hi in (
            ("partial_interval_s", partial_interval_s, 0.0, 10.0),
            ("dither", dither, 0.0, 1000.0),
            ("max_utterance_s", max_utterance_s, 1.0, 600.0),
        ):
            if not lo <= value <= hi:  # also rejects NaN
                raise ValueError(f"{name} must be in {lo:g}..{hi:g}, got {value!r}")
        self.vocabulary = vocabulary
        self.pool_size = pool_size
        self.partial_interval_s = float(partial_interval_s)
        self.dither = float(dither)
        self.max_samples = int(max_utterance_s * SAMPLE_RATE)
        self._lock = threading.Lock()
        self._workers: list[_Worker] = []  # all, busy or idle or being created
        self._idle: list[_Worker] = []
        self._waiters: collections.deque[tuple[asyncio.AbstractEventLoop, asyncio.Future]] = (
            collections.deque()
        )
        self._next_id = 0
        self._closed = False

    def __repr__(self) -> str:
        return (
            f"Recognizer(mode={self.mode!r}, pool_size={self.pool_size}, "
            f"decoders={self.size}, idle={self.idle})"
        )

    @property
    def mode(self) -> str:
        """The vocabulary's name, or ``"general"``."""
        return self.vocabulary.name if self.vocabulary is not None else "general"

    @property
    def size(self) -> int:
        """Decoders that exist now (busy, idle or being created)."""
        return len(self._workers)

    @property
    def idle(self) -> int:
        """Decoders ready and waiting for an utterance."""
        return len(self._idle)

    @property
    def creation_times(self) -> list[float]:
        """Seconds each live decoder took to create and warm up (0 while creating)."""
        return [w.create_s for w in self._workers]

    async def start(self, on_partial: Callable[[str], None] | None = None) -> Utterance:
        """Check a decoder out (creating one, or waiting for one) and begin an utterance."""
        worker = await self._acquire()
        turn = _Turn(asyncio.get_running_loop(), on_partial)
        worker.q.put(("start", turn))
        return Utterance(self, worker, turn)

    def resize(self, pool_size: int) -> None:
        """Change the most decoders at once (1..64).  Growing lets waiting
        ``start()`` calls create decoders now; shrinking stops surplus idle
        decoders now and busy ones when their utterance ends."""
        if isinstance(pool_size, bool) or not isinstance(pool_size, int) or not 1 <= pool_size <= 64:
            raise ValueError(f"pool_size must be an int in 1..64, got {pool_size!r}")
        with self._lock:
            grow = pool_size - self.pool_size
            self.pool_size = pool_size
            surplus = []
            while len(self._workers) > pool_size and self._idle:
                w = self._idle.pop()
                self._workers.remove(w)
                surplus.append(w)
        for w in surplus:
            w.q.put(_STOP)
        for _ in range(max(0, grow)):
            self._wake_one(None)  # a waiter goes round again and creates one

    async def prewarm(self, count: int | None = None) -> None:
        """Make ``count`` decoders (default ``pool_size``) exist and be ready, by
        checking that many out at once and returning them.  Call it at startup:
        creating a decoder holds the GIL (see the module doc).  Waits while
        decoders are busy."""
        count = self.pool_size if count is None else max(0, min(count, self.pool_size))
        utts = await asyncio.gather(*(self.start() for _ in range(count)))
        await asyncio.gather(*(u.cancel() for u in utts))

    def close(self) -> None:
        """Stop all decoder threads after their current command.  Waiting and
        later ``start()`` calls, and ``finish()`` of utterances still in
        progress, raise ``RuntimeError``; ``cancel()`` of those returns."""
        with self._lock:
            self._closed = True
            workers, self._workers, self._idle = self._workers, [], []
            waiters, self._waiters = list(self._waiters), collections.deque()
        for w in workers:
            w.q.put(_STOP)
        for loop, fut in waiters:
            _post(loop, _settle_future, fut, None, RuntimeError("Recognizer closed"))

    # -- pool internals (any thread unless noted) ------------------------------

    async def _acquire(self) -> _Worker:
        loop = asyncio.get_running_loop()
        while True:
            with self._lock:
                if self._closed:
                    raise RuntimeError("Recognizer closed")
                if self._idle:
                    return self._idle.pop()
                fut = loop.create_future()
                self._waiters.append((loop, fut))
                if len(self._workers) < self.pool_size:
                    # Its thread releases it when ready, to the oldest waiter.
                    self._workers.append(_Worker(self, self._next_id))
                    self._next_id += 1
            try:
                worker = await fut
            except asyncio.CancelledError:
                with self._lock:
                    try:
                        self._waiters.remove((loop, fut))
                    except ValueError:
                        pass  # already handed over: _handoff / below return it
                if fut.done() and not fut.cancelled() and fut.exception() is None and fut.result():
                    self._release(fut.result())
                raise
            if worker is not None:
                return worker
            # None: a decoder was discarded, a slot is free: go round again.

    def _release(self, worker: _Worker) -> None:
        """Give a ready decoder to the oldest waiter, else make it idle."""
        with self._lock:
            if self._closed or worker not in self._workers or len(self._workers) > self.pool_size:
                if worker in self._workers:  # surplus after resize()
                    self._workers.remove(worker)
                worker.q.put(_STOP)
                return
            while self._waiters:
                loop, fut = self._waiters.popleft()
                if _post(loop, self._handoff, fut, worker):
                    return
            self._idle.append(worker)

    def _handoff(self, fut: asyncio.Future, worker: _Worker | None) -> None:  # on fut's loop
        if not fut.done():
            fut.set_result(worker)
        elif worker is not None:  # that waiter was cancelled meanwhile
            self._release(worker)
        else:
            self._wake_one(None)

    def _discard(self, worker: _Worker) -> None:
        with self._lock:
            if worker in self._workers:
                self._workers.remove(worker)
        worker.q.put(_STOP)
        self._wake_one(None)

    def _creation_failed(self, worker: _Worker, exc: BaseException) -> None:
        with self._lock:
            if worker in self._workers:
                self._workers.remove(worker)
        self._wake_one(SttError(f"creating a pocketsphinx decoder failed: {exc}"))

    def _wake_one(self, exc: BaseException | None) -> None:
        """Wake the oldest waiter: with ``exc``, or with None (retry)."""
        with self._lock:
            while self._waiters:
                loop, fut = self._waiters.popleft()
                if exc is None:
                    if _post(loop, self._handoff, fut, None):
                        return
                elif _post(loop, _settle_future, fut, None, exc):
                    return


def _post(loop: asyncio.AbstractEventLoop, fn: Callable, *args) -> bool:
    """call_soon_threadsafe; False if the loop is closed."""
    try:
        loop.call_soon_threadsafe(fn, *args)
        return True
    except RuntimeError:
        return False


def _settle_future(fut: asyncio.Future, result, exc: BaseException | None) -> None:
    if not fut.done():
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(result)


def check_feed(pcm16k: np.ndarray, open_: bool) -> None:
    """What every recogniser's ``Utterance.feed`` accepts: 1-D int16, before the end."""
    if not isinstance(pcm16k, np.ndarray) or pcm16k.dtype != np.int16:
        raise TypeError("feed expects a numpy int16 array")
    if pcm16k.ndim != 1:
        raise ValueError(f"feed expects a 1-D array, got shape {pcm16k.shape}")
    if not open_:
        raise RuntimeError("feed() after finish()/cancel()")


class Utterance:
    """One caller turn on a checked-out decoder; see the module doc.  Create
    with :meth:`Recognizer.start`.  Use from the event loop thread."""

    def __init__(self, rec: Recognizer, worker: _Worker, turn: _Turn) -> None:
        self._rec = rec
        self._q = worker.q
        self._turn = turn
        self._samples = 0
        self.truncated = False
        """True once audio past ``max_utterance_s`` was dropped."""
        # Dropped without finish()/cancel(): cancel it on the decoder thread.
        self._finalizer = weakref.finalize(self, self._q.put, ("cancel", turn))

    @property
    def samples(self) -> int:
        """Samples accepted so far (not counting any dropped past the limit)."""
        return self._samples

    def feed(self, pcm16k: np.ndarray) -> None:
        """Queue 16 kHz int16 audio for decoding (copies it; never blocks)."""
        check_feed(pcm16k, self._turn.open)
        n = len(pcm16k)
        if n == 0:
            return
        room = self._rec.max_samples - self._samples
        if n > room:
            self.truncated = True
            if room <= 0:
                return
            pcm16k, n = pcm16k[:room], room
        self._samples += n
        self._q.put(("audio", self._turn, pcm16k.copy()))

    async def hypothesis(self) -> str:
        """The recogniser's best guess over all the audio fed so far (as ``finish``
        words), without ending the utterance; ``""`` after ``finish()``/``cancel()``."""
        if not self._turn.open:
            return ""
        fut: asyncio.Future[str] = self._turn.loop.create_future()
        self._q.put(("peek", self._turn, fut))
        return await fut

    def _close(self, kind: str) -> None:
        if self._turn.open:
            self._turn.open = False
            self._finalizer.detach()
            self._q.put((kind, self._turn))

    async def finish(self) -> str:
        """The final transcript; the decoder is back in the pool when it returns.
        After ``cancel()``: ``""``."""
        self._close("end")
        return await asyncio.shield(self._turn.done)

    async def cancel(self) -> None:
        """Abandon the utterance; returns once the decoder is back in the pool."""
        self._close("cancel")
        try:
            await asyncio.shield(self._turn.done)
        except RuntimeError:  # SttError, or the recognizer was closed
            pass


_recognizers: dict[Vocabulary | None, Recognizer] = {}
_recognizers_lock = threading.Lock()


def get_recognizer(vocabulary: Vocabulary | None = None, decoders: int | None = None) -> Recognizer:
    """The process-wide :class:`Recognizer` for ``vocabulary`` (``None``: general English).

    ``decoders`` (1..64), if given, sets its pool size: on first use, or later
    (growing takes effect at once; on shrinking, surplus decoders are stopped
    as they come back from their utterances)."""
    rec = _recognizers.get(vocabulary)
    if rec is None:
        with _recognizers_lock:
            rec = _recognizers.get(vocabulary)
            if rec is None:
                rec = _recognizers[vocabulary] = Recognizer(vocabulary, 2 if decoders is None else decoders)
    if decoders is not None and decoders != rec.pool_size:
        rec.resize(decoders)
    return rec
