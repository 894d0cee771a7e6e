"""The audit entry format, enforced where entries are written, and the login back-off's rows."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp.http_exceptions import BadHttpMessage

from kiosk.server import audit
from kiosk.server.login_guard import LoginGuard, Scope, Throttle
from kiosk.server.request_log import RequestLog
from kiosk.server.store import Store

DEVICE = "0b6c1c9e-3a52-4c1e-9d1e-6a0f1e2d3c4b"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    db = Store.in_directory(tmp_path)
    db.add_user("anne", "not-a-real-hash", "caregiver", "cli:root")
    yield db
    db.close()


@pytest.mark.parametrize("actor", ["anne", "cli:root", f"device:{DEVICE}", "server", "anonymous"])
def test_every_kind_of_actor_the_format_names_is_written(store: Store, actor: str) -> None:
    with store.tx() as conn:
        store.append_audit(conn, actor, "something-happened", None, count=1)
    entry = store.audit_entries()[-1]
    assert isinstance(entry, audit.AuditEntry) and entry.actor == actor and entry.detail == {"count": 1}
    assert store.verify_audit_chain() is None


@pytest.mark.parametrize(("actor", "action", "detail"), [
    ("Sommer2026", "login-failed", {}),  # looks like an account name, but no such account
    ("someone typed this", "login-failed", {}),
    ("device:not-a-uuid", "command-result", {}),
    ("anne", "Login Failed", {}),
    ("anne", "login", {"Typed Name": "x"}),
])
def test_an_entry_outside_the_format_is_refused_and_nothing_is_written(
        store: Store, actor: str, action: str, detail: dict[str, object]) -> None:
    before = len(store.audit_entries())
    with pytest.raises(ValueError, match="audit"), store.tx() as conn:
        store.append_audit(conn, actor, action, None, **detail)
    assert len(store.audit_entries()) == before


def test_the_back_off_keeps_no_name_that_is_no_account(store: Store) -> None:
    now = [1000.0]
    guard = LoginGuard(store, clock=lambda: now[0])
    for _ in range(5):
        assert guard.admit("192.0.2.7", None) is None
        guard.failed("192.0.2.7", None)
    refusal = guard.admit("192.0.2.7", None)
    assert refusal is None  # the sixth is admitted, and then waits begin
    failures, throttles = guard.failed("192.0.2.7", None)
    assert failures == 6 and [t.scope for t in throttles] == [Scope("address", "192.0.2.7")]
    refused = guard.admit("192.0.2.7", "anne")
    assert refused is not None and refused.scope.kind == "address" and refused.retry_after == 1
    assert [scope for scope, _ in guard.held()] == [Scope("address", "192.0.2.7")], "the account was not touched"

    now[0] += 1
    assert guard.admit("192.0.2.7", "anne") is None
    guard.succeeded("192.0.2.7", "anne")
    assert {scope for scope, _ in guard.held()} == {Scope("address", "192.0.2.7")}
    assert guard.unlock(Scope("address", "192.0.2.7"), "anne")
    assert not guard.unlock(Scope("address", "192.0.2.7"), "anne"), "nothing left to lift"
    assert guard.held() == []
    assert store.audit_entries()[-1].detail == {"address": "192.0.2.7"}


def test_the_back_off_steps_on_the_event_loop_over_the_async_side(store: Store) -> None:
    """The login route steps the guard with ``await guard.run(...)``: no blocking call on the loop, the same rows."""
    store.forbid_blocking_calls_on_loop()
    guard = LoginGuard(store, clock=lambda: 1000.0)

    async def on_loop() -> tuple[int, list[Throttle]]:
        try:
            assert await guard.run(LoginGuard.admit, "192.0.2.8", "anne") is None
            return await guard.run(LoginGuard.failed, "192.0.2.8", "anne")
        finally:
            await store.aclose()

    assert asyncio.run(on_loop()) == (1, [])
    assert {scope for scope, _ in guard.held()} == {Scope("address", "192.0.2.8"), Scope("account", "anne")}


def test_malformed_requests_are_one_rate_limited_warning_line(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    log = RequestLog(logging.getLogger("test.http"), interval=10.0, clock=lambda: now[0])
    bad = BadHttpMessage("Invalid header value char:\n\n  b'X-Evil: a\\x00b'\n      ^")
    with caplog.at_level(logging.DEBUG, "test.http"):
        for _ in range(50):
            log.exception("Error handling request from %s", "192.0.2.7", exc_info=bad)
        now[0] = 10.0
        log.exception("Error handling request from %s", "192.0.2.7", exc_info=bad)
        log.exception("Unhandled exception", exc_info=ZeroDivisionError("ours"))
    records = [(r.levelname, r.getMessage(), r.exc_info is not None) for r in caplog.records]
    assert records == [
        ("WARNING", "malformed HTTP request refused with 400: 'Invalid header value char:'", False),
        ("WARNING", "malformed HTTP request refused with 400: 'Invalid header value char:' "
                    "(49 more since the last line)", False),
        ("ERROR", "Unhandled exception", True),  # a bug of ours keeps its traceback
    ]
