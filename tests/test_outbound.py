"""Framing and pacing of outbound audio, with time passed in."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from callbridge.codecs.framing import Framer
from callbridge.gateway.output import Pacer


@given(st.lists(st.binary(max_size=700), max_size=30))
def test_framer_cuts_exact_frames_and_loses_nothing(pieces):
    framer = Framer(160)
    frames = [f for p in pieces for f in framer.push(p)]
    last = framer.flush()
    assert all(len(f) == 160 for f in frames)
    joined = b"".join(frames)
    total = b"".join(pieces)
    assert joined == total[: len(joined)]
    if last is not None:
        assert len(last) == 160 and last == total[len(joined):].ljust(160, b"\xff")
    else:
        assert joined == total
    assert framer.pending == 0


def test_pacer_keeps_lead_bounded_and_steady():
    pacer = Pacer(lead_s=0.2)
    now, sent, times = 100.0, 0, []
    while sent < 100:  # a producer with 100 frames ready at once
        if pacer.next_send_at(now) <= now:
            pacer.sent(now)
            times.append(now)
            sent += 1
        else:
            now += 0.001
        assert pacer.buffered_s(now) <= 0.2 + 0.02 + 1e-9
    # The first ~10 frames leave at once (the lead), then one per 20 ms.
    assert sum(t == 100.0 for t in times) == 11
    gaps = [b - a for a, b in zip(times[11:], times[12:])]
    assert all(0.019 <= g <= 0.021 for g in gaps)


def test_pacer_after_underrun_and_clear():
    pacer = Pacer(lead_s=0.1)
    pacer.sent(10.0)
    assert abs(pacer.buffered_s(10.0) - 0.02) < 1e-9
    assert pacer.buffered_s(11.0) == 0.0  # played out long ago
    pacer.sent(11.0)  # playback restarts from now, not from the stale end
    assert abs(pacer.play_end - 11.02) < 1e-9
    pacer.cleared(11.005)
    assert pacer.buffered_s(11.005) == 0.0
