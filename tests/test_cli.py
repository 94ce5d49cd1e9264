"""The front door: the README's commands, and the configuration table in docs/configuration.md."""

from __future__ import annotations

import os
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from callbridge.config import ConfigError, Settings, settings_table

ROOT = Path(__file__).resolve().parent.parent


def test_configuration_table_is_current():
    assert settings_table() in (ROOT / "docs" / "configuration.md").read_text()


def test_readme_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    setup = "python3 -m venv .venv && . .venv/bin/activate && pip install -e '.[test]'"
    suite = "python -m pytest -q"
    assert f"{setup} && {suite}" in readme
    # CI runs the same install and suite, with the code gates between them (set -e stops at the first).
    steps = ci.splitlines()
    order = [setup.replace("pip install -e", "pip install -q -e"), "ruff check .", "ruff format --check ."]
    order += ["mypy", suite]
    assert [steps.index(step) for step in order] == sorted(steps.index(step) for step in order)
    # The browser test needs Debian's chromium: CI installs it first, the README says so.
    chromium = "command -v chromium >/dev/null || (apt-get update -q && apt-get install -y -q chromium)"
    assert ci.index(chromium) < ci.index("python3 -m venv")
    assert "apt-get install chromium" in readme
    # The wss test makes its certificate with the openssl command: CI installs it if missing.
    assert ci.index(
        "command -v openssl >/dev/null || (apt-get update -q && apt-get install -y -q openssl)"
    ) < ci.index("python3 -m venv")


def test_settings_from_env_and_errors():
    s = Settings.from_env({"PORT": "9000", "TRUST_PROXY": "yes", "OUTBOUND_LEAD_MS": "100"}, port=9001)
    assert (s.server.port, s.server.trust_proxy, s.media.outbound_lead_ms) == (9001, True, 100)
    for env in (
        {"PORT": "x"},
        {"TRUST_PROXY": "maybe"},
        {"OUTBOUND_LEAD_MS": "5"},
        {"MODE": "fast"},
        {"PUBLIC_URL": "voice.example.com"},
        {"MODE": "prod"},
    ):
        try:
            Settings.from_env(env)
        except ConfigError:
            continue
        raise AssertionError(f"{env} should be refused")


@pytest.mark.slow
def test_demo_command_writes_greeting_and_timeline(tmp_path):
    proc = subprocess.run(
        [sys.executable, "run.py", "demo", "--out-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    for event in ("greeting_audio", "transcript.final", "agent.reply", "call_ending"):
        assert event in proc.stdout, event
    assert "Goodbye" in proc.stdout
    with wave.open(str(tmp_path / "agent.wav")) as w:
        assert (w.getframerate(), w.getnchannels()) == (8000, 1)
        agent = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(float)
    first_3s = agent[: 3 * 8000]
    assert np.sqrt(np.mean(first_3s**2)) > 300  # the greeting is in the recording
    with wave.open(str(tmp_path / "call.wav")) as w:
        assert w.getnchannels() == 2
    assert (tmp_path / "timeline.json").stat().st_size > 100


@pytest.mark.slow
def test_call_command_reports_refusal(tmp_path):
    proc = subprocess.run(
        [sys.executable, "run.py", "call", "--url", "http://127.0.0.1:9"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    assert "cannot reach http://127.0.0.1:9" in proc.stderr


@pytest.mark.slow
def test_serve_refuses_openai_realtime_without_a_key():
    """Refused at start with a clear message, not discovered by the first caller."""
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "UPSTREAM")}
    env.update(UPSTREAM="openai-realtime", PORT="0")
    proc = subprocess.run(
        [sys.executable, "run.py", "serve"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2, (proc.stdout[-500:], proc.stderr[-500:])
    assert "configuration error: UPSTREAM=openai-realtime: needs OPENAI_API_KEY" in proc.stderr
    assert "listening" not in proc.stdout
    with pytest.raises(ConfigError, match="needs OPENAI_API_KEY"):
        Settings(upstream="openai-realtime")
    assert Settings(upstream="openai-realtime", openai_api_key="sk-x").backends.upstream == "openai-realtime"
