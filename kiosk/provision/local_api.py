"""The agent's Unix socket for the UI process: JSON lines, documented in docs/ui-socket.md.

The UI holds no key and no network connection of its own to the server; it learns what
to show from here and says it is alive with heartbeats, which the agent reports on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from kiosk.protocol import messages as m
from kiosk.protocol.errors import ProtocolError

log = logging.getLogger("kiosk.agent.ui")

UI_ALIVE_SECONDS = 15.0  # the UI sends a heartbeat every 5 s
#: A line longer than this closes the connection; a picture of the screen (base64) or an SDP
#: offer with its candidates fits inside, with room to answer an oversized message with "rejected".
LINE_LIMIT = 192 * 1024


class UiServer:
    def __init__(self, path: Path, status: Callable[[], m.AgentStatus],
                 upstream: Callable[[m.UiToAgent], Awaitable[None]],
                 liveness_changed: Callable[[], Awaitable[None]]) -> None:
        self.path = path
        self._status = status
        self._liveness_changed = liveness_changed  # so the server learns at once, not at the next heartbeat
        self._upstream = upstream  # call messages from the UI, on their way to the server
        self._clients: set[asyncio.StreamWriter] = set()
        self._server: asyncio.AbstractServer | None = None
        self.last_heartbeat: float | None = None
        self.screen_awake: bool | None = None

    @property
    def ui_alive(self) -> bool:
        return self.last_heartbeat is not None and time.monotonic() - self.last_heartbeat < UI_ALIVE_SECONDS

    async def start(self) -> None:
        self.path.unlink(missing_ok=True)
        self._server = await asyncio.start_unix_server(self._client, path=str(self.path), limit=LINE_LIMIT)
        os.chmod(self.path, 0o660)  # the UI user reaches it through the shared group

    async def stop(self) -> None:
        if self._server:
            self._server.close()
        for writer in list(self._clients):
            writer.close()
        self.path.unlink(missing_ok=True)

    @property
    def connected(self) -> bool:
        return bool(self._clients)

    def push_status(self) -> None:
        self.send(self._status())

    def send(self, message: m.AgentToUi) -> None:
        line = m.encode(message) + b"\n"
        for writer in list(self._clients):
            writer.write(line)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._clients.add(writer)
        try:
            while True:
                try:
                    line = await reader.readline()
                except ValueError:  # longer than LINE_LIMIT: the stream cannot be resynchronised
                    writer.write(m.encode(m.Rejected(reason="oversized", detail="line too long")) + b"\n")
                    break
                if not line:
                    break
                try:
                    message = m.UI_TO_AGENT.decode(line)
                except ProtocolError as exc:
                    writer.write(m.encode(m.Rejected(reason=exc.reason, detail=exc.detail[:300])) + b"\n")
                    continue
                match message:
                    case m.UiHeartbeat(screen_awake=awake):
                        self.last_heartbeat, self.screen_awake = time.monotonic(), awake
                    case m.UiHello():
                        self.last_heartbeat = time.monotonic()
                        await self._liveness_changed()
                        writer.write(m.encode(self._status()) + b"\n")
                    case m.GetStatus():  # asked by tools too (kiosk-agent status): not a sign of UI life
                        writer.write(m.encode(self._status()) + b"\n")
                    case _:  # a call message: the agent passes it on unchanged
                        self.last_heartbeat = time.monotonic()
                        await self._upstream(message)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._clients.discard(writer)
            if not self._clients:
                self.last_heartbeat = None  # the UI went away: it is not alive, whatever it said before
                await self._liveness_changed()
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
