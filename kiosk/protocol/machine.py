"""The one shape of every state machine in this project.

Each machine — the call, the screen controller, the wipe journal, a command's
lifecycle — is a pure function ``step(state, event, now) -> Transition``: no I/O,
no clock of its own, never raising for an event that came from outside. The I/O
layer around it feeds events, stores the new state and carries out the actions in
order. One shape means one way to read, test and property-test them all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeAlias, TypeVar

#: Where a machine's I/O layer reads the time: real in production, set by tests.
Clock: TypeAlias = Callable[[], float]

S = TypeVar("S")
A = TypeVar("A")


@dataclass(frozen=True, slots=True)
class Transition(Generic[S, A]):
    """The machine's new state and what the I/O layer must do, in order."""

    state: S
    actions: tuple[A, ...] = ()
