"""Make thespian's sockets bind only the operator's address.

Thespian 4.0 binds every socket of ``multiprocTCPBase`` (the admin port and each actor's)
on all interfaces, ``THESPIAN_BASE_IPADDR`` only choosing the address it advertises, and
it unpickles whatever arrives on them. ``restrict_binding()`` patches the one place that
decides (``IPActorAddress.bindname``) so that, with ``THESPIAN_BASE_IPADDR`` set, every
socket binds that address only. Applied in ``run.py serve --mode prod`` before the actor
system starts; forked actor processes inherit it.
"""

from __future__ import annotations

import os
from typing import Any

_patched = False


def restrict_binding() -> None:
    global _patched
    if _patched:
        return
    from thespian.system.transport.IPBase import IPActorAddress

    original = IPActorAddress.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        base = os.environ.get("THESPIAN_BASE_IPADDR")
        if base and self.bindname[0] in ("", "0.0.0.0"):
            self.bindname = (base, self.bindname[1])

    IPActorAddress.__init__ = __init__
    _patched = True
