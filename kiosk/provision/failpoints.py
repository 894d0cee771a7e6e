"""Fault injection for crash tests: ``KIOSK_FAILPOINTS=wipe:key-destroyed`` kills the agent there.

The point names are listed where they are hit; with the variable unset this costs one
set lookup. Tests use it to cut the power (SIGKILL) between two steps of a wipe.
"""

from __future__ import annotations

import os
import signal

_ACTIVE = frozenset(p for p in os.environ.get("KIOSK_FAILPOINTS", "").split(",") if p)


def hit(name: str) -> None:
    if name in _ACTIVE:
        os.kill(os.getpid(), signal.SIGKILL)
