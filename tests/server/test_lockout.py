"""The login back-off as a pure machine: examples first, then properties over any sequence."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from kiosk.server.lockout import (
    ACCOUNT_POLICY,
    ADDRESS_POLICY,
    Admit,
    Attempt,
    Backoff,
    Event,
    Failed,
    Policy,
    Refuse,
    Succeeded,
    Throttled,
    Unlocked,
)

POLICY = Policy(free_failures=3, first_delay=1.0, max_delay=60.0, forget_after=3600.0, success_forgives_all=False)


def guess(policy: Policy, state: Backoff, now: float) -> tuple[Backoff, tuple[object, ...]]:
    """One wrong password: an attempt, and if admitted, its failure."""
    step = policy.step(state, Attempt(), now)
    if step.actions != (Admit(),):
        return step.state, step.actions
    failed = policy.step(step.state, Failed(), now)
    return failed.state, step.actions + failed.actions


def test_free_failures_then_doubling_waits_with_retry_after() -> None:
    state, now = Backoff(), 1000.0
    for _ in range(3):
        state, actions = guess(POLICY, state, now)
        assert actions == (Admit(),), "the first failures are free"
    state, actions = guess(POLICY, state, now)
    assert actions == (Admit(), Throttled(failures=4, retry_after=1))
    state, actions = guess(POLICY, state, now + 0.5)
    assert actions == (Refuse(retry_after=1),), "half a second early"
    state, actions = guess(POLICY, state, now + 1.0)
    assert actions == (Admit(), Throttled(failures=5, retry_after=2))
    state, actions = guess(POLICY, state, now + 3.0)
    assert actions == (Admit(), Throttled(failures=6, retry_after=4))


def test_the_right_password_waits_its_turn_and_then_counts() -> None:
    state, now = Backoff(), 0.0
    for _ in range(6):
        state, _ = guess(ACCOUNT_POLICY, state, now)
    for i in range(30):  # a stranger hammers: refused, and the wait does not grow
        state, actions = guess(ACCOUNT_POLICY, state, now + i * 0.001)
    assert len(actions) == 1 and isinstance(actions[0], Refuse)
    waiting = ACCOUNT_POLICY.step(state, Attempt(), now + 0.5)
    assert waiting.actions == (Refuse(retry_after=1),) and waiting.state == state
    admitted = ACCOUNT_POLICY.step(state, Attempt(), state.blocked_until)
    assert admitted.actions == (Admit(),)
    assert ACCOUNT_POLICY.step(admitted.state, Succeeded(), state.blocked_until).state == Backoff()


def test_a_shared_address_forgives_only_the_attempt_that_was_right() -> None:
    state = Backoff()
    for _ in range(7):
        state, _ = guess(ADDRESS_POLICY, state, 0.0)
    admitted = ADDRESS_POLICY.step(state, Attempt(), 100.0)
    after = ADDRESS_POLICY.step(admitted.state, Succeeded(), 100.0).state
    assert after.failures == state.failures == 6 and after.blocked_until == 100.0 + ADDRESS_POLICY.delay(6)


def test_an_administrator_unlocks_and_quiet_time_forgets() -> None:
    state = Backoff()
    for _ in range(20):
        state, _ = guess(POLICY, state, 0.0)
    assert POLICY.step(state, Unlocked(), 1.0).state == Backoff()
    forgotten = POLICY.step(state, Attempt(), state.blocked_until + POLICY.forget_after)
    assert forgotten.state.failures == 1, "a long quiet time starts the count again"


def test_addresses_are_held_before_accounts_and_harder() -> None:
    assert ADDRESS_POLICY.free_failures < ACCOUNT_POLICY.free_failures
    assert ADDRESS_POLICY.max_delay > ACCOUNT_POLICY.max_delay
    assert ACCOUNT_POLICY.max_delay <= 300, "a stranger can hold an owner back five minutes at most"


events = st.lists(st.tuples(st.sampled_from([Attempt(), Failed(), Succeeded(), Unlocked()]),
                            st.floats(min_value=0, max_value=7200, allow_nan=False)), max_size=60)


Seen = tuple[Backoff, Backoff, Event, float, tuple[object, ...]]


def run(policy: Policy, sequence: list[tuple[Event, float]]) -> list[Seen]:
    state, now, seen = Backoff(), 0.0, list[Seen]()
    for event, later in sequence:
        now += later / 100  # time only moves forward
        step = policy.step(state, event, now)
        seen.append((state, step.state, event, now, step.actions))
        state = step.state
    return seen


@settings(max_examples=300, deadline=None)
@given(events, st.sampled_from([POLICY, ADDRESS_POLICY, ACCOUNT_POLICY]))
def test_properties_over_any_sequence(sequence: list[tuple[Event, float]], policy: Policy) -> None:
    for before, after, event, now, actions in run(policy, sequence):
        assert after.blocked_until - now <= policy.max_delay + 1e-6, "never longer than the cap"
        for action in actions:
            if isinstance(action, Refuse | Throttled):
                assert 1 <= action.retry_after <= policy.max_delay + 1
        if any(isinstance(a, Refuse) for a in actions):
            assert after == before, "a refused attempt changes nothing: hammering cannot prolong the wait"
            assert isinstance(event, Attempt)
        if isinstance(event, Attempt):
            assert len(actions) == 1 and isinstance(actions[0], Admit | Refuse)
        if isinstance(event, Unlocked):
            assert after == Backoff()
            assert policy.step(after, Attempt(), now).actions == (Admit(),), "unlocked means admitted"


@settings(max_examples=100, deadline=None)
@given(st.floats(min_value=0.01, max_value=5.0), st.integers(min_value=1, max_value=200))
def test_a_guesser_who_waits_every_turn_gets_few_guesses(pace: float, tries: int) -> None:
    """However fast it guesses, one address gets free + log2(hour) + hours guesses in the first hours."""
    state, now, admitted = Backoff(), 0.0, 0
    for _ in range(tries):
        state, actions = guess(ADDRESS_POLICY, state, now)
        admitted += isinstance(actions[0], Admit)
        now += pace
    hours = now / 3600
    assert admitted <= ADDRESS_POLICY.free_failures + 13 + hours
