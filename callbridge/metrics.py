"""Every Prometheus metric of callbridge, defined once, fed from one place.

``Metrics`` is one process's set, on its own ``CollectorRegistry`` (not the global one: tests
run several gateways in one process, and each production shard has its own). The figures come
from timeline events, which each call's ``Call.note`` hands to its ``CallFigures``
(``observe``: the call's own key figures for ``/calls`` and the console, and the process-wide
counters and histograms); from the frame counts the gateway already keeps in plain ints per
call, which ``FrameCollector`` reads at scrape time (nothing is added per frame); from
ignored input (``IgnoredInput.add``); and from ``shard_restarted`` (production mode).
Histograms are in seconds (Prometheus convention); timeline figures are ms.

Each metric and what it means: docs/console.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from .gateway.ignored import KINDS as IGNORED_KINDS
from .outbound import ANSWERED_BY

disable_created_metrics()  # no *_created series: they double the output for no use here

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OUTCOMES = ("agent_hangup", "caller_hangup", "failed", "refused", "disconnected")
OUTBOUND_OUTCOMES = ("placed", "refused_busy", "refused_rate", "twilio_error")
LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0)
TOOL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
MAX_TOOL_LABELS = 64
"""Distinct tool names a process labels ``callbridge_tool_calls`` with (a model may make up names)."""
FAST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def outcome(reason: str) -> str:
    """A call's stop reason -> one of ``OUTCOMES`` (a bounded label set)."""
    if reason == "the agent ended the call":
        return "agent_hangup"
    if reason == "twilio stop":
        return "caller_hangup"
    if " failed " in reason:
        return "failed"
    if reason.startswith("closed 10"):
        return "refused"
    return "disconnected"


LiveFrames = Callable[[], Iterable[tuple[int, int]]]
"""Returns (frames_in, frames_out) of each live call."""


