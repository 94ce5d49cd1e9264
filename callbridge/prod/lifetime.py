"""Tie every process of a production node to ``run.py serve``, the process that owns it.

Thespian daemonises its admin (``setsid`` and a double fork: its parent is init) and forks
the actors from it; a shard is the pool supervisor's child and outlives it on purpose (a new
pool adopts it). So neither a parent-death signal nor the process group says whether the
node still has its owner. ``tie_to_owner()``, called in ``run.py serve`` before the actor
system starts, opens a pipe whose write end only the owner keeps: every process forked from
it afterwards (``os.register_at_fork``; thespian forks, it never execs) closes its copy of
the write end and blocks on the read end in a daemon thread. End of file there means the
owner is gone, however it ended (SIGKILL included), and the process exits at once, closing
its sockets. POSIX only, no polling; processes that exec (``subprocess``) do not inherit the
pipe.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

OWNER_GONE_EXIT = 70
"""Exit status of a node process that outlived its owner."""


class _Pipe:
    """The owner's pipe: every process of the node watches the read end; the write end is
    held by the owner only (a forked child closes its copy and forgets it)."""

    read_fd: int | None = None
    write_fd: int | None = None


def tie_to_owner(farewell: Callable[[str], str] = str) -> None:
    """From now on, every process this one forks (and they fork) exits when this one ends,
    writing ``farewell(text)`` to stderr (e.g. a JSON log line)."""
    if _Pipe.read_fd is not None or not hasattr(os, "register_at_fork"):
        return  # tied already; or no fork (Windows: thespian spawns, nothing is inherited)
    _Pipe.read_fd, _Pipe.write_fd = os.pipe()
    os.register_at_fork(after_in_child=lambda: _in_child(farewell))


def _in_child(farewell: Callable[[str], str]) -> None:
    if _Pipe.write_fd is not None:
        os.close(_Pipe.write_fd)
        _Pipe.write_fd = None
    threading.Thread(target=_watch, args=(_Pipe.read_fd, farewell), name="owner-watch", daemon=True).start()


def _watch(read_fd: int, farewell: Callable[[str], str]) -> None:
    try:
        while os.read(read_fd, 1):
            pass  # nobody writes: only end of file comes
    except OSError:
        return  # the fd was closed under us: nothing left to watch
    text = f"callbridge: pid {os.getpid()}: the node's owner (run.py serve) is gone; exiting"
    os.write(2, (farewell(text) + "\n").encode())
    os._exit(OWNER_GONE_EXIT)
