"""The store as the event loop calls it (``await store.run(...)``): the same queries over the
async drivers, on SQLite and PostgreSQL; the loop keeps turning while the database makes a
query wait; and a synchronous call left on the loop is refused, not silently blocking."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable
from pathlib import Path
from typing import TypeVar

import pytest
import sqlalchemy as sa

from kiosk.server.store import BlockingCallOnLoop, CommandRow, Store
from tests.server.fakes import FakeClock, FakeDevice, open_store

T = TypeVar("T")

pytestmark = [pytest.mark.timeout(60), pytest.mark.both_databases]


@pytest.fixture
def store(tmp_path: Path, database: str | None) -> Store:
    store = open_store(tmp_path / "server", FakeClock(), database)
    FakeDevice(store, "device-1")
    return store


def queue_ping(store: Store, command_id: str) -> None:
    with store.tx() as conn:
        store.add_command(conn, command_id, "device-1", "ping", b"{}", "cli:test", store.clock() + 60)


def test_a_write_on_the_loop_is_read_back_by_the_blocking_side_and_back(store: Store) -> None:
    async def on_loop() -> CommandRow | None:
        await store.run(queue_ping, "cmd-loop")
        return await store.run(Store.command, "cmd-thread")

    queue_ping(store, "cmd-thread")
    seen = asyncio.run(_closing(store, on_loop()))
    assert seen is not None and seen.id == "cmd-thread"
    written = store.command("cmd-loop")
    assert written is not None and written.device_id == "device-1"


def test_the_loop_turns_while_the_database_makes_a_write_wait(store: Store) -> None:
    """Another connection holds the write lock (SQLite) or the row (PostgreSQL) for a second; a write
    through run() waits for it, and meanwhile the loop goes on ticking. A blocking call would
    have stopped the ticks for the whole second."""
    queue_ping(store, "cmd-1")
    locked, release = threading.Event(), threading.Event()

    def hold_lock() -> None:
        with store.tx() as conn:  # SQLite: BEGIN IMMEDIATE; PostgreSQL: the row's lock
            conn.execute(sa.text("UPDATE commands SET kind = kind WHERE id = 'cmd-1'"))
            locked.set()
            release.wait(10)

    def touch(store: Store) -> None:
        with store.tx() as conn:
            conn.execute(sa.text("UPDATE commands SET kind = kind WHERE id = 'cmd-1'"))

    async def on_loop() -> int:
        holder = asyncio.create_task(asyncio.to_thread(hold_lock))
        await asyncio.to_thread(locked.wait, 10)
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.create_task(tick())
        asyncio.get_running_loop().call_later(1.0, release.set)
        await store.run(touch)
        ticker.cancel()
        await holder
        return ticks

    assert asyncio.run(_closing(store, on_loop())) >= 20


def test_a_blocking_call_on_the_loop_is_refused_once_the_server_forbids_it(store: Store) -> None:
    store.forbid_blocking_calls_on_loop()

    async def on_loop() -> None:
        with pytest.raises(BlockingCallOnLoop, match=r"await store\.run"):
            store.device("device-1")
        assert await store.run(Store.device, "device-1") is not None
        assert await asyncio.to_thread(store.device, "device-1") is not None  # a worker thread may block

    asyncio.run(_closing(store, on_loop()))
    assert store.device("device-1") is not None  # off the loop (the CLI) it still may


async def _closing(store: Store, work: Awaitable[T]) -> T:
    try:
        return await work
    finally:
        await store.aclose()
