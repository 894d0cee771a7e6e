"""Login back-off, one pure state machine per client address and per account.

Guessing passwords must cost time, but a stranger must not be able to lock the staff
out. So every admitted attempt counts as a failure until the password proves right,
and after a few free failures each further one doubles the wait before the next
attempt is admitted (``429`` with ``Retry-After``). Attempts refused while waiting do
not count: hammering a delayed account does not make it wait longer. Addresses are
held harder (fewer free failures, up to an hour) than accounts (more free failures,
at most five minutes), so one guesser is stopped at its address long before the
account it guesses is slowed down for its owner. An administrator can lift either.

``Policy.step(state, event, now) -> Transition`` is the whole logic; the login route
loads the two states, steps them and stores them in one transaction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from kiosk.protocol.machine import Transition


@dataclass(frozen=True, slots=True)
class Backoff:
    """What is remembered about one address or account."""

    failures: int = 0  # admitted attempts not (yet) proven right, since the count last started
    blocked_until: float = 0.0  # no attempt is admitted before this time
    last_attempt: float = 0.0


# ------------------------------------------------------------------------- events
@dataclass(frozen=True, slots=True)
class Attempt:
    """Someone wants to try a password; admitted (and counted as failed) or refused."""


@dataclass(frozen=True, slots=True)
class Failed:
    """The admitted attempt was wrong (it is already counted)."""


@dataclass(frozen=True, slots=True)
class Succeeded:
    """The admitted attempt was right."""


@dataclass(frozen=True, slots=True)
class Unlocked:
    """An administrator lifted the wait."""


Event = Attempt | Failed | Succeeded | Unlocked


# ------------------------------------------------------------------------ actions
@dataclass(frozen=True, slots=True)
class Admit:
    """Check the password."""


@dataclass(frozen=True, slots=True)
class Refuse:
    """Answer 429 without checking anything; ``retry_after`` whole seconds."""

    retry_after: int


@dataclass(frozen=True, slots=True)
class Throttled:
    """A wrong password made the next attempt wait: worth an audit entry."""

    failures: int
    retry_after: int


Action = Admit | Refuse | Throttled


@dataclass(frozen=True, slots=True)
class Policy:
    free_failures: int  # failures before any wait
    first_delay: float  # the first wait, doubled by each further failure
    max_delay: float
    forget_after: float  # a quiet time after which the count starts again
    success_forgives_all: bool  # an account's owner proves themselves; a shared address does not

    def delay(self, failures: int) -> float:
        extra = failures - self.free_failures
        if extra <= 0:
            return 0.0
        # 2**extra overflows floats for absurd counts; the cap is reached long before
        return min(self.first_delay * 2.0 ** min(extra - 1, 64), self.max_delay)

    def step(self, state: Backoff, event: Event, now: float) -> Transition[Backoff, Action]:
        if now >= state.blocked_until and now - state.last_attempt >= self.forget_after:
            state = Backoff()
        match event:
            case Attempt():
                if now < state.blocked_until:
                    return Transition(state, (Refuse(_whole_seconds(state.blocked_until - now)),))
                failures = state.failures + 1
                return Transition(Backoff(failures, now + self.delay(failures), now), (Admit(),))
            case Failed():
                if state.blocked_until <= now:
                    return Transition(state)
                return Transition(state, (Throttled(state.failures, _whole_seconds(state.blocked_until - now)),))
            case Succeeded():
                if self.success_forgives_all:
                    return Transition(Backoff())
                failures = max(state.failures - 1, 0)
                return Transition(Backoff(failures, state.last_attempt + self.delay(failures), state.last_attempt))
            case Unlocked():
                return Transition(Backoff())


def _whole_seconds(seconds: float) -> int:
    return max(1, math.ceil(seconds))


#: One guesser is held at its address first: five free failures, then up to an hour.
ADDRESS_POLICY = Policy(free_failures=5, first_delay=1.0, max_delay=3600.0, forget_after=24 * 3600.0,
                        success_forgives_all=False)
#: An account guessed from many addresses slows down, but its owner waits five minutes at most.
ACCOUNT_POLICY = Policy(free_failures=10, first_delay=1.0, max_delay=300.0, forget_after=24 * 3600.0,
                        success_forgives_all=True)
