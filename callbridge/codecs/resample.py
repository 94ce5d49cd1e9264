"""Streaming int16 sample-rate conversion for the call path (pure, no I/O).

``StreamingResampler(rate_in, rate_out)`` is a stateful polyphase FIR resampler
(Kaiser-windowed sinc, 80 dB design) for any rational ratio, built for 20 ms telephone
frames. ``process(x)`` takes a 1-D ``np.int16`` array of any length and returns a new one;
after ``N`` input samples the total output is exactly ``floor(N * rate_out / rate_in)``
samples, however the input was chunked, and nothing is held back beyond the filter's group
delay (``delay_samples``, ``delay_ms``: about 4.2 ms). Anything but an int16 array raises
``TypeError``. One instance per stream (not thread-safe; the taps are shared).

Behaviour, limits, cost and implementation: docs/audio.md.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from numpy.lib.stride_tricks import as_strided

__all__ = ["MAX_TAPS", "StreamingResampler", "design_taps"]

#: Largest prototype filter (taps at ``up * rate_in``) a ratio may need.
MAX_TAPS = 1 << 22

_ATTENUATION_DB = 80.0
_PASS_FRACTION = 0.85  # passband edge / lower Nyquist frequency
_BLOCK_TARGET = 32  # outputs per block (rounded to a multiple of up)
_MAX_BLOCK_ELEMS = 1 << 20  # larger banded matrices: per-output gather path
_SLICE_TARGET = 4096  # input samples per internal slice
_DTYPE = np.float32  # measured ~1.2-2x faster than float64; error ~0.01 LSB
# 0-d arrays: as ufunc operands they are cheaper than numpy scalars
_LO = np.array(-32768.0, dtype=_DTYPE)
_HI = np.array(32767.0, dtype=_DTYPE)
_I16 = np.dtype(np.int16)


def design_taps(rate_in: int, rate_out: int) -> tuple[np.ndarray, int, int]:
    """Return ``(h, up, down)``: the float64 prototype low-pass (at
    ``up * rate_in``, DC gain ``up``) and the reduced ratio.

    The length is ``2 * down * k + 1`` so the group delay ``(len - 1) / 2``
    high-rate samples is exactly ``k`` output samples.
    """
    g = math.gcd(rate_in, rate_out)
    up, down = rate_out // g, rate_in // g
    fs = float(rate_in) * up
    nyq = min(rate_in, rate_out) / 2.0
    f_pass, f_stop = _PASS_FRACTION * nyq, nyq
    a = _ATTENUATION_DB
    # Kaiser's formulas: length for a transition of (f_stop - f_pass), beta.
    dw = 2.0 * math.pi * (f_stop - f_pass) / fs
    n_min = math.ceil((a - 7.95) / (2.285 * dw)) + 1
    k = math.ceil((n_min - 1) / (2 * down))
    n = 2 * down * k + 1
    if n > MAX_TAPS:
        raise ValueError(
            f"resampling {rate_in} -> {rate_out} Hz (up={up}, down={down}) "
            f"needs a {n}-tap filter, more than MAX_TAPS={MAX_TAPS}"
        )
    beta = 0.1102 * (a - 8.7)
    fc = (f_pass + f_stop) / 2.0 / fs  # cutoff, cycles per high-rate sample
    t = np.arange(n) - (n - 1) / 2.0
    h = 2.0 * fc * np.sinc(2.0 * fc * t) * np.kaiser(n, beta)
    h *= up / h.sum()  # exact DC gain of every polyphase branch on average
    return h, up, down


def _block_size(up: int, rate_out: int) -> int:
    """Outputs per block: a multiple of ``up`` near ``_BLOCK_TARGET``,
    preferably dividing a 20 ms output frame (so frames are whole blocks)."""
    cands = [up * m for m in range(1, max(1, (2 * _BLOCK_TARGET) // up) + 1)]
    frame = rate_out // 50 if rate_out % 50 == 0 else 0
    fitting = [c for c in cands if frame and frame % c == 0]
    return min(fitting or cands, key=lambda c: abs(c - _BLOCK_TARGET))


class _Plan:
    """Everything shared by all streams of one ratio (read-only)."""

    def __init__(self, rate_in: int, rate_out: int) -> None:
        h, up, down = design_taps(rate_in, rate_out)
        self.up, self.down = up, down
        self.delay = (len(h) - 1) // (2 * down)  # output samples
        kp = -(-len(h) // up)
        self.kp = kp
        hp = np.zeros(kp * up)
        hp[: len(h)] = h
        # e[p, j] = h[p + j*up]: tap j of branch p multiplies x[i0 - j].
        e = hp.reshape(kp, up).T
        # erev[p, r] = e[p, kp-1-r] multiplies x[i0 - kp + 1 + r].
        self.erev = np.ascontiguousarray(e[:, ::-1], dtype=_DTYPE)
        # History needed so the oldest window start is always in the buffer.
        self.hist = kp - 1 + -(-down // up)
        self.po = po = _block_size(up, rate_out)
        self.s = po * down // up  # input samples per block
        self.w = self.s + kp - 1  # window rows of a block
        self.blocked = po * self.w <= _MAX_BLOCK_ELEMS
        if self.blocked:
            # tb[r, c]: weight of window row r (input i0_block - kp + 1 + r)
            # in output c of a block; column c is branch p's taps, reversed,
            # at rows i0[c] .. i0[c] + kp - 1.
            c = np.arange(po)
            i0 = (c * down) // up
            p = (c * down) % up
            rows = i0[:, None] + np.arange(kp)[None, :]
            tb = np.zeros((self.w, po), dtype=_DTYPE)
            tb[rows, c[:, None]] = self.erev[p]
            tb.flags.writeable = False
            self.tb = tb
            self.i0 = i0  # first window row of each column
        else:
            self.w = kp  # the gather path reads one window per output
        self.slice_in = self.s * max(1, _SLICE_TARGET // self.s)
        self.erev.flags.writeable = False


_dot = np.dot
_rint = np.rint


def _to_int16(y: np.ndarray) -> np.ndarray:
    """Round and saturate float samples (in place) into a new int16 array."""
    _rint(y, out=y)
    y.clip(_LO, _HI, out=y)  # the method: cheaper than np.clip or min+max
    return y.astype(_I16)


def _check_input(x: object) -> None:
    """The slow half of process()'s argument check: raise or accept."""
    if not isinstance(x, np.ndarray) or x.dtype != _I16:
        raise TypeError(
            "StreamingResampler.process expects a numpy int16 array, got "
            + (f"dtype {x.dtype}" if isinstance(x, np.ndarray) else type(x).__name__)
        )
    if x.ndim != 1:
        raise ValueError(f"expected a 1-D int16 array, got shape {x.shape}")


