"""Several server processes as one: what must cross between them goes over NATS.

The database stays the truth: pending commands and call records live there, and each
process's sweep (kiosk.server.hub) delivers what waits for the units it holds, so
nothing is lost while NATS is away. NATS carries what is faster than a sweep, or
lives only while a unit is connected:

- ``kiosk.presence``: which process holds which unit, with its state and whether its
  screen runs, so a caregiver on one process can call a unit held by another;
- ``kiosk.to.<process>``: a message for a unit that process holds (a command just
  stored, a call message);
- ``kiosk.call``: a unit's call message, for the process running that call (the
  caregiver's);
- ``kiosk.alive``: each process's heartbeat. A process silent for
  :data:`PROCESS_SILENCE_SECONDS` is dead (``kill -9``, a pulled plug); its units get the
  grace a dropped link gets (hub.DETACH_GRACE_SECONDS) to come back through another
  process, and are offline after that;
- ``kiosk.calls``: which process runs which call. The calls of a dead process end on
  both sides with ``connection_lost``: the process holding the unit tells it, the first
  process by name writes the records of those in progress (kept in the database), and
  the caregiver's page, resuming through another process, is told so there;
- ``kiosk.presence.ask``: a process that (re)connects, or hears a process it does not
  know, asks all to tell their units and calls.

NATS going away (a restart, a blink) drops no unit's connection: the client reconnects
for ever, the blink is logged once in plain words, and on its return every process
tells its presence again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import re
import socket
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Final

import msgspec
import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError

from kiosk.protocol import messages as m
from kiosk.protocol.call import EndReason
from kiosk.server.calls import CallManager
from kiosk.server.hub import DETACH_GRACE_SECONDS, DeviceLink, Hub
from kiosk.server.store import Store, StoreUnavailable

log = logging.getLogger("kiosk.server.cluster")

ALIVE_INTERVAL_SECONDS: Final = 1.0
#: A process not heard for this long is dead (a loaded machine delays a heartbeat by seconds; a
#: process taken for dead by mistake would have its calls ended).
PROCESS_SILENCE_SECONDS: Final = 10.0
#: After the client gave up on a connection (it retries by itself otherwise), the next attempt.
CONNECT_RETRY_SECONDS: Final = 2.0
#: At a stop, how long what is being told may take to go out.
STOP_SECONDS: Final = 2.0
#: Units per presence message when a whole process's list is told.
PRESENCE_BATCH: Final = 500
#: What the client buffers while NATS is away; beyond it a message fails (the sweep covers commands).
PENDING_BYTES: Final = 8 * 1024 * 1024

PRESENCE, ASK, ALIVE, CALL, CALLS = "kiosk.presence", "kiosk.presence.ask", "kiosk.alive", "kiosk.call", "kiosk.calls"
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def to_process(process: str) -> str:
    return f"kiosk.to.{process}"


def check_name(name: str) -> str:
    """A process name fit for a NATS subject, or ValueError saying what is allowed."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"process name {name!r}: use 1-64 letters, digits, '-' or '_'")
    return name


class Unit(msgspec.Struct, frozen=True):
    """One unit as its process tells it: online with its facts, or gone."""

    device_id: str
    online: bool
    connected_at: float = 0.0
    last_seen: float = 0.0
    state: str = ""
    ui_alive: bool | None = None


class PresenceNews(msgspec.Struct, frozen=True):
    process: str
    units: list[Unit]


class Alive(msgspec.Struct, frozen=True):
    process: str
    leaving: bool = False  # stopping on purpose: bury it now, its units have the grace to come back


class OwnedCall(msgspec.Struct, frozen=True):
    call_id: str
    device_id: str
    running: bool


class CallNews(msgspec.Struct, frozen=True):
    process: str
    calls: list[OwnedCall]


_PRESENCE = msgspec.json.Decoder(PresenceNews)
_ALIVE = msgspec.json.Decoder(Alive)
_CALLS = msgspec.json.Decoder(CallNews)


@dataclass
class _Remote:
    process: str
    unit: Unit


async def _nothing() -> None:
    return None


