"""The devices connected right now, and delivery of their queued commands.

One :class:`DeviceLink` per connected device. Commands are stored first (by the API or
the CLI, possibly in another process) and delivered from the store, so a command to an
offline device simply waits as pending until it is delivered or expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from kiosk.protocol import messages as m
from kiosk.server.store import Clock, Store

log = logging.getLogger("kiosk.server.hub")

SWEEP_INTERVAL_SECONDS = 0.5
SEEN_FLUSH_SECONDS = 2.0  # how stale the CLI's view of "online" may be


@dataclass(eq=False)
class DeviceLink:
    device_id: str
    cert_pem: str
    send: Callable[[m.ServerToDevice], Awaitable[None]]
    close: Callable[[], Awaitable[object]]
    connected_at: float = 0.0  # stamped by Hub.attach, on the hub's clock
    last_seen: float = 0.0
    state: str = "enrolled-unassigned"
    ui_alive: bool | None = None
    sent: set[str] = field(default_factory=set)  # command ids sent on this connection


class Hub:
    def __init__(self, store: Store, clock: Clock | None = None) -> None:
        self.store = store
        self.clock: Clock = clock or store.clock
        self.links: dict[str, DeviceLink] = {}
        self._dirty_seen: dict[str, tuple[float, str, bool]] = {}
        self._task: asyncio.Task[None] | None = None
        self._callbacks: set[asyncio.Future[None]] = set()  # referenced until done, or the loop may drop them
        self._revocations_checked_at = 0.0
        #: Called with the device id when a device's link goes away for good (not on a reconnect).
        self.on_detach: list[Callable[[str], Awaitable[None]]] = []

    # ------------------------------------------------------------- connections
    async def attach(self, link: DeviceLink) -> None:
        link.connected_at = self.clock()
        old = self.links.get(link.device_id)
        self.links[link.device_id] = link
        if old is not None:  # the device reconnected before we noticed the old link die
            await old.close()
        self.seen(link)

    def detach(self, link: DeviceLink) -> None:
        if self.links.get(link.device_id) is link:
            del self.links[link.device_id]
            self._dirty_seen[link.device_id] = (link.last_seen, link.state, False)
            for callback in self.on_detach:
                running = asyncio.ensure_future(callback(link.device_id))
                self._callbacks.add(running)
                running.add_done_callback(self._callbacks.discard)

    def seen(self, link: DeviceLink) -> None:
        link.last_seen = self.clock()
        self._dirty_seen[link.device_id] = (link.last_seen, link.state, True)

    async def disconnect(self, device_id: str) -> None:
        link = self.links.get(device_id)
        if link is not None:
            self.detach(link)
            await link.close()

    # ---------------------------------------------------------------- delivery
    async def deliver_pending(self, device_id: str) -> None:
        link = self.links.get(device_id)
        if link is None:
            return
        for row in self.store.pending_commands(device_id):
            await self._send_command(link, row.id, row.envelope)

    async def _send_command(self, link: DeviceLink, command_id: str, envelope: bytes) -> None:
        if command_id in link.sent:
            return
        link.sent.add(command_id)
        try:
            await link.send(m.CommandDelivery(envelope=m.Codec(m.SignedEnvelope).decode(envelope)))
        except ConnectionError:
            link.sent.discard(command_id)

    # ------------------------------------------------------------------- sweep
    def start(self) -> None:
        self._task = asyncio.create_task(self._sweep_forever(), name="hub-sweep")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for link in list(self.links.values()):
            self.detach(link)
            await link.close()
        self.flush_seen()

    async def _sweep_forever(self) -> None:
        last_flush = time.monotonic()
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_SECONDS)
            try:
                await self.sweep()
                if time.monotonic() - last_flush > SEEN_FLUSH_SECONDS:
                    self.flush_seen()
                    last_flush = time.monotonic()
            except Exception:  # a bad sweep must not stop future ones
                log.exception("sweep failed")

    async def sweep(self) -> None:
        """Expire old commands, deliver ones queued by another process, drop revoked devices."""
        self.store.expire_commands()
        for row in self.store.pending_commands():
            link = self.links.get(row.device_id)
            if link is not None:
                await self._send_command(link, row.id, row.envelope)
        # Revocations since the last sweep (the CLI may revoke from another process).
        since, self._revocations_checked_at = self._revocations_checked_at, self.clock() - 1.0
        for device_id in self.store.revoked_since(since):
            if device_id in self.links:
                log.info("closing link of revoked device %s", device_id)
                await self.disconnect(device_id)

    def flush_seen(self) -> None:
        dirty, self._dirty_seen = self._dirty_seen, {}
        self.store.record_seen(dirty)
