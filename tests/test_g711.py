"""callbridge.codecs.g711 against the G.711 reference (CPython's audioop)."""

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callbridge.codecs.g711 import ULAW_SILENCE, ulaw_decode, ulaw_encode

with warnings.catch_warnings():
    # stdlib audioop on 3.11/3.12 (deprecated), audioop-lts on 3.13+
    warnings.simplefilter("ignore", DeprecationWarning)
    audioop = pytest.importorskip("audioop")

ALL_PCM = np.arange(-32768, 32768, dtype=np.int16)
ALL_CODES = bytes(range(256))


def test_encode_matches_audioop_for_every_int16():
    assert ulaw_encode(ALL_PCM) == audioop.lin2ulaw(ALL_PCM.tobytes(), 2)


def test_decode_matches_audioop_for_every_code():
    ref = np.frombuffer(audioop.ulaw2lin(ALL_CODES, 2), dtype=np.int16)
    got = ulaw_decode(ALL_CODES)
    assert got.dtype == np.int16
    np.testing.assert_array_equal(got, ref)


def test_silence_byte():
    assert ULAW_SILENCE == 0xFF
    assert ulaw_encode(np.zeros(160, np.int16)) == bytes([ULAW_SILENCE]) * 160
    assert not ulaw_decode(bytes([ULAW_SILENCE]) * 160).any()


def test_code_round_trip_is_identity_except_negative_zero():
    back = ulaw_encode(ulaw_decode(ALL_CODES))
    diff = [c for c in range(256) if back[c] != c]
    assert diff == [0x7F]
    assert back[0x7F] == ULAW_SILENCE


def test_pcm_round_trip_error_bound():
    x = ALL_PCM.astype(np.int64)
    err = np.abs(ulaw_decode(ulaw_encode(ALL_PCM)).astype(np.int64) - x)
    small = np.abs(x) <= 32124
    assert np.all(err[small] <= np.abs(x[small]) / 32 + 8)
    # beyond the largest code the encoder saturates
    big = ulaw_decode(ulaw_encode(np.array([-32768, 32767], np.int16)))
    assert big.tolist() == [-32124, 32124]


def test_encode_is_monotonic_in_decoded_value():
    dec = ulaw_decode(ulaw_encode(ALL_PCM)).astype(np.int64)
    assert np.all(np.diff(dec) >= 0)


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=400))
def test_decode_then_encode_is_stable(b):
    once = ulaw_encode(ulaw_decode(b))
    assert len(once) == len(b)
    assert ulaw_encode(ulaw_decode(once)) == once
    assert once == audioop.lin2ulaw(audioop.ulaw2lin(b, 2), 2)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(-32768, 32767), max_size=400))
def test_random_frames_match_audioop(samples):
    pcm = np.array(samples, dtype=np.int16)
    enc = ulaw_encode(pcm)
    assert enc == audioop.lin2ulaw(pcm.tobytes(), 2)
    assert ulaw_decode(enc).tobytes() == audioop.ulaw2lin(enc, 2)


def test_accepts_bytes_like_and_strided_input():
    frame = ulaw_encode(ALL_PCM[::409])
    assert frame == audioop.lin2ulaw(ALL_PCM[::409].copy().tobytes(), 2)
    ref = ulaw_decode(frame)
    for like in (bytearray(frame), memoryview(frame), np.frombuffer(frame, np.uint8)):
        np.testing.assert_array_equal(ulaw_decode(like), ref)
    assert ulaw_decode(b"").shape == (0,)
    assert ulaw_encode(np.zeros(0, np.int16)) == b""


def test_decode_returns_a_new_array():
    data = bytearray(b"\x00\x80")
    out = ulaw_decode(data)
    data[0] = 0xFF
    assert out[0] == -32124
    out[1] = 0  # writable, and no shared table behind it
    assert ulaw_decode(b"\x80")[0] == 32124


@pytest.mark.parametrize(
    "bad",
    [
        [0, 1, 2],
        np.zeros(4, np.float32),
        np.zeros(4, np.int32),
        np.zeros(4, np.uint16),
        np.zeros(4, ">i2"),
    ],
)
def test_encode_rejects_non_int16(bad):
    with pytest.raises(TypeError, match="int16"):
        ulaw_encode(bad)
