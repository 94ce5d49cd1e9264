"""Start ``run.py serve --mode prod`` as a real process group for the fault tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
AUTH_TOKEN = "prod-test-auth-token"
CONSOLE_TOKEN = "prod-test-operator-token"
PUBLIC_URL = "https://callbridge.test"  # as Twilio sees it: https webhook, wss:// stream
"""What the simulated Twilio sees (a load balancer's name); it connects to a node."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ProdNode:
    """One node: ``run.py serve --mode prod`` in its own session (so the whole tree of
    actor processes can be reaped), its log in ``log_path``."""

    def __init__(self, log_dir: Path, workers: int = 2, leader: str = "", node: str = "", **env: str) -> None:
        self.port = free_port()
        self.admin_port = free_port()
        args = [sys.executable, "run.py", "serve", "--mode", "prod", "--workers", str(workers),
                "--port", str(self.port), "--admin-port", str(self.admin_port)]
        if leader:
            args += ["--leader", leader]
        if node:
            args += ["--node", node]
        self._launch(log_dir, f"node-{node or 'leader'}", args, env)

    def _launch(self, log_dir: Path, name: str, args: list[str], env: dict[str, str]) -> None:
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"{name}-{self.port}.log"
        environment = {**os.environ, "TWILIO_AUTH_TOKEN": AUTH_TOKEN, "PUBLIC_URL": PUBLIC_URL,
                       "CONSOLE_TOKEN": CONSOLE_TOKEN,
                       "CHECK_MESSAGES": "1", "LOG_LEVEL": "INFO", **env}
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(args, cwd=ROOT, env=environment, stdout=subprocess.PIPE, stderr=self.log,
                                     start_new_session=True)
        self.banner = ""

    def wait_ready(self, marker: str = "listening on", timeout_s: float = 90.0) -> str:
        deadline = time.monotonic() + timeout_s
        assert self.proc.stdout is not None
        os.set_blocking(self.proc.stdout.fileno(), False)
        buf = b""
        while time.monotonic() < deadline:
            chunk = self.proc.stdout.read() or b""
            buf += chunk
            if marker.encode() in buf:
                self.banner = buf.decode()
                return self.banner
            if self.proc.poll() is not None:
                raise AssertionError(f"node exited {self.proc.returncode}: {buf.decode()}\n{self.log_text()}")
            time.sleep(0.05)
        raise AssertionError(f"node not ready in {timeout_s} s: {buf.decode()}\n{self.log_text()}")

    def log_text(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")[-6000:]

    def get(self, path: str, timeout_s: float = 5.0) -> tuple[int, Any]:
        request = urllib.request.Request(self.url + path, headers={"Authorization": f"Bearer {CONSOLE_TOKEN}"})
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def text(self, path: str, timeout_s: float = 5.0) -> str:
        request = urllib.request.Request(self.url + path, headers={"Authorization": f"Bearer {CONSOLE_TOKEN}"})
        with urllib.request.urlopen(request, timeout=timeout_s) as resp:
            return resp.read().decode()

    def health(self) -> dict[str, Any]:
        return self.get("/healthz")[1]

    def wait_for(self, predicate: Any, timeout_s: float = 20.0) -> dict[str, Any]:
        """Poll ``/healthz`` until ``predicate(body)``; any shard may answer."""
        deadline = time.monotonic() + timeout_s
        body: Any = None
        while time.monotonic() < deadline:
            try:
                body = self.health()
                if predicate(body):
                    return body
            except (OSError, ValueError):
                pass
            time.sleep(0.1)
        raise AssertionError(f"health never matched: {body}\n{self.log_text()}")

    def terminate(self, timeout_s: float = 60.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout_s)

    def pids(self) -> list[int]:
        """Every process of this node. Thespian daemonises its admin (a new process
        group, parent 1), so the group of ``proc`` is not enough: match the command line."""
        mark = f"--port\0{self.port}\0--admin-port\0{self.admin_port}\0".encode()
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/cmdline", "rb") as f:
                        if mark in f.read():
                            found.append(int(entry))
                except OSError:
                    pass
        return found

    def listening(self) -> set[tuple[str, int]]:
        """(address, port) of every TCP socket the node's processes listen on."""
        inodes = set()
        for pid in self.pids():
            try:
                for fd in os.listdir(f"/proc/{pid}/fd"):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if target.startswith("socket:["):
                        inodes.add(target[8:-1])
            except OSError:
                pass
        found = set()
        with open("/proc/net/tcp") as f:
            for line in f.readlines()[1:]:
                parts = line.split()
                if parts[3] == "0A" and parts[9] in inodes:  # LISTEN
                    hexip, hexport = parts[1].split(":")
                    ip = ".".join(str(int(hexip[i:i + 2], 16)) for i in (6, 4, 2, 0))
                    found.add((ip, int(hexport, 16)))
        return found

    def kill(self) -> None:
        """The machine goes away: SIGKILL every process of the node at once."""
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def close(self) -> None:
        """Reap every process of the node, whatever state it is in."""
        self.kill()
        self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.log.close()


class ProcessNode(ProdNode):
    """A server that is one process (``run.py serve`` in dev mode, a benchmark's own
    server), with a production node's handle: ``command`` gets ``--port``."""

    def __init__(self, log_dir: Path, name: str, command: list[str], **env: str) -> None:
        self.port, self.admin_port = free_port(), 0
        self._launch(log_dir, name, [*command, "--port", str(self.port)], env)

    def pids(self) -> list[int]:
        return [self.proc.pid] if self.proc.poll() is None else []
