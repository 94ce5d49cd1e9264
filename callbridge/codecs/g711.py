"""G.711 mu-law codec (pure, no I/O), bit-exact with CPython's ``audioop``.

``ulaw_encode(samples)`` takes a native-byte-order ``np.int16`` array and returns the mu-law
bytes (anything else raises ``TypeError``: convert and clip float audio yourself);
``ulaw_decode(data)`` takes any bytes-like object and returns a new ``np.int16`` array. Both
are single table look-ups built at import time. The reference algorithm, the loss bounds and
the round-trip rules: docs/audio.md.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ULAW_SILENCE", "ulaw_decode", "ulaw_encode"]

#: The mu-law byte for a zero sample (what ``ulaw_encode`` gives for 0).
ULAW_SILENCE = 0xFF

_BIAS = 0x84  # 132, the bias of the 16-bit reference (33 at 14 bits)
_CLIP14 = 8159  # magnitude clip of the 14-bit reference


def _build_decode_table() -> np.ndarray:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    t = ((u & 0x0F) << 3) + _BIAS
    t <<= (u & 0x70) >> 4
    return np.where(u & 0x80, _BIAS - t, t - _BIAS).astype(np.int16)


def _build_encode_table() -> np.ndarray:
    # Index = the int16 sample's bit pattern read as uint16, so build the
    # table for the signed values in uint16 order: 0..32767, -32768..-1.
    pcm = np.arange(65536, dtype=np.int32)
    pcm = np.where(pcm >= 32768, pcm - 65536, pcm)
    v = pcm >> 2  # 14-bit value, arithmetic shift like the reference
    neg = v < 0
    mask = np.where(neg, 0x7F, 0xFF)
    mag = np.minimum(np.where(neg, -v, v), _CLIP14) + (_BIAS >> 2)
    # segment = index of the first segment end >= mag; 8 (past the last one,
    # reached only by the clipped magnitude 8159 + 33) saturates to 0x7F.
    seg_end = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])
    seg = np.searchsorted(seg_end, mag, side="left")
    uval = (seg << 4) | ((mag >> (seg + 1)) & 0x0F)
    uval = np.where(seg >= 8, 0x7F, uval)
    return (uval ^ mask).astype(np.uint8)


_DECODE = _build_decode_table()  # 256 x int16
_ENCODE = _build_encode_table()  # 65,536 x uint8, ~2 ms to build
_DECODE.flags.writeable = False
_ENCODE.flags.writeable = False
ULAW_SQUARED = _DECODE.astype(np.float64) ** 2
"""Squared linear value of each mu-law code: a frame's power without decoding it."""
ULAW_SQUARED.flags.writeable = False
_U8 = np.dtype(np.uint8)
_U16 = np.dtype(np.uint16)
_I16 = np.dtype(np.int16)  # native byte order; '>i2' is rejected


def ulaw_decode(data: bytes | bytearray | memoryview) -> np.ndarray:
    """Decode mu-law bytes to a new 1-D ``np.int16`` array (one per byte)."""
    return _DECODE.take(np.frombuffer(data, dtype=_U8))


def ulaw_encode(pcm: np.ndarray) -> bytes:
    """Encode an ``np.int16`` array to mu-law bytes (one byte per sample)."""
    if not isinstance(pcm, np.ndarray) or pcm.dtype != _I16:
        raise TypeError(
            "ulaw_encode expects a numpy int16 array, got "
            f"{type(pcm).__name__}" + (f" of dtype {pcm.dtype}" if isinstance(pcm, np.ndarray) else "")
        )
    # take() is ~2x faster than fancy indexing for 160-sample frames
    return _ENCODE.take(pcm.view(_U16)).tobytes()
