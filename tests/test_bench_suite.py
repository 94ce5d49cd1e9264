"""The benchmark suite's machinery (``run.py bench``, ``bench/suite.py``): real subprocesses,
a fast real benchmark and small fake bench scripts; bounded (< 60 s together)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bench.suite import Bench, markdown, run_suite

ROOT = Path(__file__).resolve().parent.parent

FAKE = """
import argparse, json, sys, time
p = argparse.ArgumentParser()
p.add_argument("--echo", type=float, default=1.0)
p.add_argument("--sleep", type=float, default=0.0)
p.add_argument("--json")
a = p.parse_args()
time.sleep(a.sleep)
steps = [{"calls": n, "echo_p50_ms": a.echo * n, "echo_p99_ms": 2 * a.echo * n, "gap_p99_ms": 21.0, "lost": 0}
         for n in (1, 50)]
json.dump({"knee": 50, "steps": steps, "note": "text is left out", "raw": [1, 2]}, open(a.json, "w"))
"""


@pytest.mark.slow
def test_bench_command_runs_a_benchmark_and_writes_the_results(tmp_path):
    md, js = tmp_path / "results.md", tmp_path / "results.json"
    proc = subprocess.run(
        [
            sys.executable,
            "run.py",
            "bench",
            "--quick",
            "--only",
            "metrics",
            "--out",
            str(md),
            "--json",
            str(js),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads(js.read_text())
    machine = report["machine"]
    assert machine["cores"] >= 1 and machine["ram_gb"] > 0 and machine["kernel"] and machine["python"]
    for package in ("numpy", "aiohttp", "thespian"):
        assert machine["packages"][package], package
    assert re.fullmatch(r"[0-9a-f]{40}", report["git"]["commit"])
    assert report["quick"] is True and report["date"].startswith("20")
    metrics = report["benchmarks"]["metrics"]
    assert metrics["status"] == "ok" and len(metrics["runs"]) == 3 and len(metrics["wall_s"]) == 3
    fig = metrics["figures"]["added_per_frame_ns"]
    assert fig["n"] == 3 and fig["min"] <= fig["q1"] <= fig["median"] <= fig["q3"] <= fig["max"]
    assert list(report["benchmarks"]) == ["metrics"]
    text = md.read_text()
    for heading in (
        "# callbridge benchmark results",
        "## Summary",
        "## Side by side",
        "### metrics",
        "## Machine and versions",
    ):
        assert heading in text, heading
    assert "| observability added per frame | ns |" in text
    assert text.strip() in proc.stdout  # the table is printed at the end
    again = tmp_path / "again.md"
    subprocess.run(
        [sys.executable, "run.py", "bench", "--render", str(js), "--out", str(again)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=30,
    )
    assert again.read_text() == text


def test_bench_command_refuses_unknown_names(tmp_path):
    proc = subprocess.run(
        [sys.executable, "run.py", "bench", "--only", "codec,nope"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2
    assert "unknown benchmark(s) nope" in proc.stderr


@pytest.mark.slow
def test_suite_reports_missing_failing_and_compares_side_by_side(tmp_path):
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "fake.py").write_text(textwrap.dedent(FAKE))
    (tmp_path / "bench" / "broken.py").write_text("import sys; print('boom'); sys.exit(3)\n")
    (tmp_path / "bench" / "silent.py").write_text("print('no --json here')\n")
    benches = [
        Bench("floor", "bench/fake.py", ("--echo", "2"), (), 2, 1, 30, "the floor"),
        Bench("load-dev", "bench/fake.py", ("--echo", "10"), (), 1, 1, 30, "the bridge"),
        Bench("soak", "bench/soak.py", (), (), 1, 1, 30, "not written yet"),
        Bench("broken", "bench/broken.py", (), (), 3, 1, 30, "fails"),
        Bench("silent", "bench/silent.py", (), (), 1, 1, 30, "writes nothing"),
        Bench("slow", "bench/fake.py", ("--sleep", "30"), (), 1, 1, 2, "times out"),
    ]
    lines: list[str] = []
    report = run_suite(benches, quick=True, root=tmp_path, log=lines.append)
    b = report["benchmarks"]
    assert b["floor"]["status"] == "ok" and len(b["floor"]["runs"]) == 2
    assert b["floor"]["figures"]["steps.50.echo_p50_ms"]["median"] == 100.0
    assert "note" not in b["floor"]["figures"] and "raw" not in b["floor"]["figures"]
    assert b["soak"]["status"] == "not available"
    assert b["broken"]["status"] == "failed: exit status 3" and "boom" in b["broken"]["output_tail"]
    assert len(b["broken"]["wall_s"]) == 1  # a failure is not repeated
    assert b["silent"]["status"].startswith("failed: no JSON output")
    assert b["slow"]["status"] == "failed: timed out after 2 s" and b["slow"]["wall_s"][0] < 20
    echo = {c["calls"]: c for c in report["comparisons"] if c.get("mode") == "dev"}
    assert echo[50]["p50"]["ratio"] == 5.0 and echo[1]["p99"]["added_ms"] == 16.0
    text = markdown(report)
    assert "| soak | `bench/soak.py` | not available | 0 | – |" in text
    assert "failed: exit status 3" in text
    assert "| dev | 50 | 500.0 | 100.0 | 400.0 | 5.0 | 1000.0 | 200.0 | 800.0 | 5.0 |" in text
    assert "| 50 | – | 21.0 | – | 0 | 100.0 | 200.0 |" in text  # the step table, medians
    assert any("not available" in line for line in lines)
