"""/metrics: Prometheus text that parses, and counters that move during a real call;
call-tagged log lines from the same call."""

from __future__ import annotations

import asyncio
import io
import logging

import aiohttp
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from callbridge.logs import JsonFormatter, tag_records
from callbridge.metrics import OUTCOMES, CallFigures, Metrics, outcome
from callbridge.sim.caller import SimulatedCall

from .conftest import speech_8k


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text exposition, by (name, sorted labels)."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def scrape(session: aiohttp.ClientSession, url: str) -> dict:
    async with session.get(f"{url}/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return samples(await resp.text())


@pytest.mark.slow
async def test_simulated_call_moves_metrics_and_tags_logs(start_server):
    url = await start_server()
    lines = io.StringIO()
    handler = logging.StreamHandler(lines)
    tag_records()
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("callbridge")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        async with aiohttp.ClientSession() as session:
            before = await scrape(session, url)
            assert before[("callbridge_calls_active", ())] == 0
            assert before[("callbridge_shard_restarts_total", ())] == 0  # exported even in dev mode
            for name in OUTCOMES:
                assert before[("callbridge_calls_total", (("outcome", name),))] == 0
            call = SimulatedCall(
                url,
                audio=[speech_8k("I would like to book an appointment on Monday at three pm.")],
                polite=True,
                hold_s=1.0,
            )
            running = asyncio.ensure_future(call.run())
            during = None
            for _ in range(100):  # while the call is up: live counts, before it ends
                await asyncio.sleep(0.1)
                during = await scrape(session, url)
                if during[("callbridge_frames_in_total", ())] > 50:
                    break
            assert during[("callbridge_calls_active", ())] == 1
            assert during[("callbridge_frames_out_total", ())] > 0  # the greeting
            result = await running
            after = await scrape(session, url)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)

    stats = result.record["stats"]
    assert after[("callbridge_calls_active", ())] == 0
    assert after[("callbridge_calls_total", (("outcome", "caller_hangup"),))] == 1
    assert after[("callbridge_frames_in_total", ())] == stats["frames_in"]
    assert after[("callbridge_frames_out_total", ())] == stats["frames_out"]
    for hist in ("voice_to_voice", "stt_finalisation", "agent_first_token", "tts_first_audio"):
        assert after[(f"callbridge_{hist}_seconds_count", ())] >= 1, hist
    turn = next(e for e in result.record["timeline"] if e["event"] == "turn")
    # The histogram holds the turn's own figure (at least the shortest endpoint: 250 ms).
    assert (
        0.25 < after[("callbridge_voice_to_voice_seconds_sum", ())] <= turn["voice_to_voice_ms"] / 1000 + 1e-6
    )
    assert after[("callbridge_child_restarts_total", (("child", "codec"),))] == 0
    assert result.record["figures"]["turns"] >= 1

    events = [orjson.loads(line) for line in lines.getvalue().splitlines()]
    tagged = [e for e in events if e.get("callSid") == call.call_sid]
    assert any("stream" in e["msg"] and "started" in e["msg"] for e in tagged), events
    assert all(e["streamSid"] == result.stream_sid for e in tagged)
    assert {"ts", "level", "logger", "msg"} <= set(tagged[0])


def test_call_figures_fold_timeline_events_into_metrics():
    metrics = Metrics(children=["codec"])
    fig = CallFigures(metrics)
    fig.observe("turn", {"voice_to_voice_ms": 510.0, "agent_ms": 1.0, "tts_ms": 2.0})
    fig.observe("transcript.final", {"text": "hi", "stt_ms": 4.0})
    fig.observe("barge_in", {"utterance": 2, "detection_ms": 270.0})
    fig.observe("child_restarted", {"child": "codec"})
    fig.observe("upstream_reconnected", {})
    fig.observe("jitter_stats", {"concealed_frames": 5, "stale": 1, "jitter_ms": 30.0, "loss_pct": 1.0})
    fig.observe("jitter_stats", {"concealed_frames": 8, "stale": 1, "jitter_ms": 35.0, "loss_pct": 1.5})
    fig.observe("transcript.partial", {"text": "h"})  # carries no figure
    metrics.call_ended("the agent ended the call", 100, 80)
    got = samples(metrics.render().decode())
    assert got[("callbridge_frames_concealed_total", ())] == 8  # deltas of running totals
    assert got[("callbridge_frames_stale_total", ())] == 1
    assert got[("callbridge_barge_ins_total", ())] == 1
    assert got[("callbridge_barge_in_detection_seconds_sum", ())] == 0.27
    assert got[("callbridge_child_restarts_total", (("child", "codec"),))] == 1
    assert got[("callbridge_upstream_reconnects_total", ())] == 1
    assert got[("callbridge_voice_to_voice_seconds_count", ())] == 1
    assert got[("callbridge_stt_finalisation_seconds_sum", ())] == 0.004
    assert got[("callbridge_calls_total", (("outcome", "agent_hangup"),))] == 1
    assert (got[("callbridge_frames_in_total", ())], got[("callbridge_frames_out_total", ())]) == (100, 80)
    assert fig.to_json() == {
        "turns": 1,
        "barge_ins": 1,
        "restarts": 1,
        "voice_to_voice_ms": 510.0,
        "jitter_ms": 35.0,
        "loss_pct": 1.5,
        "concealed": 8,
    }


def test_outcomes_are_a_bounded_set():
    assert outcome("the agent ended the call") == "agent_hangup"
    assert outcome("twilio stop") == "caller_hangup"
    assert outcome("codec failed 6 times in 30 s") == "failed"
    assert outcome("closed 1008: call CA1: stream token expired") == "refused"
    assert outcome("socket closed") == outcome("socket error: boom") == "disconnected"
    assert {outcome(r) for r in ("", "anything", "closed 1007: x")} <= set(OUTCOMES)


def test_tool_calls_are_counted_by_name_and_outcome_with_bounded_labels():
    from callbridge.metrics import MAX_TOOL_LABELS

    metrics = Metrics()
    figures = CallFigures(metrics)
    figures.observe("tool.called", {"name": "lookup", "ok": True, "duration_ms": 12.5})
    figures.observe(
        "tool.called", {"name": "lookup", "ok": False, "duration_ms": 3000.0, "error": "timed out"}
    )
    for i in range(MAX_TOOL_LABELS + 10):  # names a model made up
        figures.observe("tool.called", {"name": f"made_up_{i}", "ok": False, "duration_ms": 0.1})
    samples = {
        (s.labels.get("name"), s.labels.get("ok")): s.value
        for family in text_string_to_metric_families(metrics.render().decode())
        if family.name == "callbridge_tool_calls"
        for s in family.samples
        if s.name.endswith("_total")
    }
    assert samples[("lookup", "true")] == 1 and samples[("lookup", "false")] == 1
    assert samples[("other", "false")] == 11  # past the first MAX_TOOL_LABELS names
    assert len({name for name, _ in samples}) == MAX_TOOL_LABELS + 1
    assert figures.tool_calls == MAX_TOOL_LABELS + 12
    text = metrics.render().decode()
    assert f"callbridge_tool_call_seconds_count {MAX_TOOL_LABELS + 12}.0" in text
