"""prod/lifetime.py with real processes: an owner, its child (the pool's place) and
grandchild (a shard's), as ``run.py serve`` and thespian fork them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from callbridge.testing.nodes import ROOT

OWNER = """
import os, sys, time
from callbridge.prod.lifetime import tie_to_owner
tie_to_owner()
if os.fork() == 0:  # the pool: setsid as thespian's admin does
    os.setsid()
    if os.fork() == 0:  # the shard
        time.sleep(60)
        os._exit(0)
    time.sleep(60)
    os._exit(0)
time.sleep(60)
"""


def _wait_exit(pid: int, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                    return True
        except OSError:
            return True
        time.sleep(0.01)
    return False


def test_a_grandchild_outlives_its_parent_and_exits_with_the_owner():
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER], cwd=ROOT, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 10
        while len(family := _descendants(owner.pid)) < 2:
            assert time.monotonic() < deadline, family
            time.sleep(0.01)
        pool, shard = family
        os.kill(pool, signal.SIGKILL)
        assert _wait_exit(pool)
        time.sleep(0.3)
        assert not _wait_exit(shard, 0), "the shard must outlive the pool (a new one adopts it)"
        owner.kill()
        owner.wait(5)
        assert _wait_exit(shard, 2.0), "the shard outlived the owner"
        assert b"the node's owner (run.py serve) is gone; exiting" in owner.stderr.read()
    finally:
        owner.kill()
        for pid in _descendants(owner.pid):
            os.kill(pid, signal.SIGKILL)
        owner.wait(5)


def _descendants(pid: int) -> list[int]:
    """The processes forked from the owner ``pid`` (they run its command line), by pid."""
    found = []
    for entry in sorted(os.listdir("/proc"), key=lambda e: int(e) if e.isdigit() else 0):
        if entry.isdigit() and int(entry) != pid:
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if f.read() == f"{sys.executable}\0-c\0{OWNER}\0".encode():
                        found.append(int(entry))
            except OSError:
                pass
    return found
