"""Tests for the command lifecycle (kiosk.protocol.command_lifecycle).

The transition table is written out by hand; the properties check any sequence of
events at any times against the rules the console and the audit log rely on.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kiosk.protocol.command_lifecycle import (
    DELIVERABLE,
    OPEN,
    Acknowledged,
    AuditExpiry,
    CommandLife,
    CommandState,
    KeepResult,
    LifecycleEvent,
    Reported,
    Swept,
    step,
)
from kiosk.protocol.machine import Transition

pytestmark = pytest.mark.timeout(120)

EXPIRES = 100.0
PENDING = CommandLife(CommandState.PENDING, EXPIRES)
DELIVERED = CommandLife(CommandState.DELIVERED, EXPIRES, delivered_at=10.0)
FINISHED = [
    CommandLife(CommandState.DONE, EXPIRES, 10.0, 20.0),
    CommandLife(CommandState.FAILED, EXPIRES, None, 20.0),
    CommandLife(CommandState.EXPIRED, EXPIRES, 10.0, 100.0),
]


def test_states_are_the_stored_strings() -> None:
    assert [str(s) for s in CommandState] == ["pending", "delivered", "done", "failed", "expired"]
    assert {CommandState.PENDING, CommandState.DELIVERED} == OPEN
    assert {CommandState.PENDING} == DELIVERABLE


def test_acknowledgement_delivers_a_pending_command() -> None:
    assert step(PENDING, Acknowledged(), 10.0) == Transition(DELIVERED)


def test_a_repeated_acknowledgement_keeps_the_first_time() -> None:
    assert step(DELIVERED, Acknowledged(), 15.0) == Transition(DELIVERED)


@pytest.mark.parametrize("life", [PENDING, DELIVERED])
@pytest.mark.parametrize(("ok", "state"), [(True, CommandState.DONE), (False, CommandState.FAILED)])
def test_a_result_finishes_an_open_command(life: CommandLife, ok: bool, state: CommandState) -> None:
    after = step(life, Reported(ok), 20.0)
    assert after == Transition(CommandLife(state, EXPIRES, life.delivered_at, 20.0), (KeepResult(),))


def test_a_result_after_the_expiry_but_before_the_sweep_still_counts() -> None:
    # The device checked the expiry on receipt; its signed receipt is proof worth keeping.
    after = step(DELIVERED, Reported(True), EXPIRES + 5.0)
    assert after.state.state is CommandState.DONE and after.actions == (KeepResult(),)


@pytest.mark.parametrize("life", [PENDING, DELIVERED])
def test_the_sweep_expires_an_open_command_at_its_expiry_not_before(life: CommandLife) -> None:
    assert step(life, Swept(), EXPIRES - 0.001) == Transition(life)
    after = step(life, Swept(), EXPIRES)
    assert after == Transition(
        CommandLife(CommandState.EXPIRED, EXPIRES, life.delivered_at, EXPIRES), (AuditExpiry(),))


@pytest.mark.parametrize("life", FINISHED)
@pytest.mark.parametrize("event", [Acknowledged(), Reported(True), Reported(False), Swept()])
def test_a_finished_command_never_changes(life: CommandLife, event: LifecycleEvent) -> None:
    assert step(life, event, 1e9) == Transition(life)


@pytest.mark.parametrize("now", [math.nan, math.inf, -math.inf])
def test_a_clock_that_is_not_a_number_decides_nothing(now: float) -> None:
    for event in (Acknowledged(), Reported(True), Swept()):
        assert step(PENDING, event, now) == Transition(PENDING)


def test_deliverable_only_while_pending_and_unexpired() -> None:
    assert PENDING.deliverable(EXPIRES - 1) and not PENDING.deliverable(EXPIRES)
    assert not DELIVERED.deliverable(0.0)


# --- properties --------------------------------------------------------------

events = st.sampled_from([Acknowledged(), Reported(True), Reported(False), Swept()])
times = st.floats(min_value=0.0, max_value=300.0)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(events, times), max_size=20))
def test_any_events_in_any_order(timed: list[tuple[LifecycleEvent, float]]) -> None:
    life = PENDING
    results = expiries = 0
    for event, now in timed:
        after = step(life, event, now)  # never raises
        if not life.open:
            assert after == Transition(life)  # finished is final
        if life.state is CommandState.DELIVERED:
            assert after.state.state is not CommandState.PENDING  # never back
        if after.state.delivered_at is not None and life.delivered_at is not None:
            assert after.state.delivered_at == life.delivered_at
        assert after.state.open == (after.state.finished_at is None)
        results += after.actions.count(KeepResult())
        expiries += after.actions.count(AuditExpiry())
        if AuditExpiry() in after.actions:
            assert now >= EXPIRES and after.state.state is CommandState.EXPIRED
        life = after.state
    # At most one ending, and exactly one action for it.
    assert results + expiries == (0 if life.open else 1)
