"""The benchmark suite: every benchmark in one go, one results table, one JSON file.

    python run.py bench --quick                  # < 10 min on a 2-core machine
    python run.py bench                          # the full run (long: repeats, ramps to 500 calls)
    python run.py bench --only codec,floor,load-dev --out /tmp/r.md --json /tmp/r.json
    python run.py bench --render bench/results.json   # rewrite bench/results.md, run nothing

Each benchmark is its script in ``bench/`` run as a subprocess (``python bench/X.py ...
--json FILE``), from the repository root, one at a time; the suite reads the JSON file
it wrote. A script that does not exist is reported as "not available"; one that fails,
times out or writes no JSON is reported as such (with the tail of its output in the
JSON) and the suite goes on. Cheap benchmarks run several times; each figure is given as
its median and spread (min-max, and the interquartile range in the JSON) over the runs.

Comparisons are made side by side in the same suite run, as ratios: the codec path
against audioop + soxr and pipecat-ai's Twilio serializer (each codec run measures all
three), and the bridge's echo latency (``bench/load.py``, echo upstream, dev and prod
mode) against the floor, a plain asyncio pass-through driven by the same driver at the
same call counts (``bench/floor.py``).

Writes ``--out`` (Markdown: a summary table, then a table per benchmark, then the
machine) and ``--json`` (machine, package versions, git commit, date, and per benchmark
its status, runs, wall time, figures and each run's own JSON), and prints the Markdown.
Limits: one suite at a time per machine (the load benchmarks need the cores to
themselves); each run is bounded by its benchmark's timeout (interrupted, then killed).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

Figures = dict[str, float]


# -- what runs --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bench:
    """One benchmark script and how the suite runs it."""

    name: str
    script: str  # relative to the repository root
    quick: tuple[str, ...]  # arguments in --quick (before --json FILE)
    full: tuple[str, ...]
    repeats_quick: int
    repeats_full: int
    timeout_s: float  # per run, quick; the full run gets 6x
    about: str
    full_only: bool = False


LOAD_QUICK = ("--quick", "--calls", "1,50,150")
LOAD_FULL = ("--calls", "1,50,100,150,200,300,350,400,500")

BENCHES: tuple[Bench, ...] = (
    Bench(
        "codec",
        "bench/codec.py",
        ("--quick",),
        (),
        3,
        3,
        120,
        "µs of CPU per 20 ms frame, in (JSON + base64 + mu-law decode + 8→16 kHz) and out (reverse), "
        "callbridge vs audioop + soxr HQ + orjson vs pipecat-ai's TwilioFrameSerializer; ×: time relative "
        "to callbridge (higher is slower)",
    ),
    Bench(
        "turns",
        "bench/turns.py",
        ("--quick",),
        (),
        3,
        3,
        300,
        "voice-to-voice latency of a turn with the embedded agent (caller stops speaking → first agent "
        "frame sent) and false cut-offs of requests with a pause, turns ending on meaning vs on silence "
        "alone, side by side; the recogniser's word error rate, gateway CPU per active call",
    ),
    Bench(
        "barge-in",
        "bench/barge_in.py",
        ("--quick",),
        (),
        1,
        3,
        600,
        "caller speech onset → `clear` received while the agent talks; missed, stale frames after "
        "`clear`, false barge-ins on noise/echo calls and quick answers; backchannel false stops "
        "with BACKCHANNEL_MS off and at 600 ms, side by side",
    ),
    Bench(
        "jitter",
        "bench/jitter.py",
        ("--quick",),
        (),
        3,
        3,
        180,
        "jitter buffer on simulated mobile lines: added latency vs the line's own jitter (ratio, target "
        "≤ 1.2), concealed frames, CPU per frame, STT word error rate per profile",
    ),
    Bench(
        "hotpath",
        "bench/hotpath.py",
        ("--seconds", "4"),
        (),
        3,
        3,
        60,
        "µs of CPU per frame (one in, one out) of the call path in-process: 150 echo calls in one loop, "
        "no sockets",
    ),
    Bench(
        "floor",
        "bench/floor.py",
        LOAD_QUICK,
        LOAD_FULL,
        1,
        3,
        240,
        "the floor: a plain asyncio/aiohttp pass-through (parse JSON, echo the payload) driven by the "
        "same load driver at the same call counts as the bridge",
    ),
    Bench(
        "load-dev",
        "bench/load.py",
        ("--mode", "dev", *LOAD_QUICK),
        ("--mode", "dev", *LOAD_FULL),
        1,
        3,
        300,
        "dev mode (one process), echo upstream (the caller's audio straight back: the bridge's own cost)",
    ),
    Bench(
        "load-prod",
        "bench/load.py",
        ("--mode", "prod", *LOAD_QUICK),
        ("--mode", "prod", *LOAD_FULL),
        1,
        3,
        360,
        "prod mode (2 shard processes + pool), echo upstream; then SIGKILL the shard carrying a call: "
        "silence until the agent's audio resumes",
    ),
    Bench(
        "load-embedded",
        "bench/load.py",
        (),
        ("--mode", "prod", "--upstream", "embedded"),
        1,
        1,
        600,
        "prod mode with the embedded voice agent (a request every 8 s per call); gaps within the agent's "
        "speech",
        full_only=True,
    ),
    Bench("soak", "bench/soak.py", ("--quick",), (), 1, 1, 300, "soak summary (bench/soak.py)"),
    Bench(
        "upstream", "bench/upstream.py", ("--quick",), (), 1, 1, 300, "remote back ends (bench/upstream.py)"
    ),
    Bench(
        "transfer",
        "bench/transfer.py",
        ("--quick",),
        (),
        1,
        3,
        120,
        "an agent's transfer (and DTMF) decision -> Twilio's REST request, ms (bench/transfer.py)",
    ),
    Bench(
        "speech",
        "bench/speech.py",
        ("--only", "stt,tts", "--quick"),
        (),
        1,
        1,
        300,
        "the neural recogniser and voice against pocketsphinx and espeak-ng: WER, latency, capacity "
        "(bench/speech.py)",
    ),
    Bench(
        "metrics",
        "bench/metrics.py",
        ("--quick",),
        (),
        3,
        3,
        60,
        "ns per operation of the observability on the hot path, vs a prometheus Counter.inc() per frame",
    ),
    Bench(
        "tools",
        "bench/tools.py",
        ("--quick",),
        (),
        3,
        3,
        60,
        "µs per tool call: the handler alone vs run_tool and the CallAction round trip through the real actors",
    ),
)


# -- running one script ---------------------------------------------------------------------


def run_once(bench: Bench, args: tuple[str, ...], timeout_s: float, root: Path = ROOT) -> dict[str, Any]:
    """One subprocess run: {"ok", "wall_s", "data" (its JSON) | "error", "output_tail"}."""
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        out = Path(tmp) / "out.json"
        cmd = [sys.executable, str(root / bench.script), *args, "--json", str(out)]
        t0 = time.monotonic()
        proc = subprocess.Popen(
            cmd,
            cwd=root,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            preexec_fn=_default_sigint,  # noqa: PLW1509 - the driver starts no threads
        )
        try:
            output, _ = proc.communicate(timeout=timeout_s)
            error = None if proc.returncode == 0 else f"exit status {proc.returncode}"
        except subprocess.TimeoutExpired:
            output, error = _interrupt(proc), f"timed out after {timeout_s:.0f} s"
        except KeyboardInterrupt:  # the run is in its own session: pass the ^C on, then stop
            _interrupt(proc)
            raise
        wall = time.monotonic() - t0
        result: dict[str, Any] = {"wall_s": round(wall, 2), "output_tail": (output or "")[-3000:]}
        if error is None:
            try:
                result["data"] = json.loads(out.read_text())
            except (OSError, ValueError) as exc:
                error = f"no JSON output ({type(exc).__name__}: {exc})"
        result["ok"] = error is None
        if error:
            result["error"] = error
        return result


def _default_sigint() -> None:
    """A shell's background job inherits SIGINT ignored, and Python then never raises
    KeyboardInterrupt: the script gets the default action back so ``_interrupt`` works."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _interrupt(proc: subprocess.Popen[str]) -> str:
    """SIGINT first so the script's ``finally`` blocks reap the servers it started."""
    os.killpg(proc.pid, signal.SIGINT)
    try:
        output, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
    return output


