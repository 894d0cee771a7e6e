"""The UI's end of the agent's Unix socket (JSON lines, see docs/ui-socket.md).

:class:`AgentClient` connects (retrying with a short backoff while the agent
starts or restarts), says :class:`~kiosk.protocol.messages.UiHello`, keeps
sending :class:`~kiosk.protocol.messages.UiHeartbeat` every 5 s so the agent
can tell the server the UI is alive (each followed by
:class:`~kiosk.protocol.messages.GetStatus`), and hands every message from the agent to
its consumer through :meth:`AgentClient.events`. The connection coming and
going is an event too (:class:`~kiosk.ui.controller.AgentConnected`,
:class:`~kiosk.ui.controller.AgentLost`), so the screen can say "offline".

A line from the agent that is not a valid message is logged (its reason, never
its content) and skipped; the connection stays up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Final, TypeAlias

import kiosk
from kiosk.protocol import backoff
from kiosk.protocol import messages as m
from kiosk.protocol.errors import ProtocolError
from kiosk.ui.controller import AgentConnected, AgentLost

log = logging.getLogger("kiosk.ui.agent")

#: The agent reports "UI not responding" after 15 s without a line from us.
HEARTBEAT_SECONDS: Final = 5.0
#: Reconnect waits: full jitter up to this, so a restarted agent is found within ~1 s.
RETRY_BASE: Final = 0.05
RETRY_CAP: Final = 1.0
#: A line from the agent longer than this is refused (the agent's own limit on messages).
LINE_LIMIT: Final = m.MAX_MESSAGE_BYTES + 1

AgentEvent: TypeAlias = m.AgentToUi | AgentConnected | AgentLost


class AgentClient:
    """One connection at a time to the agent's socket at ``path``."""

    def __init__(
        self,
        path: Path,
        *,
        ui_version: str = kiosk.__version__,
        screen_awake: Callable[[], bool] = lambda: True,
        heartbeat_interval: float = HEARTBEAT_SECONDS,
        retry_base: float = RETRY_BASE,
        retry_cap: float = RETRY_CAP,
    ) -> None:
        self.path = path
        self.ui_version = ui_version
        self.screen_awake = screen_awake
        self.heartbeat_interval = heartbeat_interval
        self.retry_base = retry_base
        self.retry_cap = retry_cap
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._send_lock = asyncio.Lock()
        self._closed = asyncio.Event()  # an event, not a flag: close() may come during any await
        self.bad_lines = 0  # lines from the agent that were not valid messages

    @property
    def connected(self) -> bool:
        return self._writer is not None and not self._writer.is_closing()

    async def connect(self) -> None:
        """Connect, retrying until the agent answers; then hello and heartbeats."""
        attempt = 0
        while True:
            if self._closed.is_set():
                raise ConnectionError("the agent client is closed")
            try:
                reader, writer = await asyncio.open_unix_connection(str(self.path), limit=LINE_LIMIT)
                break
            except OSError as exc:  # not there yet, refused, or no permission
                wait = backoff.delay(attempt, self.retry_base, self.retry_cap)
                if attempt == 0 or attempt % 50 == 0:
                    log.info("agent socket %s not reachable (%s); retrying", self.path, exc.strerror or exc)
                attempt += 1
                await asyncio.sleep(wait)
        self._reader, self._writer = reader, writer
        if not await self.send(m.UiHello(ui_version=self.ui_version)):
            raise ConnectionError("the agent closed the socket before our hello")
        self._heartbeat = asyncio.create_task(self._beat(), name="ui-heartbeat")
        log.info("connected to the agent")

    async def send(self, message: m.UiToAgent) -> bool:
        """Send one message; False if there is no connection (the message is dropped)."""
        writer = self._writer
        if writer is None or writer.is_closing():
            log.warning("not connected to the agent: %s dropped", _kind(message))
            return False
        async with self._send_lock:  # whole lines only, even from concurrent senders
            try:
                writer.write(m.encode(message) + b"\n")
                await writer.drain()
            except (ConnectionError, OSError) as exc:
                log.warning("sending %s to the agent failed: %s", _kind(message), exc)
                await self._drop()
                return False
        return True

    async def events(self) -> AsyncIterator[AgentEvent]:
        """Messages from the agent, with the connection's ups and downs, until :meth:`close`.

        Reconnects by itself: after :class:`AgentLost` comes :class:`AgentConnected`
        as soon as the agent is back.
        """
        while not self._closed.is_set():
            if not self.connected:
                try:
                    await self.connect()
                except ConnectionError:
                    if self._closed.is_set():
                        return
                    await self._drop()
                    yield AgentLost()
                    await asyncio.sleep(self.retry_cap)  # it accepts and hangs up at once: do not spin
                    continue
                yield AgentConnected()
            reader = self._reader
            assert reader is not None
            try:
                line = await reader.readline()
            except ValueError:
                # Longer than LINE_LIMIT: asyncio discarded what it buffered; the
                # rest of the line arrives as a bad line of its own and is skipped.
                self.bad_lines += 1
                log.warning("skipped an oversized line from the agent")
                continue
            except (ConnectionError, OSError):
                line = b""
            if not line:
                if self._closed.is_set():
                    return
                log.warning("the agent closed the socket; reconnecting")
                await self._drop()
                yield AgentLost()
                continue
            try:
                message = m.AGENT_TO_UI.decode(line)
            except ProtocolError as exc:
                self.bad_lines += 1
                log.warning("skipped a bad line from the agent: %s", exc.reason)
                continue
            yield message

    async def close(self) -> None:
        self._closed.set()
        await self._drop()

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            if not await self.send(m.UiHeartbeat(screen_awake=bool(self.screen_awake()))):
                return
            # The agent pushes status when it changes, but not when its server link
            # drops; asking each time keeps the offline screen at most one beat late.
            if not await self.send(m.GetStatus()):
                return

    async def _drop(self) -> None:
        heartbeat, self._heartbeat = self._heartbeat, None
        if heartbeat is not None and heartbeat is not asyncio.current_task():
            heartbeat.cancel()
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()


def _kind(message: m.UiToAgent) -> str:
    return str(message.__struct_config__.tag)