class FrameCollector(Collector):
    """Frames in/out and active calls, read at scrape time: ended calls' folded totals
    plus the live calls' own counters."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Any]:
        m = self.metrics
        live = list(m.live_frames())
        frames_in = m.ended_frames_in + sum(f[0] for f in live)
        frames_out = m.ended_frames_out + sum(f[1] for f in live)
        yield GaugeMetricFamily("callbridge_calls_active", "Calls with a live media stream.", value=len(live))
        yield CounterMetricFamily(
            "callbridge_frames_in", "20 ms media frames received from callers.", value=frames_in
        )
        yield CounterMetricFamily(
            "callbridge_frames_out", "20 ms media frames of agent audio sent to callers.", value=frames_out
        )


class Metrics:
    def __init__(self, live_frames: LiveFrames = lambda: (), children: Iterable[str] = ()) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.live_frames = live_frames
        self.ended_frames_in = 0
        self.ended_frames_out = 0
        self.calls = Counter("callbridge_calls", "Calls ended, by outcome.", ["outcome"], registry=r)
        for name in OUTCOMES:
            self.calls.labels(name)
        self.concealed = Counter(
            "callbridge_frames_concealed",
            "Inbound frames concealed (timestamp gaps: loss before Twilio).",
            registry=r,
        )
        self.stale = Counter(
            "callbridge_frames_stale", "Inbound frames dropped as stale (> 2 s late).", registry=r
        )
        self.barge_ins = Counter("callbridge_barge_ins", "Caller barge-ins that cut the agent.", registry=r)
        self.child_restarts = Counter(
            "callbridge_child_restarts", "Call actors restarted by their supervisor.", ["child"], registry=r
        )
        for child in children:
            self.child_restarts.labels(child)
        self.shard_restarts = Counter(
            "callbridge_shard_restarts",
            "Shard processes restarted (production mode; 0 in dev mode).",
            registry=r,
        )
        self.ignored_input = Counter(
            "callbridge_ignored_input",
            "Media Streams input ignored (gateway/ignored.py), by kind.",
            ["kind"],
            registry=r,
        )
        for kind in IGNORED_KINDS:
            self.ignored_input.labels(kind)
        self.transfers = Counter(
            "callbridge_transfers",
            "Transfers of calls to a human, by mode (cold, warm) and outcome (dialing, holding, "
            "answered, completed, no-answer, busy, failed, canceled, timeout, other).",
            ["mode", "outcome"],
            registry=r,
        )
        self.dtmf_sent = Counter(
            "callbridge_dtmf_sent", "DTMF sequences played on calls (send_dtmf).", registry=r
        )
        self.upstream_reconnects = Counter(
            "callbridge_upstream_reconnects", "Reconnections of a remote voice-AI back end.", registry=r
        )
        self.outbound = Counter(
            "callbridge_outbound_calls",
            "Outbound call requests (POST /calls), by outcome: placed, refused_busy, refused_rate, twilio_error.",
            ["outcome"],
            registry=r,
        )
        for name in OUTBOUND_OUTCOMES:
            self.outbound.labels(name)
        self.answered_by = Counter(
            "callbridge_answered_by",
            "Outbound calls by who answered, as Twilio's answering-machine detection reports it.",
            ["answered_by"],
            registry=r,
        )
        for name in ANSWERED_BY:
            self.answered_by.labels(name)
        self.voice_to_voice = Histogram(
            "callbridge_voice_to_voice_seconds",
            "Caller's last speech frame -> agent's first frame sent, per answered turn.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.stt = Histogram(
            "callbridge_stt_finalisation_seconds",
            "End of turn detected -> final transcript.",
            buckets=FAST_BUCKETS,
            registry=r,
        )
        self.agent_first_token = Histogram(
            "callbridge_agent_first_token_seconds",
            "Final transcript -> the agent's first text.",
            buckets=FAST_BUCKETS,
            registry=r,
        )
        self.tts_first_audio = Histogram(
            "callbridge_tts_first_audio_seconds",
            "The agent's first text -> its first audio frame sent.",
            buckets=FAST_BUCKETS,
            registry=r,
        )
        self.barge_in_detection = Histogram(
            "callbridge_barge_in_detection_seconds",
            "Caller speech onset -> agent cut (barge-in detected).",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tool_calls = Counter(
            "callbridge_tool_calls",
            "Tool calls by agents, by tool name (the first MAX_TOOL_LABELS names; then 'other') and outcome.",
            ["name", "ok"],
            registry=r,
        )
        self.tool_duration = Histogram(
            "callbridge_tool_call_seconds",
            "A tool call's run time (checked, run, result bounded), as noted in tool.called.",
            buckets=TOOL_BUCKETS,
            registry=r,
        )
        self._tool_names: set[str] = set()
        self.recordings_bytes = Gauge(
            "callbridge_recordings_bytes",
            "RECORDING=local: bytes of recordings in RECORDINGS_DIR (as of this process's last sweep).",
            registry=r,
        )
        self.recordings_removed = Counter(
            "callbridge_recordings_removed",
            "RECORDING=local: recordings removed, by reason (cap: RECORDINGS_MAX_MB, retention, stale).",
            ["reason"],
            registry=r,
        )
        for reason in ("cap", "retention", "stale"):
            self.recordings_removed.labels(reason)
        self.recordings_ready = Counter(
            "callbridge_recordings_ready",
            "Call recordings completed, by RECORDING mode.",
            ["mode"],
            registry=r,
        )
        for mode in ("local", "twilio"):
            self.recordings_ready.labels(mode)
        r.register(FrameCollector(self))

    def render(self) -> bytes:
        """The Prometheus text exposition of this process's metrics."""
        return generate_latest(self.registry)

    def shard_restarted(self) -> None:
        self.shard_restarts.inc()

    def shard_restarts_seen(self, total: int) -> None:
        """Production mode: the pool's count of shard restarts, mirrored in every shard
        (whichever shard is scraped reports the deployment's count)."""
        delta = total - self.shard_restarts._value.get()
        if delta > 0:
            self.shard_restarts.inc(delta)

    def tool_called(self, name: str, ok: bool, duration_ms: Any) -> None:
        """One ``tool.called``: the label set stays bounded whatever names a model makes up."""
        if name not in self._tool_names:
            if len(self._tool_names) >= MAX_TOOL_LABELS:
                name = "other"
            else:
                self._tool_names.add(name)
        self.tool_calls.labels(name, "true" if ok else "false").inc()
        _observe(self.tool_duration, duration_ms)

    def call_ended(self, reason: str, frames_in: int, frames_out: int) -> None:
        self.calls.labels(outcome(reason)).inc()
        self.ended_frames_in += frames_in
        self.ended_frames_out += frames_out