@lru_cache(maxsize=64)
def _plan(rate_in: int, rate_out: int) -> _Plan:
    return _Plan(rate_in, rate_out)


class StreamingResampler:
    """Stateful rational-ratio int16 resampler; see the module docstring."""

    def __init__(self, rate_in: int, rate_out: int) -> None:
        for name, r in (("rate_in", rate_in), ("rate_out", rate_out)):
            if isinstance(r, bool) or not isinstance(r, (int, np.integer)):
                raise TypeError(f"{name} must be an int, got {type(r).__name__}")
            if r <= 0:
                raise ValueError(f"{name} must be positive, got {r}")
        self.rate_in = int(rate_in)
        self.rate_out = int(rate_out)
        self._identity = self.rate_in == self.rate_out
        # Fast path: residue r -> {chunk length -> precomputed views}; the
        # residue r = (inputs so far * up) % down fixes where the next
        # output's window lies relative to the buffer.
        self._fast: dict[int, dict[int, tuple]] = {}
        self._fast_cur: dict[int, tuple] = {}  # the table for the current r
        if self._identity:
            return
        self._p = p = _plan(self.rate_in, self.rate_out)
        # + p.w: a block view may overhang the data by unused (zero-tap) rows
        self._buf = np.zeros(p.hist + p.slice_in + p.w, dtype=_DTYPE)
        self._views: dict[tuple[int, int], tuple] = {}
        self.reset()

    # -- public API --------------------------------------------------------

    @property
    def delay_samples(self) -> int:
        """Group delay in output samples (0 for equal rates)."""
        return 0 if self._identity else self._p.delay

    @property
    def delay_ms(self) -> float:
        """Group delay in milliseconds."""
        return 1000.0 * self.delay_samples / self.rate_out

    def reset(self) -> None:
        """Forget all history: the next call starts a fresh stream."""
        if self._identity:
            return
        self._buf[: self._p.hist] = 0.0
        self._n_in = 0
        self._n_out = 0
        self._fast_cur = self._fast.setdefault(0, {})

    def process(self, x: np.ndarray) -> np.ndarray:
        """Resample the next chunk of the stream: 1-D int16 in, a new 1-D
        int16 array out (``floor`` of the cumulative ratio, see module doc)."""
        if x.__class__ is not np.ndarray or x.dtype is not _I16 or x.ndim != 1:
            _check_input(x)
        fast = self._fast_cur.get(len(x))
        if fast is None:
            return self._process_slow(x)
        # Steady state (e.g. 20 ms frames): whole blocks at a known buffer
        # offset, every view precomputed: 3 copies, 1 product, 3 conversions.
        xin, view, xc, tb, ob, y, h_dst, h_src, n, n_out, nxt = fast
        xin[...] = x
        xc[...] = view
        _dot(xc, tb, out=ob)
        h_dst[...] = h_src
        self._n_in += n
        self._n_out += n_out
        self._fast_cur = nxt
        return _to_int16(y)

    # -- internals ---------------------------------------------------------

    def _process_slow(self, x: np.ndarray) -> np.ndarray:
        if self._identity:
            return x.copy()
        n = len(x)
        step = self._p.slice_in
        if n <= step:
            y = self._run(x)
        else:
            parts = [self._run(x[i : i + step]).copy() for i in range(0, n, step)]
            y = np.concatenate(parts)
        self._after_slow_path(n)
        return _to_int16(y)

    def _after_slow_path(self, n: int) -> None:
        """Select the fast table for the new residue; add an entry for ``n``
        if a chunk of ``n`` samples from here is a whole number of blocks
        starting at a phase-0 output."""
        p = self._p
        up, down = p.up, p.down
        r = (self._n_in * up) % down
        if sum(len(t) for t in self._fast.values()) >= 16:
            self._fast.clear()  # bound memory under erratic chunk sizes
        table = self._fast_cur = self._fast.setdefault(r, {})
        count = (r + n * up) // down  # outputs a chunk of n gives from here
        if (
            not p.blocked
            or n in table
            or not 0 < n <= p.slice_in
            or r % up  # next output is not phase 0
            or count == 0
            or count % p.po
        ):
            return
        nb = count // p.po
        view, xc, ob = self._view(p.hist - r // up - p.kp + 1, nb)
        buf, hist = self._buf, p.hist
        table[n] = (
            buf[hist : hist + n],
            view,
            xc,
            p.tb,
            ob,
            ob.reshape(-1),
            buf[:hist],
            buf[n : n + hist],
            n,
            count,
            self._fast.setdefault((r + n * up) % down, {}),
        )

    def _run(self, x: np.ndarray) -> np.ndarray:
        """Consume at most ``slice_in`` samples; return float outputs."""
        p = self._p
        buf, hist, n = self._buf, p.hist, len(x)
        buf[hist : hist + n] = x
        o_start = self._n_out
        o_end = ((self._n_in + n) * p.up) // p.down
        base = self._n_in - hist  # buffer index of input i is i - base
        self._n_in += n
        self._n_out = o_end
        if o_end == o_start:
            y = np.empty(0, dtype=_DTYPE)
        elif p.blocked:
            y = self._blocked(o_start, o_end, base)
        else:
            y = self._gathered(o_start, o_end, base)
        buf[:hist] = buf[n : n + hist]
        return y

    def _blocked(self, o_start: int, o_end: int, base: int) -> np.ndarray:
        """Outputs ``o_start:o_end``: a head up to the next phase-0 output
        (o % up == 0), then whole blocks of ``po``, then a partial tail."""
        p = self._p
        up, po = p.up, p.po
        count = o_end - o_start
        c0 = o_start % up
        head = min((up - c0) % up, count)
        if head == count:
            return self._partial(o_start - c0, c0, c0 + head, base)
        o_b = o_start + head  # phase 0: its window starts exactly here
        nb, tail = divmod(o_end - o_b, po)
        start = (o_b * p.down) // up - p.kp + 1 - base
        if head == 0 and tail == 0:
            view, xc, ob = self._view(start, nb)
            np.copyto(xc, view)
            _dot(xc, p.tb, out=ob)
            return ob.reshape(-1)  # scratch: converted by the caller at once
        y = np.empty(count, dtype=_DTYPE)
        if head:
            y[:head] = self._partial(o_start - c0, c0, up, base)
        if nb:
            view, xc, _ = self._view(start, nb)
            np.copyto(xc, view)
            _dot(xc, p.tb, out=y[head : head + nb * po].reshape(nb, po))
        if tail:
            y[head + nb * po :] = self._partial(o_b + nb * po, 0, tail, base)
        return y

    def _partial(self, o_block: int, c_lo: int, c_hi: int, base: int) -> np.ndarray:
        """Columns ``c_lo:c_hi`` of the block that starts at phase-0 output
        ``o_block``, as one vector-matrix product."""
        p = self._p
        r_lo = int(p.i0[c_lo])
        r_hi = int(p.i0[c_hi - 1]) + p.kp
        start = (o_block * p.down) // p.up - p.kp + 1 - base
        return self._buf[start + r_lo : start + r_hi] @ p.tb[r_lo:r_hi, c_lo:c_hi]

    def _view(self, start: int, nb: int) -> tuple:
        """(overlapping windows of ``nb`` blocks from buffer index ``start``,
        scratch for their copy, scratch for the product), cached."""
        key = (start, nb)
        v = self._views.get(key)
        if v is None:
            if len(self._views) >= 16:
                self._views.clear()
            p, buf = self._p, self._buf
            view = as_strided(buf[start:], shape=(nb, p.w), strides=(p.s * buf.itemsize, buf.itemsize))
            v = (view, np.empty((nb, p.w), dtype=_DTYPE), np.empty((nb, p.po), dtype=_DTYPE))
            self._views[key] = v
        return v

    def _gathered(self, o_start: int, o_end: int, base: int) -> np.ndarray:
        """Per-output gather path for ratios whose block matrix is too big."""
        p = self._p
        od = np.arange(o_start, o_end, dtype=np.int64) * p.down
        first = od // p.up - (p.kp - 1) - base  # window start in the buffer
        phase = od % p.up
        buf = self._buf
        win = as_strided(buf, shape=(len(buf) - p.kp + 1, p.kp), strides=(buf.itemsize,) * 2)
        return np.einsum("ij,ij->i", win[first], p.erev[phase])
