"""Start ``run.py serve --mode prod`` as a real process group for the fault tests."""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
AUTH_TOKEN = "prod-test-auth-token"
CONSOLE_TOKEN = "prod-test-operator-token"
PUBLIC_URL = "https://callbridge.test"  # as Twilio sees it: https webhook, wss:// stream
"""What the simulated Twilio sees (a load balancer's name); it connects to a node."""
INSTANCE_VAR = "CALLBRIDGE_TEST_INSTANCE"
"""Set in each started node's environment: every process of that instance inherits it."""
_instances = itertools.count(1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ProdNode:
    """One node: ``run.py serve --mode prod`` in its own session (so the whole tree of
    actor processes can be reaped), its log in ``log_path``."""

    def __init__(
        self,
        log_dir: Path,
        workers: int = 2,
        leader: str = "",
        node: str = "",
        *,
        port: int = 0,
        admin_port: int = 0,
        **env: str,
    ) -> None:
        self.port = port or free_port()
        self.admin_port = admin_port or free_port()
        args = [
            sys.executable,
            "run.py",
            "serve",
            "--mode",
            "prod",
            "--workers",
            str(workers),
            "--port",
            str(self.port),
            "--admin-port",
            str(self.admin_port),
        ]
        if leader:
            args += ["--leader", leader]
        if node:
            args += ["--node", node]
        self._launch(log_dir, f"node-{node or 'leader'}", args, env)

    def _launch(self, log_dir: Path, name: str, args: list[str], env: dict[str, str]) -> None:
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"{name}-{self.port}.log"
        for n in range(2, 1000):  # a restart on the same port keeps the earlier log
            if not self.log_path.exists():
                break
            self.log_path = log_dir / f"{name}-{self.port}-{n}.log"
        self.instance = f"{os.getpid()}.{next(_instances)}"
        environment = {
            **os.environ,
            INSTANCE_VAR: self.instance,
            "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
            "PUBLIC_URL": PUBLIC_URL,
            "CONSOLE_TOKEN": CONSOLE_TOKEN,
            "CHECK_MESSAGES": "1",
            "LOG_LEVEL": "INFO",
            **env,
        }
        self.log = open(self.log_path, "wb")  # noqa: SIM115 - open for the node's life; stop() closes it
        self.proc = subprocess.Popen(
            args, cwd=ROOT, env=environment, stdout=subprocess.PIPE, stderr=self.log, start_new_session=True
        )
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
        request = urllib.request.Request(
            self.url + path, headers={"Authorization": f"Bearer {CONSOLE_TOKEN}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def text(self, path: str, timeout_s: float = 5.0) -> str:
        request = urllib.request.Request(
            self.url + path, headers={"Authorization": f"Bearer {CONSOLE_TOKEN}"}
        )
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

    def wait_healthy(self, timeout_s: float = 30.0) -> float:
        """Seconds until ``/healthz`` answers 200 "ok" from one of this node's own processes."""
        start = time.monotonic()
        while time.monotonic() - start < timeout_s:
            try:
                status, body = self.get("/healthz", timeout_s=2.0)
                if status == 200 and body.get("status") == "ok" and body.get("pid") in self.pids():
                    return time.monotonic() - start
            except (OSError, ValueError):
                pass
            if self.proc.poll() is not None:
                raise AssertionError(f"node exited {self.proc.returncode}\n{self.log_text()}")
            time.sleep(0.05)
        raise AssertionError(f"not healthy in {timeout_s} s\n{self.log_text()}")

    def terminate(self, timeout_s: float = 60.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout_s)

    def pids(self) -> list[int]:
        """Every process of this instance of the node. Thespian daemonises its admin (a new
        process group, parent 1) and forks everything else, so neither the group nor the
        parent tells: match the environment every process inherits (unique per instance,
        unlike the command line, which a restart on the same ports repeats)."""
        mark = f"\0{INSTANCE_VAR}={self.instance}\0".encode()
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/environ", "rb") as f:
                        if mark in b"\0" + f.read():
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
        return {(ip, port) for ip, port, inode in tcp_sockets(LISTEN, ipv6=False) if inode in inodes}

    def wait_gone(self, pids: set[int], timeout_s: float = 2.0) -> float:
        """Seconds until each of ``pids`` (this node's processes, as ``pids()`` found them
        earlier) has ended (gone, or a zombie: its files closed); fails after ``timeout_s``."""
        start = time.monotonic()
        while left := {pid for pid in pids if _running(pid)}:
            if time.monotonic() - start > timeout_s:
                raise AssertionError(f"still running {timeout_s} s after the node ended: {sorted(left)}")
            time.sleep(0.01)
        return time.monotonic() - start

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


def _running(pid: int) -> bool:
    """Whether any thread of ``pid`` still runs (an exiting process's first thread may be a
    zombie while the others still hold its files)."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return False
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X"):
                    return True
        except OSError:
            pass
    return False


LISTEN, TIME_WAIT = "0A", "06"
"""TCP states as ``/proc/net/tcp`` writes them."""


def tcp_sockets(state: str, ipv6: bool = True) -> Iterator[tuple[str, int, str]]:
    """(local address, local port, inode) of this host's TCP sockets in ``state``; an
    IPv6 address as the kernel writes it (hex)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6") if ipv6 else ("/proc/net/tcp",):
        with open(table) as f:
            for line in f.readlines()[1:]:
                parts = line.split()
                if parts[3] == state:
                    hexip, hexport = parts[1].rsplit(":", 1)
                    ip = (
                        hexip
                        if len(hexip) > 8
                        else ".".join(str(int(hexip[i : i + 2], 16)) for i in (6, 4, 2, 0))
                    )
                    yield ip, int(hexport, 16), parts[9]


def listeners(ports: set[int]) -> set[int]:
    """Those of ``ports`` that some socket on this host listens on (TCP, IPv4 or IPv6)."""
    return {port for _, port, _ in tcp_sockets(LISTEN) if port in ports}


def restart(node: ProdNode, how: str, log_dir: Path, **kwargs: Any) -> tuple[ProdNode, dict[str, float]]:
    """Stop ``node`` (``"term"``: SIGTERM, as a supervisor stops it; ``"kill"``: SIGKILL of
    ``run.py serve`` alone, as a crash), check that none of its processes and no listener on
    its ports remain once it has exited, and start a new node on the same ports, as a
    supervisor restarting the service does. Returns the new node (healthy) and the seconds
    from the signal to its exit (``exited``), to its last process gone (``gone``), and to the
    new node's first ``/healthz`` 200 (``healthy``)."""
    old = set(node.pids())
    assert node.proc.pid in old, old
    start = time.monotonic()
    node.proc.send_signal(signal.SIGTERM if how == "term" else signal.SIGKILL)
    code = node.proc.wait(timeout=60)
    exited = time.monotonic() - start
    assert code == (0 if how == "term" else -signal.SIGKILL), (code, node.log_text())
    gone = exited + node.wait_gone(old)
    left = listeners({node.port, node.admin_port})
    assert not left, f"a listener on {left} outlived the node: {os.popen('ss -ltnp').read()}"
    new = ProdNode(log_dir, port=node.port, admin_port=node.admin_port, **kwargs)
    healthy = time.monotonic() - start + new.wait_healthy()
    new.wait_ready()  # run.py serve has seen it up too: a stop now is a stop, not an interrupted start
    return new, {"exited": exited, "gone": gone, "healthy": healthy}


class ProcessNode(ProdNode):
    """A server that is one process (``run.py serve`` in dev mode, a benchmark's own
    server), with a production node's handle: ``command`` gets ``--port``."""

    def __init__(self, log_dir: Path, name: str, command: list[str], **env: str) -> None:
        self.port, self.admin_port = free_port(), 0
        self._launch(log_dir, name, [*command, "--port", str(self.port)], env)

    def pids(self) -> list[int]:
        return [self.proc.pid] if self.proc.poll() is None else []