# -- figures ----------------------------------------------------------------------------------


def flatten(data: Any, prefix: str = "") -> Figures:
    """Numeric leaves as dotted keys; a list of dicts with ``calls`` is keyed by the call
    count (load steps), other lists are left out (the raw runs keep them)."""
    out: Figures = {}
    if isinstance(data, bool):
        return out
    if isinstance(data, (int, float)):
        out[prefix] = float(data)
    elif isinstance(data, dict):
        for k, v in data.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(data, list) and data and all(isinstance(x, dict) and "calls" in x for x in data):
        for x in data:
            out.update(flatten({k: v for k, v in x.items() if k != "calls"}, f"{prefix}.{x['calls']}"))
    return out


def _pct(values: list[float], q: float) -> float:
    """The ``q``th percentile of ``values`` (not empty), interpolated."""
    s = sorted(values)
    pos = (len(s) - 1) * q / 100
    lo, hi = int(pos), min(int(pos) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def derive_codec(data: dict[str, Any]) -> Figures:
    per = data.get("us_per_frame", {})
    base = per.get("callbridge")
    out: Figures = {}
    if base:
        for name, t in per.items():
            for part in ("in", "out", "total"):
                out[f"x.{name}.{part}"] = t[part] / base[part]
    return out


def derive_barge_in(data: dict[str, Any]) -> Figures:
    lat = data.get("latency_ms") or []
    return {f"latency_p{q}_ms": _pct(lat, q) for q in (50, 95)} | {"latency_max_ms": max(lat)} if lat else {}


def derive_load(data: dict[str, Any]) -> Figures:
    s = data.get("kill_silence_ms") or []
    return {"kill_silence_median_ms": statistics.median(s), "kill_silence_max_ms": max(s)} if s else {}


DERIVE: dict[str, Callable[[dict[str, Any]], Figures]] = {
    "codec": derive_codec,
    "barge-in": derive_barge_in,
    "load-prod": derive_load,
}


def figures_of(name: str, data: dict[str, Any]) -> Figures:
    figs = flatten(data)
    if name in DERIVE:
        figs.update({k: v for k, v in DERIVE[name](data).items() if v is not None})
    return figs


def aggregate(runs: list[Figures]) -> dict[str, dict[str, Any]]:
    """Per figure over the runs that have it: median, min, max, q1, q3, n, values."""
    keys: list[str] = []
    for r in runs:
        keys += [k for k in r if k not in keys]
    out = {}
    for k in keys:
        vals = [r[k] for r in runs if k in r and r[k] == r[k]]  # NaN left out
        if vals:
            out[k] = {
                "median": statistics.median(vals),
                "min": min(vals),
                "max": max(vals),
                "q1": _pct(vals, 25),
                "q3": _pct(vals, 75),
                "n": len(vals),
                "values": vals,
            }
    return out


# -- the suite --------------------------------------------------------------------------------


def run_bench(
    bench: Bench, quick: bool, root: Path = ROOT, log: Callable[[str], None] = print
) -> dict[str, Any]:
    entry: dict[str, Any] = {"script": bench.script, "about": bench.about}
    if not (root / bench.script).is_file():
        entry["status"] = "not available"
        log(f"[{bench.name}] not available ({bench.script} does not exist)")
        return entry
    args = bench.quick if quick else bench.full
    repeats = bench.repeats_quick if quick else bench.repeats_full
    timeout = bench.timeout_s if quick else bench.timeout_s * 6
    entry.update(args=list(args), runs=[], wall_s=[])
    figs = []
    for i in range(repeats):
        log(f"[{bench.name}] run {i + 1}/{repeats}: python {bench.script} {' '.join(args)}")
        r = run_once(bench, args, timeout, root)
        entry["wall_s"].append(r["wall_s"])
        if not r["ok"]:
            entry.update(status=f"failed: {r['error']}", output_tail=r["output_tail"])
            log(f"[{bench.name}] {entry['status']} after {r['wall_s']:.0f} s\n{r['output_tail'][-1500:]}")
            break
        entry["runs"].append(r["data"])
        figs.append(figures_of(bench.name, r["data"]))
        log(f"[{bench.name}] done in {r['wall_s']:.0f} s")
    else:
        entry["status"] = "ok"
    entry["figures"] = aggregate(figs)
    return entry


def comparisons(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Side-by-side ratios from this run: codec (within each codec run), and the bridge's
    echo latency over the floor's at each call count both were driven at."""
    rows = []
    codec = results.get("codec", {}).get("figures", {})
    for other, label in (
        ("soxr", "audioop + soxr HQ + orjson"),
        ("pipecat", "pipecat-ai TwilioFrameSerializer"),
    ):
        fig = codec.get(f"x.{other}.total")
        if fig:
            rows.append(
                {
                    "what": f"codec in+out: {label} ÷ callbridge",
                    "ratio": fig["median"],
                    "min": fig["min"],
                    "max": fig["max"],
                    "n": fig["n"],
                }
            )
    floor = results.get("floor", {}).get("figures", {})
    for mode in ("load-dev", "load-prod"):
        bridge = results.get(mode, {}).get("figures", {})
        for calls in sorted(
            {int(k.split(".")[1]) for k in bridge if re.fullmatch(r"steps\.\d+\.echo_p50_ms", k)}
        ):
            row: dict[str, Any] = {"mode": mode[5:], "calls": calls}
            for q in ("p50", "p99"):
                b, f = bridge.get(f"steps.{calls}.echo_{q}_ms"), floor.get(f"steps.{calls}.echo_{q}_ms")
                if b and f and f["median"] > 0:
                    row[q] = {
                        "bridge_ms": b["median"],
                        "floor_ms": f["median"],
                        "added_ms": b["median"] - f["median"],
                        "ratio": b["median"] / f["median"],
                    }
            if "p50" in row:
                rows.append(row)
    return rows


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpu_model": platform.processor() or "",
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "kernel": platform.release(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_avg_start": list(os.getloadavg()),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
        mem = Path("/proc/meminfo").read_text().split("\n", 1)[0].split()
        info["ram_gb"] = round(int(mem[1]) / 1024 / 1024, 1)
    except (OSError, IndexError, ValueError):
        pass
    info["packages"] = package_versions()
    return info


def package_versions(root: Path = ROOT) -> dict[str, str | None]:
    """Versions of the requirements in setup.cfg (install, test and bench extras)."""
    names = ["callbridge"]
    text = (root / "setup.cfg").read_text() if (root / "setup.cfg").is_file() else ""
    for m in re.finditer(r"^\s+([A-Za-z0-9][A-Za-z0-9_.\-]*)\s*(?:[<>=!~;]|$)", text, re.M):
        if m.group(1) not in names and m.group(1) not in ("callbridge",):
            names.append(m.group(1))
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_info(root: Path = ROOT) -> dict[str, Any]:
    def git(*a: str) -> str:
        try:
            return subprocess.run(
                ["git", *a], cwd=root, capture_output=True, text=True, timeout=10, check=False
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {
        "commit": git("rev-parse", "HEAD"),
        "branch": git("rev-parse", "--abbrev-ref", "HEAD"),
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
    }


def run_suite(
    benches: list[Bench], quick: bool, root: Path = ROOT, log: Callable[[str], None] = print
) -> dict[str, Any]:
    t0 = time.monotonic()
    report: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "quick": quick,
        "machine": machine(),
        "git": git_info(root),
        "benchmarks": {},
    }
    for bench in benches:
        report["benchmarks"][bench.name] = run_bench(bench, quick, root, log)
    report["comparisons"] = comparisons(report["benchmarks"])
    report["machine"]["load_avg_end"] = list(os.getloadavg())
    report["wall_s"] = round(time.monotonic() - t0, 1)
    return report


# -- the Markdown -----------------------------------------------------------------------------


def cell(fig: dict[str, Any] | None, digits: int = 1) -> str:
    """``median`` or ``median (min–max)`` when the runs differ."""
    if not fig:
        return "–"
    m = f"{fig['median']:.{digits}f}"
    if fig["n"] > 1 and fig["min"] != fig["max"]:
        return f"{m} ({fig['min']:.{digits}f}–{fig['max']:.{digits}f})"
    return m


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + [
        "| " + " | ".join(r) + " |" for r in rows
    ]


def md_codec(f: dict[str, Any]) -> list[str]:
    order = ["callbridge", "soxr", "pipecat"]
    names = sorted(
        {k.split(".")[1] for k in f if k.startswith("us_per_frame.")},
        key=lambda n: (order.index(n) if n in order else len(order), n),
    )
    labels = {
        "callbridge": "callbridge (numpy G.711 + polyphase FIR)",
        "soxr": "audioop + soxr HQ + orjson",
        "pipecat": "pipecat-ai TwilioFrameSerializer",
    }
    return table(
        ["path", "in µs", "out µs", "in+out µs", "× in+out"],
        [
            [
                labels.get(n, n),
                cell(f.get(f"us_per_frame.{n}.in"), 2),
                cell(f.get(f"us_per_frame.{n}.out"), 2),
                cell(f.get(f"us_per_frame.{n}.total"), 2),
                cell(f.get(f"x.{n}.total"), 2),
            ]
            for n in names
        ],
    )


def md_steps(f: dict[str, Any]) -> list[str]:
    calls = sorted({int(k.split(".")[1]) for k in f if k.startswith("steps.")})
    cols = [
        ("gap_p50_ms", "gap p50 ms", 1),
        ("gap_p99_ms", "gap p99 ms", 1),
        ("gap_max_ms", "gap max ms", 0),
        ("lost", "lost", 0),
        ("echo_p50_ms", "echo p50 ms", 1),
        ("echo_p99_ms", "echo p99 ms", 1),
        ("server_cpu_pct", "server CPU %", 0),
        ("mb_per_call", "MB/call", 2),
    ]
    lines = table(
        ["calls"] + [c[1] for c in cols],
        [[str(n)] + [cell(f.get(f"steps.{n}.{k}"), d) for k, _, d in cols] for n in calls],
    )
    extra = [f"knee (largest step with p99 gap ≤ 40 ms, no loss): {cell(f.get('knee'), 0)} calls"]
    if "kill_silence_median_ms" in f:
        extra.append(
            f"shard SIGKILL → agent audio again: median {cell(f['kill_silence_median_ms'], 0)} ms, "
            f"max {cell(f.get('kill_silence_max_ms'), 0)} ms"
        )
    return [*lines, "", *extra]


def md_generic(f: dict[str, Any]) -> list[str]:
    return table(["figure", "median (min–max)", "runs"], [[k, cell(v, 2), str(v["n"])] for k, v in f.items()])


def md_jitter(f: dict[str, Any]) -> list[str]:
    profiles = sorted(
        {k.split(".")[1] for k in f if k.startswith("profiles.")},
        key=lambda p: ["clean", "moderate", "heavy"].index(p) if p in ("clean", "moderate", "heavy") else 9,
    )
    cols = [
        ("line_p95_ms", "line p95 ms", 0),
        ("added_p50_ms", "added p50 ms", 0),
        ("added_p95_ms", "added p95 ms", 0),
        ("ratio", "ratio", 2),
        ("concealed_pct", "concealed %", 1),
        ("us_per_frame", "µs/frame", 1),
        ("wer_pct", "STT WER %", 1),
    ]
    return table(
        ["profile"] + [c[1] for c in cols],
        [[p] + [cell(f.get(f"profiles.{p}.{k}"), d) for k, _, d in cols] for p in profiles],
    )


def md_turns(f: dict[str, Any]) -> list[str]:
    return table(
        [
            "turns end on",
            "v2v p50 ms",
            "v2v p95 ms",
            "endpoint p50 ms",
            "false cut-offs",
            "WER %",
            "CPU %/call",
        ],
        [
            [
                mode,
                cell(f.get(f"{mode}.p50.voice_to_voice_ms"), 0),
                cell(f.get(f"{mode}.p95.voice_to_voice_ms"), 0),
                cell(f.get(f"{mode}.p50.endpoint_ms"), 0),
                f"{cell(f.get(f'{mode}.false_cutoff_pct'), 0)}%",
                cell(f.get(f"{mode}.wer_pct")),
                cell(f.get(f"{mode}.cpu_pct_per_call")),
            ]
            for mode in ("silence", "meaning")
        ],
    )


def md_barge_in(f: dict[str, Any]) -> list[str]:
    rows = [
        [
            mode,
            cell(f.get(f"{prefix}latency_p50_ms"), 0),
            cell(f.get(f"{prefix}latency_p95_ms"), 0),
            cell(f.get(f"{prefix}latency_max_ms"), 0),
            f"{cell(f.get(f'{prefix}missed'), 0)}/{cell(f.get('trials'), 0)}",
            cell(f.get(f"{prefix}stale"), 0),
            f"{cell(f.get(f'{prefix}backchannel_false_stops'), 0)}/{cell(f.get('backchannels'), 0)}",
        ]
        for mode, prefix in (("off", ""), ("600 ms", "backchannel_on."))
    ]
    return [
        *table(
            [
                "BACKCHANNEL_MS",
                "onset → clear p50 ms",
                "p95 ms",
                "max ms",
                "missed",
                "stale frames",
                "backchannel false stops",
            ],
            rows,
        ),
        "",
        f"false barge-ins: {cell(f.get('false'), 0)}/{cell(f.get('noise_calls'), 0)} noise/echo calls, "
        f"{cell(f.get('quick_answers_cut'), 0)}/{cell(f.get('quick_answers'), 0)} quick answers",
    ]


def md_metrics(f: dict[str, Any]) -> list[str]:
    rows = [[k.removeprefix("ns."), cell(v)] for k, v in f.items() if k.startswith("ns.")]
    rows.append(["per scrape: Metrics.render(), 100 live calls", cell(f.get("render_100_calls_ns"), 0)])
    return table(["what", "ns"], rows)


def md_tools(f: dict[str, Any]) -> list[str]:
    rows = [[k.removeprefix("us_per_call."), cell(v)] for k, v in f.items() if k.startswith("us_per_call.")]
    rows.append(["the bridge's overhead (run_tool+actors - direct)", cell(f.get("overhead_us"))])
    return table(["per tool call (send_dtmf)", "µs"], rows)


RENDER: dict[str, Callable[[dict[str, Any]], list[str]]] = {
    "codec": md_codec,
    "turns": md_turns,
    "barge-in": md_barge_in,
    "jitter": md_jitter,
    "metrics": md_metrics,
    "tools": md_tools,
    "floor": md_steps,
    "load-dev": md_steps,
    "load-prod": md_steps,
    "load-embedded": md_steps,
}


def summary_rows(b: dict[str, dict[str, Any]]) -> list[list[str]]:
    def fig(name: str, key: str) -> dict[str, Any] | None:
        return b.get(name, {}).get("figures", {}).get(key)

    rows = [
        ["codec in+out, callbridge", "µs/frame", cell(fig("codec", "us_per_frame.callbridge.total"), 2)],
        ["turn voice-to-voice p50", "ms", cell(fig("turns", "meaning.p50.voice_to_voice_ms"), 0)],
        ["turn false cut-offs", "%", cell(fig("turns", "meaning.false_cutoff_pct"), 0)],
        ["turn STT word error rate", "%", cell(fig("turns", "meaning.wer_pct"))],
        ["barge-in onset → clear p95", "ms", cell(fig("barge-in", "latency_p95_ms"), 0)],
        ["jitter added p95 / line p95, heavy", "ratio", cell(fig("jitter", "profiles.heavy.ratio"), 2)],
        ["observability added per frame", "ns", cell(fig("metrics", "added_per_frame_ns"))],
        ["the bridge's overhead per tool call", "µs", cell(fig("tools", "overhead_us"))],
        [
            "transfer decision → Twilio REST request, median",
            "ms",
            cell(fig("transfer", "transfer.median_ms"), 1),
        ],
        [
            "call path in-process, in+out (150 calls, no sockets)",
            "µs/frame",
            cell(fig("hotpath", "us_per_frame"), 1),
        ],
    ]
    for name in ("floor", "load-dev", "load-prod", "load-embedded"):
        if name in b and b[name].get("figures"):
            rows.append([f"{name} knee (of the steps run)", "calls", cell(fig(name, "knee"), 0)])
    top = max(
        (int(k.split(".")[1]) for k in b.get("load-prod", {}).get("figures", {}) if k.startswith("steps.")),
        default=None,
    )
    if top:
        rows.append(
            [
                f"load-prod server CPU at {top} calls",
                "% of one core",
                cell(fig("load-prod", f"steps.{top}.server_cpu_pct"), 0),
            ]
        )
        rows.append(
            [
                f"load-prod memory per call at {top} calls",
                "MB",
                cell(fig("load-prod", f"steps.{top}.mb_per_call"), 2),
            ]
        )
    rows.append(
        ["shard kill → audio again (median)", "ms", cell(fig("load-prod", "kill_silence_median_ms"), 0)]
    )
    for c in comparisons(b):
        if c.get("mode") == "prod" and "p50" in c:
            e = c["p50"]
            n = c["calls"]
            rows.append(
                [
                    f"echo latency p50, {n} call{'s' if n != 1 else ''}: prod vs the floor",
                    "ms",
                    f"{e['bridge_ms']:.1f} vs {e['floor_ms']:.1f} (×{e['ratio']:.1f})",
                ]
            )
    return [r for r in rows if r[2] != "–"]


def _echo_cells(c: dict[str, float] | None) -> list[str]:
    if not c:
        return ["–"] * 4
    return [f"{c['bridge_ms']:.1f}", f"{c['floor_ms']:.1f}", f"{c['added_ms']:.1f}", f"{c['ratio']:.1f}"]


def markdown(report: dict[str, Any]) -> str:
    m, g, b = report["machine"], report["git"], report["benchmarks"]
    kind = "quick" if report["quick"] else "full"
    out = [
        "# callbridge benchmark results",
        "",
        f"`python run.py bench{' --quick' if report['quick'] else ''}` ({kind} run) on {report['date']}, commit "
        f"`{g['commit'][:12]}`{' (with local changes)' if g['dirty'] else ''}, {report['wall_s']:.0f} s wall.",
        f"Machine: {m.get('cpu_model', '?')}, {m['cores']} cores, {m.get('ram_gb', '?')} GB RAM, Linux "
        f"{m['kernel']}, Python {m['python']}; load average {m['load_avg_start'][0]:.2f} at the start, "
        f"{m['load_avg_end'][0]:.2f} at the end (other work on the machine makes absolute figures noisy: "
        "the ratios, measured side by side in this run, are what to compare).",
        "Cells: median over the runs, (min–max) when there were several and they differ.",
        "",
        "## Summary",
        "",
        *table(["figure", "unit", "value"], summary_rows(b)),
        "",
        "## Side by side (same run)",
        "",
    ]
    comp = report["comparisons"]
    codec_rows = [
        [c["what"], f"{c['ratio']:.2f}", f"{c['min']:.2f}–{c['max']:.2f}", str(c["n"])]
        for c in comp
        if "what" in c
    ]
    echo_rows = [
        [c["mode"], str(c["calls"])] + [x for q in ("p50", "p99") for x in _echo_cells(c.get(q))]
        for c in comp
        if "mode" in c
    ]
    out += (
        table(["codec", "ratio (median)", "min–max", "runs"], codec_rows)
        if codec_rows
        else ["(no codec run)"]
    )
    out += [""]
    out += (
        table(
            [
                "echo latency: bridge",
                "calls",
                "p50 ms",
                "floor p50 ms",
                "added",
                "× floor",
                "p99 ms",
                "floor p99 ms",
                "added",
                "× floor",
            ],
            echo_rows,
        )
        if echo_rows
        else ["(no floor / load run to compare)"]
    )
    out += ["", "## Benchmarks", ""]
    out += table(
        ["benchmark", "script", "status", "runs", "wall s (each)"],
        [
            [
                name,
                f"`{e['script']}`",
                e["status"],
                str(len(e.get("runs", []))),
                ", ".join(f"{w:.0f}" for w in e.get("wall_s", [])) or "–",
            ]
            for name, e in b.items()
        ],
    )
    for name, e in b.items():
        out += ["", f"### {name}", "", e["about"] + ".", ""]
        if not e.get("figures"):
            out.append(f"{e['status']}.")
            continue
        out += RENDER.get(name, md_generic)(e["figures"])
    packages = ", ".join(f"{k} {v}" for k, v in m["packages"].items() if v)
    out += ["", "## Machine and versions", "", packages, ""]
    return "\n".join(out)


# -- the command ------------------------------------------------------------------------------


def select(only: str | None, quick: bool) -> list[Bench]:
    """The benchmarks to run; ``only``: comma-separated names (unknown names are an error)."""
    if not only:
        return [b for b in BENCHES if not (quick and b.full_only)]
    names = [n.strip() for n in only.split(",") if n.strip()]
    known = {b.name: b for b in BENCHES}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return [known[n] for n in names if not (quick and known[n].full_only)]


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    p.add_argument(
        "--quick", action="store_true", help="fewer repeats and shorter runs (< 10 min on 2 cores)"
    )
    p.add_argument(
        "--out", default=str(ROOT / "bench" / "results.md"), help="Markdown results (default: %(default)s)"
    )
    p.add_argument(
        "--json", default=str(ROOT / "bench" / "results.json"), help="JSON results (default: %(default)s)"
    )
    p.add_argument("--only", help=f"comma-separated subset of: {', '.join(b.name for b in BENCHES)}")
    p.add_argument("--render", metavar="JSON", help="run nothing: rewrite --out from this results JSON")
    args = p.parse_args(argv)
    if args.render:
        Path(args.out).write_text(markdown(json.loads(Path(args.render).read_text())))
        print(f"wrote {args.out}")
        return 0
    try:
        benches = select(args.only, args.quick)
    except ValueError as exc:
        p.error(str(exc))
    report = run_suite(benches, args.quick, log=lambda line: print(line, flush=True))
    text = markdown(report)
    Path(args.out).write_text(text)
    Path(args.json).write_text(json.dumps(report, indent=1))
    print("\n" + text)
    print(f"wrote {args.out} and {args.json}; suite wall time {report['wall_s']:.0f} s")
    failed = [n for n, e in report["benchmarks"].items() if e["status"].startswith("failed")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
