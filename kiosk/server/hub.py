"""The devices connected right now, and delivery of their queued commands.

One :class:`DeviceLink` per connected device. Commands are stored first (by the API or
the CLI, possibly in another process) and delivered from the store, so a command to an
offline device simply waits as pending until it is delivered or expires.

A unit on rural 4G loses its connection for a few seconds now and then. A link that
drops is therefore *held* for :data:`DETACH_GRACE_SECONDS` before the unit counts as
gone: it stays online to the console, a call ringing or in progress goes on (media
never passes through here), and call messages for it wait and go out, in order, on
the connection the unit makes next. Only when the grace runs out is the unit offline
(``on_detach``). Commands are not held: they wait in the store as always.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final

from kiosk.protocol import messages as m
from kiosk.protocol import signing
from kiosk.protocol.machine import Clock
from kiosk.server.store import Store, StoreUnavailable

log = logging.getLogger("kiosk.server.hub")

SWEEP_INTERVAL_SECONDS = 0.5
SEEN_FLUSH_SECONDS = 2.0  # how stale the CLI's view of "online" may be
#: A dropped link is held this long before the unit is offline: a 4G blink is not "offline".
DETACH_GRACE_SECONDS: Final = 15.0
#: Call messages a held link keeps for the next connection (a call needs a handful).
HELD_MESSAGES: Final = 32
#: At a stop, how long what the units' going set off may take (a caregiver's socket that hangs
#: must not keep the process from exiting).
STOP_CALLBACKS_SECONDS: Final = 5.0
_HELD_KINDS = (m.CallRing, m.CallAccept, m.CallEnded)


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
    #: the public key of ``cert_pem``, taken once when the unit connects (its results are checked with it)
    device_key: signing.PublicKey | None = None


class _HeldMessages:
    """What a held link was asked to send: call messages wait, anything else fails as on a dead link."""

    def __init__(self) -> None:
        self.messages: list[m.ServerToDevice] = []

    async def send(self, message: m.ServerToDevice) -> None:
        if not isinstance(message, _HELD_KINDS) or len(self.messages) >= HELD_MESSAGES:
            raise ConnectionError("the unit's link dropped; it has not reconnected yet")
        self.messages.append(message)

    async def close(self) -> None:
        return None


class Hub:
    def __init__(self, store: Store, clock: Clock | None = None,
                 detach_grace: float = DETACH_GRACE_SECONDS) -> None:
        self.store = store
        self.clock: Clock = clock or store.clock
        self.detach_grace = detach_grace
        self.links: dict[str, DeviceLink] = {}
        self.attaches = 0  # connections made so far: waves of them are what the runtime freezes
        #: Units whose link dropped, held within the grace: their stand-in link and its timer.
        self.held: dict[str, tuple[_HeldMessages, asyncio.TimerHandle]] = {}
        self._dirty_seen: dict[str, tuple[float, str, bool]] = {}
        self._task: asyncio.Task[None] | None = None
        self._callbacks: set[asyncio.Future[None]] = set()  # referenced until done, or the loop may drop them
        self._revocations_checked_at = 0.0
        #: Called with the device id when a device's link goes away for good (not on a reconnect).
        self.on_detach: list[Callable[[str], Awaitable[None]]] = []
        #: Told when a unit connects (True), goes (False), or its state or screen changes (True):
        #: other processes learn from it where the unit is (kiosk.server.cluster).
        self.on_presence: list[Callable[[DeviceLink, bool], None]] = []
        self._announced: dict[str, tuple[str, bool | None]] = {}
        #: A unit held by another process, as a link whose ``send`` goes there (None: not held anywhere).
        self.elsewhere: Callable[[str], DeviceLink | None] = lambda _device_id: None
        #: Hands a command just stored to the process that holds its unit (the store stays the truth).
        self.forward: Callable[[str, str, bytes], None] | None = None

    # ------------------------------------------------------------- connections
    async def attach(self, link: DeviceLink) -> None:
        link.connected_at = self.clock()
        self.attaches += 1
        old = self.links.get(link.device_id)
        self.links[link.device_id] = link
        held = self.held.pop(link.device_id, None)
        if held is not None:  # back within the grace: what waited goes out first, in order
            messages, timer = held
            timer.cancel()
            log.info("device %s reconnected within the grace; %d call messages follow",
                     link.device_id, len(messages.messages))
            for message in messages.messages:
                with contextlib.suppress(ConnectionError):
                    await link.send(message)
        elif old is not None:  # the device reconnected before we noticed the old link die
            await old.close()
        self.seen(link)

    def reach(self, device_id: str) -> DeviceLink | None:
        """The unit's link: here, or on the process that holds it; None if no process does."""
        return self.links.get(device_id) or self.elsewhere(device_id)

    async def moved(self, device_id: str) -> None:
        """Another process holds the unit now: let our old link go, without calling the unit gone."""
        link = self.links.pop(device_id, None)
        held = self.held.pop(device_id, None)
        self._announced.pop(device_id, None)
        if held is not None:
            held[1].cancel()
        if link is not None:
            log.info("device %s is held by another process now", device_id)
            await link.close()

    def detach(self, link: DeviceLink, *, grace: bool = True) -> None:
        """The link's connection ended; with ``grace``, hold the unit online for a while."""
        if self.links.get(link.device_id) is not link:
            return
        if not grace or self.detach_grace <= 0:
            self._gone(link)
            return
        messages = _HeldMessages()
        stand_in = dataclasses.replace(link, send=messages.send, close=messages.close, sent=set())
        self.links[link.device_id] = stand_in
        timer = asyncio.get_running_loop().call_later(self.detach_grace, self._grace_over, stand_in)
        self.held[link.device_id] = (messages, timer)
        log.info("device %s: link dropped; held for %.0f s", link.device_id, self.detach_grace)

    def _grace_over(self, stand_in: DeviceLink) -> None:
        if self.links.get(stand_in.device_id) is stand_in:
            self.held.pop(stand_in.device_id, None)
            log.info("device %s did not reconnect within the grace: offline", stand_in.device_id)
            self._gone(stand_in)

    def _gone(self, link: DeviceLink) -> None:
        del self.links[link.device_id]
        held = self.held.pop(link.device_id, None)
        if held is not None:
            held[1].cancel()
        self._dirty_seen[link.device_id] = (link.last_seen, link.state, False)
        self._announced.pop(link.device_id, None)
        for tell in self.on_presence:
            tell(link, False)
        self._tell_detached(link.device_id)

    def gone_elsewhere(self, device_id: str, last_seen: float, state: str, *, record: bool) -> None:
        """A unit another process held is gone (that process said so, or died): what waits on it
        here ends (a call placed here). ``record``: write it offline (its process cannot)."""
        if device_id in self.links:
            return  # it came back here meanwhile
        if record:
            self._dirty_seen[device_id] = (last_seen, state, False)
        self._tell_detached(device_id)

    def _tell_detached(self, device_id: str) -> None:
        for callback in self.on_detach:
            running = asyncio.ensure_future(callback(device_id))
            self._callbacks.add(running)
            running.add_done_callback(self._callbacks.discard)

    def seen(self, link: DeviceLink) -> None:
        link.last_seen = self.clock()
        self._dirty_seen[link.device_id] = (link.last_seen, link.state, True)
        if self.on_presence and self._announced.get(link.device_id) != (link.state, link.ui_alive):
            self._announced[link.device_id] = (link.state, link.ui_alive)
            for tell in self.on_presence:
                tell(link, True)

    async def disconnect(self, device_id: str) -> None:
        link = self.links.get(device_id)
        if link is not None:
            self.detach(link, grace=False)  # we close it: no reconnect is coming
            await link.close()

    # ---------------------------------------------------------------- delivery
    async def deliver_pending(self, device_id: str) -> None:
        link = self.links.get(device_id)
        if link is None:
            return
        for row in await self.store.run(Store.pending_commands, device_id):
            await self._send_command(link, row.id, row.envelope)

    async def deliver(self, device_id: str, command_id: str, envelope: bytes) -> None:
        """Send a command just stored, if its device is connected (else the store keeps it pending)."""
        link = self.links.get(device_id)
        if link is not None:
            await self._send_command(link, command_id, envelope)
        elif self.forward is not None:
            self.forward(device_id, command_id, envelope)

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
            self.detach(link, grace=False)
            await link.close()
        if self._callbacks:  # what the units' going set off (a call's record) is written before the store closes
            await asyncio.wait(self._callbacks, timeout=STOP_CALLBACKS_SECONDS)
        try:
            await self.flush_seen()
        except StoreUnavailable as exc:  # "online" flags stay as they were; the next start corrects them
            log.warning("at stop: %s", exc)

    async def _sweep_forever(self) -> None:
        last_flush = time.monotonic()
        database_down = False
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_SECONDS)
            try:
                await self.sweep()
                if time.monotonic() - last_flush > SEEN_FLUSH_SECONDS:
                    await self.flush_seen()
                    last_flush = time.monotonic()
                if database_down:
                    log.warning("the database answers again; queued commands go out now")
                    database_down = False
            except StoreUnavailable as exc:  # said once, in plain words, and tried again every sweep
                if not database_down:
                    log.error("%s; connected units stay connected, commands wait in the database", exc)
                    database_down = True
            except Exception:  # a bad sweep must not stop future ones
                log.exception("sweep failed")

    async def sweep(self) -> None:
        """Expire old commands, deliver ones queued by another process, drop revoked devices."""
        await self.store.run(Store.expire_commands)
        # Ids only: most pending commands wait for units that are offline, or were sent already.
        deliverable = await self.store.run(Store.deliverable_commands)
        unsent = [(command_id, self.links[device_id]) for command_id, device_id in deliverable
                  if device_id in self.links and command_id not in self.links[device_id].sent]
        if unsent:
            envelopes = await self.store.run(Store.envelopes, [command_id for command_id, _ in unsent])
            for command_id, link in unsent:
                await self._send_command(link, command_id, envelopes[command_id])
        # Revocations since the last sweep (the CLI may revoke from another process).
        since, self._revocations_checked_at = self._revocations_checked_at, self.clock() - 1.0
        for device_id in await self.store.run(Store.revoked_since, since):
            if device_id in self.links:
                log.info("closing link of revoked device %s", device_id)
                await self.disconnect(device_id)

    async def flush_seen(self) -> None:
        dirty, self._dirty_seen = self._dirty_seen, {}
        try:
            await self.store.run(Store.record_seen, dirty)
        except StoreUnavailable:
            self._dirty_seen = {**dirty, **self._dirty_seen}  # written at the next flush; newer news wins
            raise
