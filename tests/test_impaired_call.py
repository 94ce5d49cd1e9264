"""A mobile caller on a bad line: loss, stalls then bursts, timestamp gaps."""

from __future__ import annotations

import numpy as np
import pytest

from callbridge.cli import bundled_turns
from callbridge.sim.caller import SimulatedCall
from callbridge.sim.impair import Impairment
from callbridge.sim.wavio import read_wav


@pytest.mark.slow
@pytest.mark.alone
async def test_agent_understands_and_replies_smoothly_at_3pct_loss_and_stalls(start_server):
    url = await start_server(greeting="Hi.")
    line = Impairment.from_cli(loss="3%", jitter="200-800ms", seed=1)
    turn = read_wav(bundled_turns()[0])
    result = await SimulatedCall(url, audio=[turn], polite=True, hold_s=1.0, impairment=line).run()

    timeline = result.record["timeline"]
    final = next(e["text"] for e in timeline if e["event"] == "transcript.final").split()
    for word in ("book", "appointment", "monday", "three"):
        assert word in final
    assert any(e["event"] == "agent.reply" for e in timeline)
    stats = [e for e in timeline if e["event"] == "jitter_stats"][-1]
    assert 1.0 <= stats["loss_pct"] <= 6.0
    assert stats["concealed_pct"] > 0 and stats["jitter_ms"] > 0
    assert stats["latency_p95_ms"] >= 150  # what the stalls cost is measured (none is added)
    # Inbound stalls (and the bursts after them, consumed at once) do not make the agent
    # choppy: within each utterance (frames less than 1 s apart) playout, starting at its
    # first frame's arrival, never waits for a frame (the writer's lead absorbs a late tick).
    arrivals = np.asarray(result.media_received)
    starts = np.flatnonzero(np.diff(arrivals, prepend=-np.inf) >= 1.0)
    for a, b in zip(starts, [*starts[1:], len(arrivals)], strict=True):
        due = arrivals[a] + 0.020 * np.arange(b - a)
        assert np.max(arrivals[a:b] - due) <= 0.0, "the caller's playout ran dry"


@pytest.mark.slow
@pytest.mark.alone
async def test_timestamp_gaps_are_concealed_as_time(start_server):
    url = await start_server(greeting="")
    line = Impairment.from_cli(gap="100-300ms", seed=3, gap_every_s=(0.5, 1.0))
    silence = np.zeros(8000 * 4, np.int16)
    result = await SimulatedCall(url, audio=[silence], gap_s=0.0, hold_s=0.2, impairment=line).run()
    stats = [e for e in result.record["timeline"] if e["event"] == "jitter_stats"][-1]
    assert stats["loss_pct"] > 5  # the missing timestamps were seen as lost audio
    assert stats["stale"] == 0 and stats["duplicates"] == 0
