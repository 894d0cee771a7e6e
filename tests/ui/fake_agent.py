"""A stand-in for the device agent's UI socket: a real asyncio Unix-socket server
speaking the real messages (kiosk.protocol.messages), with everything the UI
sent kept for the test to look at."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import TypeVar

from kiosk.protocol import messages as m

T = TypeVar("T")

CITIZEN = "Inger Hansen"  # must never appear in the UI's output


def status(server_online: bool = True) -> m.AgentStatus:
    return m.AgentStatus(state="assigned", server_online=server_online, citizen_name=CITIZEN,
                         contact_staff=["Anne Sygeplejerske"])


class FakeAgent:
    def __init__(self, path: Path, status: m.AgentStatus | None = None) -> None:
        self.path = path
        self.status = status or globals()["status"]()
        self.received: list[m.UiToAgent] = []
        self.connections = 0
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.AbstractServer | None = None
        self._arrived = asyncio.Event()

    async def start(self) -> FakeAgent:
        self._server = await asyncio.start_unix_server(self._client, path=str(self.path), limit=256 * 1024)
        return self

    async def stop(self) -> None:
        """Close the socket and every connection (the agent restarting)."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in self._writers:
            writer.close()
        self._writers.clear()
        self.path.unlink(missing_ok=True)

    async def send(self, message: m.AgentToUi) -> None:
        await self.send_raw(m.encode(message) + b"\n")

    async def send_raw(self, line: bytes) -> None:
        assert self._writers, "no UI is connected"
        for writer in self._writers:
            writer.write(line)
            await writer.drain()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        try:
            while line := await reader.readline():
                message = m.UI_TO_AGENT.decode(line)  # a bad line from the UI fails the test
                self.received.append(message)
                self._arrived.set()
                if isinstance(message, (m.UiHello, m.GetStatus)):
                    writer.write(m.encode(self.status) + b"\n")
                    await writer.drain()
        except ConnectionError:
            pass
        finally:
            if writer in self._writers:
                self._writers.remove(writer)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def of_type(self, kind: type[T]) -> list[T]:
        return [msg for msg in self.received if isinstance(msg, kind)]

    def calls(self) -> list[m.UiToAgent]:
        """The call messages, in the order the UI sent them."""
        return [msg for msg in self.received if isinstance(msg, m.CALL_UPSTREAM)]

    async def wait_for(self, kind: type[T], count: int = 1, timeout: float = 10.0) -> T:
        """The ``count``-th message of ``kind`` from the UI, waiting at most ``timeout``."""
        deadline = time.monotonic() + timeout
        while len(found := self.of_type(kind)) < count:
            left = deadline - time.monotonic()
            assert left > 0, f"no {kind.__name__} #{count} from the UI within {timeout} s; got {self.received}"
            self._arrived.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), min(left, 0.5))
        return found[count - 1]