def _s(ms: Any) -> float | None:
    return ms / 1000.0 if isinstance(ms, (int, float)) and ms >= 0 else None


@dataclass
class CallFigures:
    """One call's key figures, kept from its timeline events; also feeds ``Metrics``.

    ``observe`` runs once per timeline event (not per frame): a dict look-up and, for the
    few events that carry figures, a histogram observation or two (~1-3 us)."""

    metrics: Metrics | None = None
    turns: int = 0
    barge_ins: int = 0
    restarts: int = 0
    last_turn: dict[str, Any] = field(default_factory=dict)
    jitter: dict[str, Any] = field(default_factory=dict)
    concealed: int = 0
    stale: int = 0
    tool_calls: int = 0

    def observe(self, event: str, data: dict[str, Any]) -> None:
        handler = _HANDLERS.get(event)
        if handler is not None:
            handler(self, data, self.metrics)

    def to_json(self) -> dict[str, Any]:
        return {
            "turns": self.turns,
            "barge_ins": self.barge_ins,
            "restarts": self.restarts,
            "voice_to_voice_ms": self.last_turn.get("voice_to_voice_ms"),
            "jitter_ms": self.jitter.get("jitter_ms"),
            "loss_pct": self.jitter.get("loss_pct"),
            "concealed": self.concealed,
        }


def _observe(histogram: Histogram | None, ms: Any) -> None:
    seconds = _s(ms)
    if histogram is not None and seconds is not None:
        histogram.observe(seconds)


def _turn(f: CallFigures, d: dict[str, Any], m: Metrics | None) -> None:
    f.turns += 1
    f.last_turn = d
    if m is not None:
        _observe(m.voice_to_voice, d.get("voice_to_voice_ms"))
        _observe(m.agent_first_token, d.get("agent_ms"))
        _observe(m.tts_first_audio, d.get("tts_ms"))


def _final(f: CallFigures, d: dict[str, Any], m: Metrics | None) -> None:
    if m is not None:
        _observe(m.stt, d.get("stt_ms"))


def _barge_in(f: CallFigures, d: dict[str, Any], m: Metrics | None) -> None:
    f.barge_ins += 1
    if m is not None:
        m.barge_ins.inc()
        _observe(m.barge_in_detection, d.get("detection_ms"))


def _restart(f: CallFigures, d: dict[str, Any], m: Metrics | None) -> None:
    f.restarts += 1
    if m is not None:
        m.child_restarts.labels(str(d.get("child", "?"))).inc()


def _reconnect(f: CallFigures, d: dict[str, Any], m: Metrics | None) -> None:
    if m is not None:
        m.upstream_reconnects.inc()


def _tool(f: CallFigures, d: dict[str, Any], m: Metrics | None) -> None:
    f.tool_calls += 1
    if m is not None:
        m.tool_called(str(d.get("name", "?"))[:64], d.get("ok") is True, d.get("duration_ms"))


def _jitter(f: CallFigures, d: dict[str, Any], m: Metrics | None) -> None:
    """``jitter_stats`` carries the call's running totals: count what is new."""
    f.jitter = d
    concealed, stale = int(d.get("concealed_frames") or 0), int(d.get("stale") or 0)
    if m is not None:
        if concealed > f.concealed:
            m.concealed.inc(concealed - f.concealed)
        if stale > f.stale:
            m.stale.inc(stale - f.stale)
    f.concealed, f.stale = max(f.concealed, concealed), max(f.stale, stale)


_HANDLERS: dict[str, Callable[[CallFigures, dict[str, Any], Metrics | None], None]] = {
    "turn": _turn,
    "transcript.final": _final,
    "barge_in": _barge_in,
    "child_restarted": _restart,
    "upstream_reconnected": _reconnect,
    "upstream.retry": _reconnect,  # a remote back end reconnects after the pause it notes
    "jitter_stats": _jitter,
    "tool.called": _tool,
}
