"""Production mode's process lifetime, for real: a node stops or crashes and a new one
starts at once on the same ports, as a supervisor (systemd) restarting the service does;
nothing of the old one outlives it. ``bench/restart.py`` runs the loops longer and times them."""

from __future__ import annotations

import json
import os
import signal
import socket
import time

import pytest

from callbridge.testing.nodes import TIME_WAIT, free_port, listeners, restart, tcp_sockets

from .test_prod import _ppid

pytestmark = [pytest.mark.prod, pytest.mark.slow]


def test_a_node_restarts_at_once_on_the_same_ports_after_a_crash_or_a_stop(nodes, tmp_path):
    """SIGKILL of ``run.py serve`` alone takes the admin, its logger, the pool and the shards
    along; each time the next node comes up healthy on the same ports."""
    node = nodes(workers=1)
    node.wait_ready()
    for how in ("kill", "term", "kill"):
        assert len(node.pids()) >= 5, node.pids()  # run.py serve, admin, logger, pool, shard
        new, seconds = restart(node, how, tmp_path, workers=1)
        nodes.started.append(new)
        if how == "kill":
            assert node.log_text().count("the node's owner (run.py serve) is gone; exiting") >= 4
            # In prod's JSON log format, their last words are JSON lines too.
            lines = node.log_path.read_text(errors="replace").splitlines()
            farewells = [json.loads(line) for line in lines if "is gone; exiting" in line]
            assert {f["level"] for f in farewells} == {"ERROR"}, farewells
        node = new
        assert seconds["healthy"] < 30, seconds
    assert node.terminate() == 0


def _time_wait_on(port: int) -> None:
    """Leave a connection in TIME-WAIT on 127.0.0.1:``port`` (the listening side closes
    first, as thespian's admin and a shard do when a node stops), and no listener."""
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", port))
        server.listen()
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = server.accept()
        accepted.close()
        time.sleep(0.05)
        client.close()


def test_connections_in_time_wait_on_the_ports_do_not_lock_a_start_out(nodes):
    port, admin_port = free_port(), free_port()
    _time_wait_on(port)
    _time_wait_on(admin_port)
    assert {port, admin_port} <= {p for _, p, _ in tcp_sockets(TIME_WAIT)}
    assert not listeners({port, admin_port})
    node = nodes(workers=1, port=port, admin_port=admin_port)
    node.wait_ready()
    node.wait_healthy()
    assert node.terminate() == 0


@pytest.mark.parametrize("which", ["admin", "port"])
def test_a_live_listener_on_a_port_is_reported_and_the_node_does_not_start(nodes, which):
    """A listener on ADMIN_PORT (thespian would join it) or on PORT, even one sharing it
    with SO_REUSEPORT as a shard does (the node would share the port with it): exit 2."""
    with socket.socket() as held:
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        node = nodes(workers=1, **{"admin_port" if which == "admin" else "port": taken})
        assert node.proc.wait(30) == 2
    what = "admin port" if which == "admin" else "port"
    assert f"{what} 127.0.0.1:{taken} is in use (Address already in use): another" in node.log_text()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_start_up_stops_everything_and_exits_0(nodes, signum):
    node = nodes(workers=2)
    deadline = time.monotonic() + 30
    while len(node.pids()) < 4:  # run.py serve, the admin, its logger, the pool: shards starting
        assert time.monotonic() < deadline and node.proc.poll() is None, node.log_text()
        time.sleep(0.02)
    processes = set(node.pids())
    node.proc.send_signal(signum)
    assert node.proc.wait(30) == 0, node.log_text()
    out = node.proc.stdout.read().decode()
    assert "listening on" not in out, "the signal came too late to test start-up"
    assert f"interrupted ({signal.Signals(signum).name}) during start-up: stopping" in out
    assert "did not come up" not in node.log_text()
    node.wait_gone(processes | set(node.pids()))
    assert not listeners({node.port, node.admin_port})


def test_sigterm_stops_every_process_within_drain_s_and_leaves_no_listener(nodes):
    node = nodes(workers=2, DRAIN_S="2")
    node.wait_ready()
    processes = set(node.pids())
    start = time.monotonic()
    assert node.terminate() == 0
    node.wait_gone(processes, timeout_s=1.0)
    assert time.monotonic() - start < 2 + 15, "DRAIN_S plus the bound"
    assert not listeners({node.port, node.admin_port})
    assert "is gone; exiting" not in node.log_text(), "asys.shutdown() stopped them all"


def test_sigterm_right_after_the_pool_died_stops_the_shards_it_left(nodes):
    """The pool's shards outlive it (a new pool adopts them) and so are no child of the
    actor system's any more: its shutdown alone would leave them serving for
    ``ORPHAN_AFTER_S``; they go when ``run.py serve`` does."""
    node = nodes(workers=2, DRAIN_S="1")
    node.wait_ready()
    health = node.wait_for(lambda h: len(h.get("pool", {}).get("shards", [])) == 2)
    shards = {s["pid"] for s in health["pool"]["shards"]}
    processes = set(node.pids())
    os.kill(_ppid(shards.pop()), signal.SIGKILL)  # the shards' parent: the pool
    node.proc.send_signal(signal.SIGTERM)  # before run.py serve notices (2 s) and adopts
    assert node.proc.wait(1 + 15 + 10 + 5) == 0, node.log_text()
    node.wait_gone(processes)
    assert not listeners({node.port, node.admin_port})
