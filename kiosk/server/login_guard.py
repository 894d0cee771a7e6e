"""Where the login back-off is kept: one row per client address and per account.

The rows live in the server's database, so the back-off holds across restarts and
across server processes, and ``kiosk-server user unlock`` (another process) can lift
it. Every change is one short write transaction: read both rows, step both machines
(:mod:`kiosk.server.lockout`), write them back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Concatenate, Literal, ParamSpec, TypeVar, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from kiosk.protocol.machine import Clock
from kiosk.server import lockout
from kiosk.server.lockout import Backoff, Policy
from kiosk.server.store import Store, login_backoff

ScopeKind = Literal["address", "account"]
P = ParamSpec("P")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Scope:
    """One thing held back: a client address or an account."""

    kind: ScopeKind
    value: str

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.value}"

    @property
    def policy(self) -> Policy:
        return lockout.ADDRESS_POLICY if self.kind == "address" else lockout.ACCOUNT_POLICY


@dataclass(frozen=True, slots=True)
class Throttle:
    """A scope that must now wait: the login route audits it."""

    scope: Scope
    failures: int
    retry_after: int


@dataclass(frozen=True, slots=True)
class MustWait:
    """A login attempt that must wait: who is held (address or account) and for how long."""

    scope: Scope
    retry_after: int


class LoginGuard:
    def __init__(self, store: Store, clock: Clock | None = None) -> None:
        self.store, self.clock = store, clock or store.clock

    async def run(self, step: Callable[Concatenate[LoginGuard, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``step(guard, ...)`` from the event loop (``await guard.run(LoginGuard.admit, ...)``): the same
        guard over the store's async side (:meth:`Store.run`), so the login route never blocks the loop."""
        def over(store: Store) -> T:
            return step(LoginGuard(store, self.clock), *args, **kwargs)
        return await self.store.run(over)

    def admit(self, address: str, account: str | None) -> MustWait | None:
        """Count an attempt against the address, then the account; or say who must wait.

        An attempt refused for either counts for neither, so the owner of a slowed
        account does not also get their own address held back by retrying.
        """
        now = self.clock()
        with self.store.tx() as conn:
            steps = []
            for scope in _scopes(address, account):
                step = scope.policy.step(_load(conn, scope), lockout.Attempt(), now)
                for action in step.actions:
                    if isinstance(action, lockout.Refuse):
                        return MustWait(scope, action.retry_after)
                steps.append((scope, step.state))
            for scope, state in steps:
                _save(conn, scope, state)
        return None

    def failed(self, address: str, account: str | None) -> tuple[int, list[Throttle]]:
        """Record a wrong password: the address's failure count, and who must now wait."""
        return self._outcome(address, account, lockout.Failed())

    def succeeded(self, address: str, account: str) -> None:
        self._outcome(address, account, lockout.Succeeded())

    def _outcome(self, address: str, account: str | None, event: lockout.Event) -> tuple[int, list[Throttle]]:
        now = self.clock()
        throttles, address_failures = [], 0
        with self.store.tx() as conn:
            for scope in _scopes(address, account):
                step = scope.policy.step(_load(conn, scope), event, now)
                _save(conn, scope, step.state)
                if scope.kind == "address":
                    address_failures = step.state.failures
                throttles += [Throttle(scope, a.failures, a.retry_after)
                              for a in step.actions if isinstance(a, lockout.Throttled)]
        return address_failures, throttles

    def unlock(self, scope: Scope, actor: str) -> bool:
        """Lift the wait of one address or account (audited); False if it had none."""
        with self.store.tx() as conn:
            state = _load(conn, scope)
            if state == Backoff():
                return False
            _save(conn, scope, scope.policy.step(state, lockout.Unlocked(), self.clock()).state)
            self.store.append_audit(conn, actor, "login-unlocked", None, **{scope.kind: scope.value})
        return True

    def held(self) -> list[tuple[Scope, Backoff]]:
        """Every address and account that has failures on record, longest wait first."""
        with self.store.read() as conn:
            rows = conn.execute(sa.select(login_backoff).where(login_backoff.c.failures > 0)
                                .order_by(login_backoff.c.blocked_until.desc())).all()
        return [(_scope(r.key), Backoff(r.failures, r.blocked_until, r.last_attempt)) for r in rows]


def _scopes(address: str, account: str | None) -> list[Scope]:
    # the address first: a guesser is held there before the account it guesses is slowed down
    return [Scope("address", address)] + ([Scope("account", account)] if account is not None else [])


def _scope(key: str) -> Scope:
    kind, _, value = key.partition(":")
    return Scope(cast(ScopeKind, kind), value)


def _load(conn: Connection, scope: Scope) -> Backoff:
    row = conn.execute(sa.select(login_backoff).where(login_backoff.c.key == scope.key)).first()
    return Backoff(row.failures, row.blocked_until, row.last_attempt) if row else Backoff()


def _save(conn: Connection, scope: Scope, state: Backoff) -> None:
    conn.execute(login_backoff.delete().where(login_backoff.c.key == scope.key))
    if state != Backoff():
        conn.execute(login_backoff.insert().values(key=scope.key, failures=state.failures,
                                                   blocked_until=state.blocked_until,
                                                   last_attempt=state.last_attempt))