class Cluster:
    """This process's part in the cluster: tells where its units are, learns where the others' are."""

    def __init__(self, url: str, process: str, hub: Hub, calls: CallManager,
                 grace: float = DETACH_GRACE_SECONDS) -> None:
        self.url, self.process = url, check_name(process)
        self.hub, self.calls, self.grace = hub, calls, grace
        self.where: dict[str, _Remote] = {}  # units held by other processes
        self.heard: dict[str, float] = {}  # other processes, when last heard (monotonic)
        self.calls_of: dict[str, dict[str, str]] = {}  # other processes' calls: call id -> device id
        self._listening_since: float | None = None  # connected to NATS since (monotonic)
        self.nc: Client | None = None
        self._tasks: set[asyncio.Future[None]] = set()
        self._down_since: float | None = None
        self._said_away = False  # that NATS does not answer: said once, until it answers
        self._main: asyncio.Task[None] | None = None
        self._stopping = False
        hub.elsewhere = self.link_elsewhere
        hub.forward = self.forward_command
        hub.on_presence.append(self._tell_presence)
        calls.elsewhere = self.forward_call_message
        calls.on_call.append(self._tell_call)

    # ------------------------------------------------------------------ life
    def start(self) -> None:
        self._main = asyncio.create_task(self._run(), name="cluster")

    async def stop(self) -> None:
        """Say we leave (the others give our units the grace to come back), and leave."""
        self._stopping = True
        if self._main is not None:
            self._main.cancel()
            with contextlib.suppress(asyncio.CancelledError, NatsError, OSError):
                await self._main
        with contextlib.suppress(ConnectionError):
            if self.connected:
                await self._publish(ALIVE, msgspec.json.encode(Alive(self.process, leaving=True)))
        if self._tasks:  # what was being told goes out, for a moment at most
            await asyncio.wait(list(self._tasks), timeout=STOP_SECONDS)
        if self.nc is not None:
            with contextlib.suppress(NatsError, OSError):
                await self.nc.drain()

    @property
    def connected(self) -> bool:
        return self.nc is not None and self.nc.is_connected

    async def _run(self) -> None:
        self.nc = await self._connect()
        await self.nc.subscribe(to_process(self.process), cb=self._for_our_unit)
        await self.nc.subscribe(PRESENCE, cb=self._presence)
        await self.nc.subscribe(ASK, cb=self._asked)
        await self.nc.subscribe(ALIVE, cb=self._alive)
        await self.nc.subscribe(CALL, cb=self._call_message)
        await self.nc.subscribe(CALLS, cb=self._call_news)
        self._listening_since = time.monotonic()
        await self._introduce()
        log.info("process %s joined the cluster through NATS at %s", self.process, self.url)
        while True:
            if self.connected:  # silence while we are cut off says nothing of the others
                try:
                    await self._publish(ALIVE, msgspec.json.encode(Alive(self.process)))
                    await self._bury_silent(time.monotonic())
                    await self._end_orphaned_calls()
                except ConnectionError as exc:
                    log.warning("cluster: %s", exc)
                except Exception:  # our heartbeat must go on, or the others take us for dead
                    log.exception("cluster: a heartbeat's work failed")
            await asyncio.sleep(ALIVE_INTERVAL_SECONDS)

    async def _connect(self) -> Client:
        """The client tries for ever (the first connection too); :meth:`_error` says why it waits."""
        while True:
            try:
                client = await nats.connect(
                    self.url, name=f"kiosk-server {self.process}", allow_reconnect=True,
                    max_reconnect_attempts=-1, reconnect_time_wait=1, connect_timeout=2,
                    pending_size=PENDING_BYTES, disconnected_cb=self._disconnected,
                    reconnected_cb=self._reconnected, error_cb=self._error)
                self._said_away = False
                return client
            except (NatsError, OSError) as exc:  # given up on (a URL it cannot use): said, and tried again
                await self._error(exc)
                await asyncio.sleep(CONNECT_RETRY_SECONDS)

    async def _disconnected(self) -> None:
        if self._down_since is None:
            self._down_since, self._said_away = time.monotonic(), True
            log.error("lost NATS at %s; units stay connected, commands wait in the database and reach units on "
                      "other processes by their sweep; reconnecting", self.url)

    async def _reconnected(self) -> None:
        down = time.monotonic() - self._down_since if self._down_since is not None else 0.0
        self._down_since, self._said_away = None, False
        log.warning("NATS answers again after %.1f s; telling the other processes where our units are", down)
        now = time.monotonic()
        self.heard = {process: now for process in self.heard}  # their silence was ours
        self._listening_since = now
        await self._introduce()

    async def _error(self, exc: BaseException) -> None:
        if self.connected or self._said_away:
            log.debug("NATS: %s", exc)
            return
        self._said_away = True
        log.error("NATS at %s does not answer (%s); this process serves its own units meanwhile and keeps trying",
                  self.url, exc or type(exc).__name__)

    async def _introduce(self) -> None:
        """Tell every unit we hold and call we run, and ask the others to tell theirs."""
        await self._tell_all()
        await self._publish(ASK, self.process.encode())

    async def _tell_all(self) -> None:
        units = [self._unit(link, True) for link in list(self.hub.links.values())]
        for start in range(0, len(units), PRESENCE_BATCH):
            news = PresenceNews(self.process, units[start:start + PRESENCE_BATCH])
            await self._publish(PRESENCE, msgspec.json.encode(news))
        calls = [OwnedCall(call_id, live.device_id, True) for call_id, live in list(self.calls.live.items())]
        await self._publish(CALLS, msgspec.json.encode(CallNews(self.process, calls)))

    # ------------------------------------------------------------- publishing
    async def _publish(self, subject: str, data: bytes, headers: dict[str, str] | None = None) -> None:
        """Publish, or raise ConnectionError in plain words (a caller's link-send contract)."""
        if self.nc is None:
            raise ConnectionError("not connected to NATS yet")
        try:
            await self.nc.publish(subject, data, headers=headers)
        except NatsError as exc:
            raise ConnectionError(f"NATS did not take the message: {exc or type(exc).__name__}") from None

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Future[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.warning("cluster: %s", exc)

    def _unit(self, link: DeviceLink, online: bool) -> Unit:
        return Unit(link.device_id, online, link.connected_at, link.last_seen, link.state, link.ui_alive)

    def _tell_presence(self, link: DeviceLink, online: bool) -> None:
        if self.nc is not None and not self._stopping:
            news = PresenceNews(self.process, [self._unit(link, online)])
            self._spawn(self._publish(PRESENCE, msgspec.json.encode(news)))

    def _tell_call(self, call_id: str, device_id: str, running: bool) -> None:
        if self.nc is not None and not self._stopping:
            news = CallNews(self.process, [OwnedCall(call_id, device_id, running)])
            self._spawn(self._publish(CALLS, msgspec.json.encode(news)))

    # ------------------------------------------------------- units elsewhere
    def link_elsewhere(self, device_id: str) -> DeviceLink | None:
        remote = self.where.get(device_id)
        if remote is None:
            return None
        unit = remote.unit
        return DeviceLink(device_id, "", functools.partial(self._send_elsewhere, remote.process, device_id),
                          _nothing, unit.connected_at, unit.last_seen, unit.state, unit.ui_alive)

    async def _send_elsewhere(self, process: str, device_id: str, message: m.ServerToDevice) -> None:
        await self._publish(to_process(process), m.encode(message), {"device": device_id})

    def forward_command(self, device_id: str, command_id: str, envelope: bytes) -> None:
        remote = self.where.get(device_id)
        if remote is not None:  # else it waits in the store for the unit to connect somewhere
            self._spawn(self._publish(to_process(remote.process), envelope,
                                      {"device": device_id, "command": command_id}))

    def forward_call_message(self, device_id: str, message: m.DeviceToServer) -> None:
        self._spawn(self._publish(CALL, m.encode(message), {"device": device_id}))

    # ------------------------------------------------------------- receiving
    async def _for_our_unit(self, msg: Msg) -> None:
        headers = msg.headers or {}
        device_id = headers.get("device", "")
        if "command" in headers:
            await self.hub.deliver(device_id, headers["command"], msg.data)
            return
        link = self.hub.links.get(device_id)
        if link is None:
            log.info("a message for device %s, which is not held here (any more)", device_id)
            return
        with contextlib.suppress(ConnectionError):  # the unit's detach tells the caller's process
            await link.send(m.SERVER_TO_DEVICE.decode(msg.data))

    async def _call_message(self, msg: Msg) -> None:
        device_id = (msg.headers or {}).get("device", "")
        message = m.DEVICE_TO_SERVER.decode(msg.data)
        if self.calls.runs(getattr(message, "call_id", "")):  # else another process's (or a late one)
            await self.calls.from_device(device_id, message)

    async def _presence(self, msg: Msg) -> None:
        news = _PRESENCE.decode(msg.data)
        if news.process == self.process:
            return
        self.heard[news.process] = time.monotonic()
        for unit in news.units:
            remote = self.where.get(unit.device_id)
            if unit.online:
                self.where[unit.device_id] = _Remote(news.process, unit)
                if unit.device_id in self.hub.links:  # it reconnected there before we saw it leave here
                    await self.hub.moved(unit.device_id)
            elif remote is not None and remote.process == news.process:
                del self.where[unit.device_id]
                self.hub.gone_elsewhere(unit.device_id, unit.last_seen, unit.state, record=False)

    async def _asked(self, msg: Msg) -> None:
        if msg.data.decode() != self.process:
            await self._tell_all()

    async def _alive(self, msg: Msg) -> None:
        alive = _ALIVE.decode(msg.data)
        process = alive.process
        if process == self.process:
            return
        if alive.leaving:
            await self._bury(process, "is leaving")
            return
        if process not in self.heard:  # new, or back after we took it for dead: all tell all again
            log.info("process %s is in the cluster", process)
            await self._publish(ASK, self.process.encode())
        self.heard[process] = time.monotonic()

    async def _call_news(self, msg: Msg) -> None:
        news = _CALLS.decode(msg.data)
        if news.process == self.process:
            return
        calls = self.calls_of.setdefault(news.process, {})
        for call in news.calls:
            if call.running:
                calls[call.call_id] = call.device_id
            else:
                calls.pop(call.call_id, None)

    # ------------------------------------------------------------------ death
    async def _bury_silent(self, now: float) -> None:
        """A process silent too long is dead."""
        for process, heard in list(self.heard.items()):
            if now - heard >= PROCESS_SILENCE_SECONDS:
                await self._bury(process, f"has not been heard for {now - heard:.0f} s: taken for dead")

    async def _bury(self, process: str, why: str) -> None:
        """A process is gone: its units get the grace, then are offline; the units we hold are told
        that its calls ended."""
        self.heard.pop(process, None)
        orphans = {d: r.unit for d, r in self.where.items() if r.process == process}
        for device_id in orphans:
            del self.where[device_id]
        log.warning("process %s %s; its %d units have %.0f s to come back through another process",
                    process, why, len(orphans), self.grace)
        if orphans:
            asyncio.get_running_loop().call_later(self.grace, self._orphans_not_back, orphans)
        for call_id, device_id in self.calls_of.pop(process, {}).items():
            link = self.hub.links.get(device_id)
            if link is not None:
                with contextlib.suppress(ConnectionError):
                    await link.send(m.CallEnded(call_id=call_id, reason=EndReason.CONNECTION_LOST))

    async def _end_orphaned_calls(self) -> None:
        """The first process by name ends the calls in progress (in the database) that no living
        process runs, once it has listened long enough to have heard every living one's."""
        now = time.monotonic()
        if (self._listening_since is None or now - self._listening_since < PROCESS_SILENCE_SECONDS
                or min([self.process, *self.heard]) != self.process):
            return
        running = set(self.calls.live).union(*(calls.keys() for calls in self.calls_of.values()))
        settled_before = self.hub.clock() - PROCESS_SILENCE_SECONDS  # not one announced a moment ago
        try:
            orphans = {row.id for row in await self.calls.store.run(Store.live_call_rows)
                       if row.id not in running and row.placed_at < settled_before}
            if orphans:
                await self.calls.end_orphans(orphans)
        except StoreUnavailable as exc:
            log.warning("calls of a dead process wait to be ended: %s", exc)

    def _orphans_not_back(self, orphans: dict[str, Unit]) -> None:
        for device_id, unit in orphans.items():
            if self.hub.reach(device_id) is None:
                self.hub.gone_elsewhere(device_id, unit.last_seen, unit.state, record=True)


def process_name_default() -> str:
    """This machine's name and our process id: unique among processes that run at once."""
    return check_name(re.sub(r"[^A-Za-z0-9_-]", "-", f"{socket.gethostname()}-{os.getpid()}")[-64:])
