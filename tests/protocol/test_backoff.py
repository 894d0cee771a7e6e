"""Tests for kiosk.protocol.backoff: exponential reconnect delays with full jitter."""

from __future__ import annotations

import random
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kiosk.protocol import backoff

pytestmark = pytest.mark.timeout(60)

FAST = settings(max_examples=100, deadline=None)


def ceiling(attempt: int, base: float, cap: float) -> Fraction:
    """min(cap, base * 2**attempt), computed exactly (a float would overflow)."""
    return min(Fraction(cap), Fraction(base) * (1 << attempt))


@FAST
@given(
    st.integers(min_value=0, max_value=10**6),
    st.floats(min_value=0.0, max_value=100.0),
    st.floats(min_value=0.0, max_value=3600.0),
    st.integers(min_value=0, max_value=2**32),
)
def test_delay_is_within_zero_and_the_capped_exponential(attempt: int, base: float, cap: float, seed: int) -> None:
    value = backoff.delay(attempt, base=base, cap=cap, rng=random.Random(seed))
    assert 0.0 <= value <= ceiling(attempt, base, cap)


@FAST
@given(st.integers(min_value=0, max_value=200), st.integers(min_value=0, max_value=2**32))
def test_default_delays_stay_within_a_minute(attempt: int, seed: int) -> None:
    value = backoff.delay(attempt, rng=random.Random(seed))
    assert 0.0 <= value <= min(60.0, 2.0**attempt)


def test_first_retry_is_at_most_base() -> None:
    rng = random.Random(7)
    assert all(0.0 <= backoff.delay(0, base=0.5, rng=rng) <= 0.5 for _ in range(200))


@pytest.mark.parametrize("attempt", [33, 64, 1024, 10**6, 10**100, 2**4096])
def test_huge_attempt_numbers_do_not_overflow(attempt: int) -> None:
    value = backoff.delay(attempt, base=1.0, cap=60.0, rng=random.Random(1))
    assert 0.0 <= value <= 60.0
    # An enormous base does not overflow either: the cap still holds.
    assert 0.0 <= backoff.delay(attempt, base=1e300, cap=5.0, rng=random.Random(1)) <= 5.0


def test_without_an_rng_the_global_random_is_used() -> None:
    random.seed(99)
    first = [backoff.delay(a) for a in range(10)]
    random.seed(99)
    assert [backoff.delay(a) for a in range(10)] == first
    assert all(0.0 <= d <= 60.0 for d in first)


def test_deterministic_with_a_seeded_random() -> None:
    first = [backoff.delay(a, rng=random.Random(1234)) for a in range(40)]
    second = [backoff.delay(a, rng=random.Random(1234)) for a in range(40)]
    assert first == second
    shared_a, shared_b = random.Random(5), random.Random(5)
    assert [backoff.delay(a, rng=shared_a) for a in range(40)] == [backoff.delay(a, rng=shared_b) for a in range(40)]
    # It is the full-jitter formula: uniform over [0, ceiling].
    assert backoff.delay(3, base=2.0, cap=60.0, rng=random.Random(8)) == random.Random(8).uniform(0, 16.0)


def test_jitter_spreads_a_crowd_of_units() -> None:
    # A thousand units that lost the server together must not come back in the same second.
    rng = random.Random(2024)
    delays = [backoff.delay(10, rng=rng) for _ in range(1000)]
    seconds = {int(d) for d in delays}
    assert len(seconds) >= 50
    assert max(delays) - min(delays) > 50.0


def test_zero_cap_or_base_means_no_wait() -> None:
    assert backoff.delay(5, base=1.0, cap=0.0, rng=random.Random(1)) == 0.0
    assert backoff.delay(5, base=0.0, cap=60.0, rng=random.Random(1)) == 0.0
