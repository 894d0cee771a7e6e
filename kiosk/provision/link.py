"""The one mutual-TLS WebSocket to the municipality server, kept up for good.

Reconnects with exponential backoff and full jitter; tells in plain words why a
connection failed (an impostor server, a revoked unit, no network, a wrong clock).
It also keeps the difference between this unit's clock and the server's, measured
over this authenticated connection, so a unit without time sync still judges its
commands by the right time.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Awaitable, Callable

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from kiosk.protocol import backoff
from kiosk.protocol import messages as m
from kiosk.protocol.errors import ProtocolError
from kiosk.protocol.signing import CLOCK_SKEW_SECONDS
from kiosk.provision import clock

log = logging.getLogger("kiosk.agent.link")

FRAME_LIMIT = 4 * 1024 * 1024
CONNECT_TIMEOUT_SECONDS = 15.0
STABLE_AFTER_SECONDS = 30.0  # a connection that lasted this long resets the backoff


def explain(exc: BaseException, url: str) -> str:
    """A sentence a support person understands."""
    if isinstance(exc, ssl.SSLCertVerificationError) and clock.is_date_error(exc):
        return clock.describe(time.time(), None, clock.date_problem(exc))
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (f"refusing {url}: its certificate does not chain to this municipality's pinned root "
                f"({exc.verify_message}); something else is answering at that address")
    if isinstance(exc, InvalidStatus):
        code = exc.response.status_code
        if code in (401, 403):
            return f"the server refuses this unit (HTTP {code}): it may have been revoked; contact logistics"
        return f"the server answered HTTP {code}"
    if isinstance(exc, ssl.SSLError):
        return f"secure connection to {url} failed: {exc.reason or exc}"
    if isinstance(exc, (ConnectionRefusedError, TimeoutError, asyncio.TimeoutError)):
        return f"the server at {url} does not answer; retrying"
    if isinstance(exc, OSError):
        return f"no network path to {url}: {exc.strerror or exc}"
    if isinstance(exc, ConnectionClosed):
        return "the connection to the server was closed"
    return f"connection failed: {type(exc).__name__}: {exc}"


class ServerLink:
    def __init__(self, url: str, tls: Callable[[], ssl.SSLContext],
                 on_message: Callable[[m.ServerToDevice], Awaitable[None]],
                 on_connected: Callable[[], Awaitable[None]],
                 on_disconnected: Callable[[], None],
                 hello: Callable[[], m.Hello], heartbeat: Callable[[int], m.Heartbeat],
                 backoff_base: float = 1.0, backoff_cap: float = 60.0,
                 diagnose_clock: Callable[[ssl.SSLCertVerificationError], str] | None = None) -> None:
        self.url = url
        self._tls = tls
        self._on_message = on_message
        self._on_connected = on_connected
        self._on_disconnected = on_disconnected
        self._hello = hello
        self._heartbeat = heartbeat
        self._backoff = (backoff_base, backoff_cap)
        self._diagnose_clock = diagnose_clock  # blocking: it asks the server for its time
        self._ws: ClientConnection | None = None
        #: this unit's clock minus the server's, as last measured; None before the first connection
        self.clock_offset: float | None = None
        self.connected_since: float | None = None
        self.round_trip_ms: float | None = None
        self.last_error: str | None = None
        self._seq = 0

    @property
    def connected(self) -> bool:
        return self._ws is not None

    @property
    def clock_wrong(self) -> bool:
        return self.clock_offset is not None and abs(self.clock_offset) > CLOCK_SKEW_SECONDS

    def server_now(self) -> float:
        """The time by the server's clock when ours is known to be off, else by ours."""
        return time.time() - self.clock_offset if self.clock_offset is not None and self.clock_wrong else time.time()

    def measure_clock(self, offset: float) -> None:
        """Note this unit's clock minus the server's, as measured on the link; say when it goes wrong or right."""
        was_wrong, self.clock_offset = self.clock_wrong, offset
        if self.clock_wrong and not was_wrong:
            log.warning("clock problem: %s; commands are judged by the server's clock until time sync "
                        "corrects it (check that the unit reaches a time server, NTP)", clock.offset_words(offset))
        elif was_wrong and not self.clock_wrong:
            log.info("clock corrected: this unit's clock agrees with the server's again")

    async def send(self, message: m.DeviceToServer) -> bool:
        ws = self._ws
        if ws is None:
            return False
        try:
            await ws.send(m.encode(message).decode())
            return True
        except ConnectionClosed:
            return False

    async def run_forever(self) -> None:
        attempt = 0
        while True:
            started = time.monotonic()
            try:
                async with connect(self.url, ssl=self._tls(), max_size=FRAME_LIMIT,
                                   open_timeout=CONNECT_TIMEOUT_SECONDS, ping_interval=20,
                                   ping_timeout=20, user_agent_header=None,
                                   compression=None) as ws:  # the server takes none (device_api)
                    await self._session(ws)
            except asyncio.CancelledError:
                raise
            except (OSError, InvalidHandshake, ConnectionClosed, TimeoutError, ProtocolError) as exc:
                if isinstance(exc, ssl.SSLCertVerificationError) and clock.is_date_error(exc) and self._diagnose_clock:
                    self.last_error = await asyncio.to_thread(self._diagnose_clock, exc)
                else:
                    self.last_error = explain(exc, self.url)
                log.warning("%s", self.last_error)
            if time.monotonic() - started > STABLE_AFTER_SECONDS:
                attempt = 0
            wait = backoff.delay(attempt, *self._backoff)
            attempt += 1
            await asyncio.sleep(wait)

    async def _session(self, ws: ClientConnection) -> None:
        first = m.SERVER_TO_DEVICE.decode(await asyncio.wait_for(ws.recv(), CONNECT_TIMEOUT_SECONDS))
        if not isinstance(first, m.Welcome):
            raise ProtocolError("unexpected", f"expected welcome, got {type(first).__name__}")
        self._ws, self.connected_since, self.last_error = ws, time.time(), None
        self.measure_clock(time.time() - first.server_time)
        log.info("connected to %s", self.url)
        beat = asyncio.create_task(self._beat(first.heartbeat_interval))
        try:
            await self.send(self._hello())
            await self._on_connected()
            async for raw in ws:
                try:
                    message = m.SERVER_TO_DEVICE.decode(raw if isinstance(raw, bytes) else raw.encode())
                except ProtocolError as exc:
                    log.warning("server sent a bad message: %s", exc.reason)
                    await self.send(m.Rejected(reason=exc.reason, detail=exc.detail[:500]))
                    continue
                if isinstance(message, m.HeartbeatAck):
                    now = time.time()
                    self.round_trip_ms = (now - message.sent_at) * 1000
                    self.measure_clock((message.sent_at + now) / 2 - message.server_time)
                await self._on_message(message)
        finally:
            beat.cancel()
            self._ws, self.connected_since = None, None
            log.info("disconnected from %s", self.url)
            self._on_disconnected()

    async def beat_now(self) -> None:
        """Send a heartbeat at once: the server's view of the unit changed (e.g. the UI came or went)."""
        self._seq += 1
        await self.send(self._heartbeat(self._seq))

    async def _beat(self, interval: float) -> None:
        while True:
            await self.beat_now()
            await asyncio.sleep(interval)
