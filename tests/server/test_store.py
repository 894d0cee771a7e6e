"""The store in-process on a clock the test sets: typed rows, and commands that follow
their lifecycle (kiosk.protocol.command_lifecycle)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import sqlalchemy as sa

from kiosk.protocol.command_lifecycle import CommandState
from kiosk.server.store import ROW_TABLES, CommandRow, Contended, DeviceRow, Store, commands, sha256_hex
from tests.server.fakes import START, FakeClock, FakeDevice, open_store

pytestmark = [pytest.mark.timeout(60), pytest.mark.both_databases]

TTL = 3600.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(tmp_path: Path, clock: FakeClock, database: str | None) -> Store:
    store = open_store(tmp_path / "server", clock, database)
    FakeDevice(store, "device-1")
    return store


def queue(store: Store, command_id: str = "cmd-1", ttl: float = TTL) -> CommandRow:
    with store.tx() as conn:
        store.add_command(conn, command_id, "device-1", "ping", b"{}", "cli:test", store.clock() + ttl)
    row = store.command(command_id)
    assert row is not None
    return row


def finish(store: Store, command_id: str = "cmd-1", outcome: str = "ok") -> bool:
    with store.tx() as conn:
        return store.finish_command(conn, command_id, outcome, None, b"signed", {"outcome": outcome})


def test_each_row_type_names_the_columns_of_its_table() -> None:
    for row_type, table in ROW_TABLES.items():
        assert [f.name for f in dataclasses.fields(row_type)] == [col.name for col in table.columns], row_type


def test_rows_come_back_typed(store: Store) -> None:
    device = store.device("device-1")
    assert isinstance(device, DeviceRow) and device.enrolled_at == START and device.revoked_at is None
    assert store.device("no-such-device") is None
    row = queue(store)
    assert row.state is CommandState.PENDING and row.created_at == START and row.expires_at == START + TTL


def test_a_command_is_pending_until_acknowledged_then_done_once(store: Store, clock: FakeClock) -> None:
    queue(store)
    assert [r.id for r in store.pending_commands("device-1")] == ["cmd-1"]
    clock.advance(5.0)
    store.mark_delivered("cmd-1")
    store.mark_delivered("cmd-1")  # a repeated acknowledgement keeps the first time
    row = store.command("cmd-1")
    assert row is not None and row.state is CommandState.DELIVERED and row.delivered_at == START + 5.0
    assert store.pending_commands() == []
    clock.advance(5.0)
    assert finish(store) is True
    assert finish(store, outcome="failed") is False  # the first result wins
    row = store.command("cmd-1")
    assert row is not None and (row.state, row.outcome, row.finished_at) == (CommandState.DONE, "ok", START + 10.0)


def test_a_failed_result_fails_the_command(store: Store) -> None:
    queue(store)
    assert finish(store, outcome="refused") is True
    row = store.command("cmd-1")
    assert row is not None and row.state is CommandState.FAILED


def test_commands_expire_when_the_clock_passes_their_expiry(store: Store, clock: FakeClock) -> None:
    queue(store, "short", ttl=60.0)
    queue(store, "long", ttl=TTL)
    clock.advance(59.9)
    assert store.expire_commands() == []
    assert {r.id for r in store.pending_commands()} == {"short", "long"}
    clock.advance(0.1)
    assert store.pending_commands("device-1")[0].id == "long"  # no longer sent once its time is up
    assert store.expire_commands() == ["short"]
    assert store.expire_commands() == []  # once
    row = store.command("short")
    assert row is not None and row.state is CommandState.EXPIRED and row.finished_at == START + 60.0
    assert finish(store, "short") is False  # too late: it is final
    assert [e.detail["command_id"] for e in store.audit_entries() if e.action == "command-expired"] == ["short"]


def test_a_result_before_the_sweep_counts_even_past_the_expiry(store: Store, clock: FakeClock) -> None:
    queue(store, ttl=60.0)
    store.mark_delivered("cmd-1")
    clock.advance(61.0)  # the wipe receipt came back after the expiry, before the sweep ran
    assert finish(store) is True
    assert store.expire_commands() == []


def test_a_batch_writes_each_command_once_with_all_its_steps(store: Store, clock: FakeClock) -> None:
    queue(store, "cmd-1")
    queue(store, "cmd-2")
    clock.advance(5.0)
    with store.tx() as conn:
        steps = store.command_steps(conn, ["cmd-1", "cmd-2", "no-such-command"])
        store.acknowledge(conn, "cmd-1", steps)
        store.acknowledge(conn, "cmd-2", steps)
        assert store.finish_command(conn, "cmd-1", "ok", None, b"signed", {"outcome": "ok"}, steps) is True
        assert store.finish_command(conn, "cmd-1", "failed", None, b"x", {"outcome": "failed"}, steps) is False
        assert store.finish_command(conn, "no-such-command", "ok", None, b"x", {}, steps) is False
        unwritten = store.command("cmd-1")  # read from outside the transaction
        assert unwritten is not None and unwritten.state is CommandState.PENDING
        steps.write(conn)
    one, two = store.command("cmd-1"), store.command("cmd-2")
    assert one is not None and (one.state, one.outcome, one.delivered_at, one.finished_at) == (
        CommandState.DONE, "ok", START + 5.0, START + 5.0)
    assert one.result_envelope == b"signed"
    assert two is not None and (two.state, two.delivered_at) == (CommandState.DELIVERED, START + 5.0)


def test_a_step_whose_command_changed_under_it_fails_the_transaction(store: Store) -> None:
    queue(store)
    with pytest.raises(RuntimeError, match="changed under a lock held"), store.tx() as conn:
        steps = store.command_steps(conn, ["cmd-1"])
        store.acknowledge(conn, "cmd-1", steps)
        conn.execute(sa.update(commands).values(state=CommandState.DONE))  # what the lock rules out
        steps.write(conn)
    row = store.command("cmd-1")
    assert row is not None and row.state is CommandState.PENDING  # rolled back: nothing half-written


def test_enrollment_tokens_and_held_units_on_the_clock(store: Store, clock: FakeClock) -> None:
    created = store.clock()
    [token] = store.create_tokens(1, ttl_seconds=60.0, created_by="cli:test")
    token_hash = sha256_hex(token)
    with store.tx() as conn:
        row = store.enroll_token(conn, token_hash)
    assert row is not None and (row.created_at, row.expires_at, row.used_at) == (created, created + 60.0, None)

    clock.advance(61.0)  # expired on the shelf: the unit is held, once however often it asks
    with store.tx() as conn:
        assert store.hold_enrollment(conn, token_hash, "device-2", "k" * 64, "SN-1", "1.0", store.clock())
        assert not store.hold_enrollment(conn, token_hash, "device-2", "k" * 64, "SN-1", "1.0", store.clock())
    assert store.decide_enrollment("device-2", "approved", "cli:test")
    assert not store.decide_enrollment("device-9", "approved", "cli:test")
    [(hold, batch)] = store.enrollment_holds()
    assert (hold.state, hold.decided_at, hold.serial_number, batch.created_by) == (
        "approved", store.clock(), "SN-1", "cli:test")

    with store.tx() as conn:
        store.use_token(conn, token_hash, "device-2", store.clock())
    with pytest.raises(Contended), store.tx() as conn:  # a second use rolls back, whatever the caller decided
        store.use_token(conn, token_hash, "device-3", store.clock())
    with store.tx() as conn:
        used = store.enroll_token(conn, token_hash)
    assert used is not None and used.used_by_device == "device-2"


def test_sessions_end_on_the_clock(store: Store, clock: FakeClock) -> None:
    store.add_user("anne", "(not a hash)", "caregiver", "cli:test")
    token = store.create_session("anne", ttl_seconds=600.0)
    clock.advance(599.0)
    user = store.session_user(token)
    assert user is not None and user.username == "anne"
    clock.advance(1.0)
    assert store.session_user(token) is None


def test_sessions_end_when_left_unused_and_at_their_absolute_end(store: Store, clock: FakeClock) -> None:
    store.add_user("anne", "(not a hash)", "caregiver", "cli:test")
    token = store.create_session("anne", ttl_seconds=3600.0)
    for _ in range(5):  # used every 10 minutes, an idle limit of 15 minutes never ends it...
        clock.advance(600.0)
        assert store.session_user(token, idle_seconds=900.0) is not None
    clock.advance(600.0)  # ...but the absolute end does (an hour after login)
    assert store.session_user(token, idle_seconds=900.0) is None

    token = store.create_session("anne", ttl_seconds=3600.0)
    clock.advance(899.0)
    assert store.session_user(token, idle_seconds=900.0) is not None
    clock.advance(900.0)  # 15 minutes unused since
    assert store.session_user(token, idle_seconds=900.0) is None
    assert store.session_user(token) is None, "an ended session stays ended"
