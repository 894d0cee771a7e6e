"""In-process stand-ins for what surrounds the server's logic: a clock the test sets, and
device and staff links that keep what the server sent them (as tests/ui/fake_agent.py
does for the screen). The store is the real one, on SQLite in the test's directory (or PostgreSQL)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from kiosk.server.hub import DeviceLink, Hub
from kiosk.server.store import Store

T = TypeVar("T")
START = 1_800_000_000.0  # a fixed wall time, so records can be compared exactly


@dataclass
class FakeClock:
    """Wall time that moves only when the test says so."""

    now: float = START

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Inbox:
    """What the server sent one party, in order; ``closed`` once the server closed it."""

    messages: list[object] = field(default_factory=list)
    closed: bool = False

    async def send(self, message: object) -> None:
        if self.closed:
            raise ConnectionError("closed")
        self.messages.append(message)

    async def close(self) -> None:
        self.closed = True

    def of(self, kind: type[T]) -> list[T]:
        return [msg for msg in self.messages if isinstance(msg, kind)]

    def last(self, kind: type[T]) -> T:
        found = self.of(kind)
        assert found, f"nothing of {kind.__name__} among {self.messages}"
        return found[-1]


class FakeDevice:
    """A device connected to the hub through a link that records what it was sent."""

    _serials = itertools.count(1)

    def __init__(self, store: Store, device_id: str) -> None:
        self.id = device_id
        self.inbox = Inbox()
        with store.tx() as conn:
            store.add_device(conn, device_id, format(next(self._serials), "x"), "(no certificate)", "cli:test")
        self.link = DeviceLink(device_id, "(no certificate)", self.inbox.send, self.inbox.close)

    async def connect(self, hub: Hub) -> None:
        await hub.attach(self.link)

    def new_connection(self) -> None:
        """The same unit, connecting again: a new link with an empty inbox."""
        self.inbox = Inbox()
        self.link = DeviceLink(self.id, "(no certificate)", self.inbox.send, self.inbox.close)


def open_store(directory: Path, clock: FakeClock, database: str | None = None) -> Store:
    """The real store on SQLite in ``directory``, or on the PostgreSQL ``database`` names."""
    directory.mkdir(parents=True, exist_ok=True)
    return Store.in_directory(directory, clock, database)

