"""The command line as a user meets it: the installed ``callbridge`` command, each command's
help, ``config``'s view of the settings in force, ``call``'s operator token and its errors."""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest

from callbridge import cli
from callbridge.config import settings_table
from callbridge.configview import options

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "operator-token-for-the-cli-test"


def environment(env: dict[str, str] | None) -> dict[str, str]:
    """This process's environment without callbridge's variables, plus ``env``."""
    names = {o.env for o in options()} | {"CALLBRIDGE_URL"}
    return {**{k: v for k, v in os.environ.items() if k not in names}, **(env or {})}


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """``python *args`` from the repository root, in ``environment(env)``."""
    return subprocess.run(
        [sys.executable, *args],
        check=False,
        cwd=ROOT,
        env=environment(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


async def run_async(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """``run`` without blocking the event loop (a test's server lives on it)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        cwd=ROOT,
        env=environment(env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def test_pip_install_gives_a_callbridge_command(tmp_path):
    """The metadata setuptools writes from setup.cfg (what pip installs) names the console
    script; it resolves to the same ``main`` as ``run.py``, and runs as ``callbridge``."""
    built = subprocess.run(
        [
            sys.executable,
            "-c",
            "from setuptools import setup; setup()",
            "-q",
            "egg_info",
            "--egg-base",
            tmp_path,
        ],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert built.returncode == 0, built.stderr
    dist = next(importlib.metadata.distributions(path=[str(tmp_path)]))
    (script,) = [ep for ep in dist.entry_points if ep.group == "console_scripts"]
    assert (script.name, script.value) == ("callbridge", "callbridge.cli:main")
    assert script.load() is cli.main
    # What pip's generated script does: sys.exit(main()) with argv[0] the command's path.
    launcher = f"import sys; sys.argv[0] = 'callbridge'; from {script.module} import {script.attr}; sys.exit({script.attr}())"
    proc = run("-c", launcher, "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: callbridge ")
    for command in ("serve", "call", "demo", "config", "bench"):
        assert command in proc.stdout


def test_python_m_callbridge_is_the_same_command():
    proc = run("-m", "callbridge", "serve", "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: python -m callbridge serve ")


def test_serve_help_explains_every_flag_with_its_variable_and_default(capsys):
    with pytest.raises(SystemExit) as exit:
        cli.main(["serve", "--help"], prog="callbridge")
    assert exit.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    flagged = [o for o in options() if o.flag]
    assert {o.flag for o in flagged} >= {"--host", "--port", "--mode", "--workers", "--leader", "--max-calls"}
    for o in flagged:
        default = "unset" if o.default == "" else o.default
        assert f"{o.flag} {o.env} " in text, o.flag
        assert f"[env {o.env}; default: {default}]" in text, o.flag
    assert "TCP port to listen on (0 picks a free one). [env PORT; default: 8080]" in text
    assert "`" not in text  # Markdown quoting left out in a terminal


def test_call_help_shows_defaults_without_secrets(capsys):
    os.environ["CONSOLE_TOKEN"] = TOKEN  # a default from the environment is never printed
    try:
        with pytest.raises(SystemExit):
            cli.main(["call", "--help"], prog="callbridge")
    finally:
        del os.environ["CONSOLE_TOKEN"]
    text = " ".join(capsys.readouterr().out.split())
    assert "--console-token" in text and "default: $CONSOLE_TOKEN" in text
    assert "seconds to stay on after the last action (default: 2.0)" in text
    assert TOKEN not in text


def test_config_shows_the_values_in_force_and_where_each_came_from():
    proc = run(
        "run.py",
        "config",
        "--port",
        "9100",
        "--workers",
        "3",
        env={
            "MODE": "prod",
            "TWILIO_AUTH_TOKEN": "twilio-secret-value",
            "CONSOLE_TOKEN": TOKEN,
            "GREETING": "Hello! " * 30,
        },
    )
    assert proc.returncode == 0, proc.stderr
    assert "twilio-secret-value" not in proc.stdout and TOKEN not in proc.stdout
    rows = {line.split()[0]: line.split() for line in proc.stdout.splitlines()[1:-1]}
    assert len(rows) == len(options())
    assert rows["PORT"][1:] == ["9100", "flag", "--port"]
    assert rows["WORKERS"][1:] == ["3", "flag", "--workers"]
    assert rows["MODE"][1:] == ["prod", "env"]
    assert rows["TWILIO_AUTH_TOKEN"][1:] == ["********", "(set)", "env"]
    assert rows["HOST"][1:] == ["127.0.0.1", "default"]
    assert rows["LEADER"][1:] == ["(unset)", "default"]
    assert rows["GREETING"][-2].endswith("...") and rows["GREETING"][-1] == "env"  # a long value is cut
    assert max(len(line) for line in proc.stdout.splitlines()) <= 110
    assert proc.stdout.splitlines()[-1].startswith("6 of ")  # 4 from the environment, 2 flags


def test_config_reference_is_the_markdown_table():
    proc = run("run.py", "config", "--reference")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == settings_table() + "\n"


def test_config_errors_are_one_line_and_exit_2():
    proc = run("run.py", "config", env={"PORT": "eighty"})
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "configuration error: PORT: invalid literal for int() with base 10: 'eighty'"
    ]


def test_unreadable_caller_audio_is_one_line_and_exit_2(tmp_path):
    """Read before any call is placed: no server needed, no traceback."""
    missing = run("run.py", "call", "--url", "http://127.0.0.1:9", "--wav", "no-such-turn.wav")
    assert missing.returncode == 2
    (line,) = missing.stderr.splitlines()
    assert line.startswith(
        "run.py call: --wav no-such-turn.wav: No such file or directory (bundled caller lines: "
    )
    assert "caller-1-book.wav" in line
    assert Path(ROOT / line.split("bundled caller lines: ")[1].split(",")[0]).is_file()
    not_wav = tmp_path / "notes.wav"
    not_wav.write_text("these are not samples")
    bad = run("run.py", "call", "--url", "http://127.0.0.1:9", "--wav", str(not_wav))
    assert bad.returncode == 2
    assert bad.stderr.splitlines() == [
        f"run.py call: --wav {not_wav}: not a PCM WAV file (file does not start with RIFF id)"
    ]
    folder = run("run.py", "call", "--wav", str(tmp_path))
    assert folder.returncode == 2 and len(folder.stderr.splitlines()) == 1
    assert "Is a directory" in folder.stderr


async def test_call_fetches_the_timeline_with_the_operator_token(start_server, tmp_path):
    """A server with ``CONSOLE_TOKEN`` (prod always has one) answers ``/calls/{callSid}``
    only with it: without, ``call`` says so; with the flag or the variable, the timeline."""
    url = await start_server(console_token=TOKEN, greeting="Hi.")
    call = ("run.py", "call", "--url", url, "--hold", "0.3")
    code, out, err = await run_async(*call)
    assert code == 0, err
    assert (
        "(no timeline: GET /calls/{callSid} answered 401 console token required; pass the server's CONSOLE_TOKEN"
        in out
    )
    code, out, err = await run_async(*call, "--console-token", TOKEN, "--out", str(tmp_path / "agent.wav"))
    assert code == 0, err
    assert "no timeline" not in out and "greeting_audio" in out and "stats:" in out
    code, out, err = await run_async(*call, env={"CONSOLE_TOKEN": TOKEN})
    assert code == 0, err
    assert "no timeline" not in out and "greeting_audio" in out
    code, out, err = await run_async(*call, "--console-token", "wrong-token-of-some-length")
    assert code == 0, err
    assert "answered 401" in out
    code, out, err = await run_async(*call, "--out", str(tmp_path / "agent.wav" / "x.wav"))
    assert code == 2 and len(err.splitlines()) == 1 and "cannot write" in err
