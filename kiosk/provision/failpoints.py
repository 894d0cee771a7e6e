"""Fault injection for crash tests: ``KIOSK_FAILPOINTS=wipe:key-destroyed`` kills the agent there.

A point named with ``=hold`` (``KIOSK_FAILPOINTS=wipe:key-destroyed=hold``) stops the agent
there for good instead, still feeding systemd's watchdog so nothing restarts it: a test
watching from outside (a VM's serial console) then cuts the power of the whole machine at
exactly that point. Each hit is said on stderr (the point's name only, nothing personal).
The point names are listed where they are hit; with the variable unset this costs one
dict lookup.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from kiosk.provision import sd_notify

KILL = "kill"
HOLD = "hold"
#: How often a held agent tells systemd's watchdog it lives (WatchdogSec= is 30 s on a unit).
HOLD_PING_SECONDS = 5.0


def parse(spec: str) -> dict[str, str]:
    """``a,b=hold`` -> {"a": "kill", "b": "hold"}; an unknown action is an error, not a silent kill."""
    points: dict[str, str] = {}
    for item in filter(None, spec.split(",")):
        name, _, action = item.partition("=")
        action = action or KILL
        if action not in (KILL, HOLD):
            raise ValueError(f"KIOSK_FAILPOINTS: {item!r}: the action must be {KILL!r} or {HOLD!r}")
        points[name] = action
    return points


_ACTIVE = parse(os.environ.get("KIOSK_FAILPOINTS", ""))


def hit(name: str) -> None:
    action = _ACTIVE.get(name)
    if action is None:
        return
    print(f"kiosk failpoint {name}: {action}", file=sys.stderr, flush=True)
    if action == KILL:
        os.kill(os.getpid(), signal.SIGKILL)
    while True:  # HOLD: until the power is cut
        sd_notify.notify("WATCHDOG=1")
        time.sleep(HOLD_PING_SECONDS)
