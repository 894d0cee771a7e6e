"""The lifecycle of one signed command on the server: pending -> delivered -> done / failed / expired.

Pure, in the one shape of every state machine here (kiosk.protocol.machine):
``step(life, event, now) -> Transition(life, actions)``. The store keeps one
:class:`CommandLife` per command and writes what the machine returns; the SQL only
finds candidates (by the states named here) and guards each write with the state it
read, so a second process (the CLI) racing the server cannot apply a step twice.

::

    pending ──Acknowledged──▶ delivered
       │                         │
       ├──Reported(ok)───────────┴──▶ done      (first result wins)
       ├──Reported(not ok)───────┴──▶ failed
       └──Swept, past expiry─────┴──▶ expired

A result is accepted while the command is open even if its expiry passed since the
last sweep: the device checked the expiry when the command reached it, and its
signed result (a wipe receipt above all) is proof worth keeping. Once finished, a
command never changes again.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, replace
from typing import TypeAlias

from kiosk.protocol.machine import Transition


class CommandState(enum.StrEnum):
    PENDING = "pending"  # stored, waiting for the device to come online
    DELIVERED = "delivered"  # the device acknowledged it; its result is awaited
    DONE = "done"  # the device reported success
    FAILED = "failed"  # the device reported failure or refusal
    EXPIRED = "expired"  # no result before its expiry


#: States in which a command may still change, and may still take a result.
OPEN: frozenset[CommandState] = frozenset({CommandState.PENDING, CommandState.DELIVERED})
#: States in which the server (re)sends the command to its device when it is online.
DELIVERABLE: frozenset[CommandState] = frozenset({CommandState.PENDING})


@dataclass(frozen=True, slots=True)
class CommandLife:
    state: CommandState
    expires_at: float
    delivered_at: float | None = None
    finished_at: float | None = None

    @property
    def open(self) -> bool:
        return self.state in OPEN

    def deliverable(self, now: float) -> bool:
        """Whether to send it to its device now."""
        return self.state in DELIVERABLE and now < self.expires_at


# --- events in ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Acknowledged:
    """The device said it received the command."""


@dataclass(frozen=True, slots=True)
class Reported:
    """The device's signed result arrived and was verified."""

    ok: bool


@dataclass(frozen=True, slots=True)
class Swept:
    """The periodic sweep looked at the command: expire it if its time is up."""


LifecycleEvent: TypeAlias = Acknowledged | Reported | Swept


# --- actions out -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeepResult:
    """Store the result (and audit it): it is the first for this command."""


@dataclass(frozen=True, slots=True)
class AuditExpiry:
    """Write the expiry to the audit log."""


LifecycleAction: TypeAlias = KeepResult | AuditExpiry


def step(life: CommandLife, event: LifecycleEvent, now: float) -> Transition[CommandLife, LifecycleAction]:
    """Feed one event. Never raises; an event with nothing to do returns ``life`` unchanged."""
    if not life.open or not math.isfinite(now):
        return Transition(life)  # finished is final; a clock that is not a number decides nothing
    match event:
        case Acknowledged():
            if life.state is CommandState.PENDING:
                return Transition(replace(life, state=CommandState.DELIVERED, delivered_at=now))
            return Transition(life)  # a repeated acknowledgement
        case Reported(ok=ok):
            finished = CommandState.DONE if ok else CommandState.FAILED
            return Transition(replace(life, state=finished, finished_at=now), (KeepResult(),))
        case Swept():
            if now >= life.expires_at:
                return Transition(replace(life, state=CommandState.EXPIRED, finished_at=now), (AuditExpiry(),))
            return Transition(life)
    raise TypeError(f"not a command event: {event!r}")  # pragma: no cover (a programming error)
