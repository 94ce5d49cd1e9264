"""The bounded caller-audio backlog of the remote back ends (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callbridge.upstreams.backlog import Backlog


def test_in_order_then_oldest_dropped_and_counted():
    b = Backlog(cap_bytes=500)
    for i in range(5):
        assert b.push(bytes([i]) * 160, at=i * 0.02) == (1 if i >= 3 else 0)
    assert b.size == 480 and b.dropped_chunks == 2 and b.dropped_bytes == 320
    assert [b.pop()[0][0] for _ in range(len(b))] == [2, 3, 4]
    with pytest.raises(IndexError):
        b.pop()


def test_push_front_keeps_a_chunk_first_in_line():
    b = Backlog(cap_bytes=1000)
    b.push(b"a" * 10, 0.0)
    b.push(b"b" * 10, 0.02)
    chunk, at = b.pop()
    b.push_front(chunk, at)
    assert b.pop() == (b"a" * 10, 0.0) and b.size == 10


@given(st.lists(st.integers(1, 400), max_size=60), st.integers(1, 2000))
def test_never_over_the_cap_and_the_newest_kept(sizes, cap):
    b = Backlog(cap_bytes=cap)
    for i, n in enumerate(sizes):
        b.push(bytes([i % 256]) * n, float(i))
        assert b.size <= cap
    kept = [b.pop() for _ in range(len(b))]
    assert [at for _, at in kept] == sorted(at for _, at in kept)
    if sizes and sizes[-1] <= cap:
        assert kept[-1][1] == len(sizes) - 1
    assert sum(len(d) for d, _ in kept) + b.dropped_bytes == sum(sizes)
