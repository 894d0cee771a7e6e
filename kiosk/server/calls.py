"""Calls on the server: who may call whom, the signaling relay, and the call records.

The decisions are the pure state machine's (kiosk.protocol.call); this module feeds it
events from the staff socket and the device link, carries out its effects, and keeps
the timers. SDP passes through untouched; media never touches the server.

Since media never touches the server, a call in progress must outlive it: a call whose
media flows is kept in the store (``live_calls``) until its record is written, a
restarted server takes it up again, the unit's agent reconnects by itself and the
caregiver's page sends :class:`~kiosk.protocol.messages.CallResume` on a new socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from kiosk.protocol import call as c
from kiosk.protocol import messages as m
from kiosk.protocol.machine import Clock
from kiosk.server import turn
from kiosk.server.hub import Hub
from kiosk.server.store import CallRow, CitizenRow, LiveCallRow, Store

log = logging.getLogger("kiosk.server.calls")

StaffSend = Callable[[m.ServerToStaff], Awaitable[None]]
#: After a call ends its peers still report quality; a late report is accepted this long.
QUALITY_GRACE_SECONDS = 120.0
#: A caregiver whose call socket dropped in a call has this long to resume it.
STAFF_RESUME_GRACE_SECONDS = 10.0
#: After a restart, the sides of a call taken up have this long to come back: the unit's
#: reconnect backoff reaches 60 s while the server is down, and media flows meanwhile.
TAKEN_UP_GRACE_SECONDS = 90.0


@dataclass(frozen=True)
class TurnConfig:
    host: str
    port: int
    secret: str
    relay_only: bool = False

    def ice_servers(self, user_id: str, now: float) -> list[m.IceServer]:
        creds = turn.issue_credentials(self.secret, user_id, now=now)
        return turn.ice_servers(self.host, self.port, creds)


@dataclass(frozen=True)
class Caller:
    username: str
    display_name: str
    role: str


@dataclass
class LiveCall:
    id: str
    caller: Caller
    citizen_id: str
    device_id: str
    staff: StaffSend
    machine: c.Call
    ring_offer: str | None = None  # the unit's offer made while it rang (CallOffer): pre-connecting
    answer_offer: str | None = None  # its offer in the answer (an older unit, or a failed pre-connection)
    screen_awake: bool | None = None
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)
    #: Held while the call's row is written: its writes land in the order its events came,
    #: so a slow "in progress" write never lands after the record that ended the call.
    writing: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)
    #: Set once its record is written (or its writing failed): a quality report waits for it.
    recorded: asyncio.Event = field(default_factory=asyncio.Event, repr=False)


async def _not_resumed(message: m.ServerToStaff) -> None:
    """The staff side of a call taken up after a restart, until the caregiver resumes it."""
    raise ConnectionError("the caregiver has not resumed this call yet")


class CallNotPlaced(Exception):
    """Staff may not, or cannot, call this citizen; ``code`` says which for the browser."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class CallManager:
    def __init__(self, store: Store, hub: Hub, config: c.CallConfig, turn_config: TurnConfig | None,
                 clock: Clock | None = None, take_up: bool = True) -> None:
        """``take_up``: take up the calls in progress the store holds (after a restart, at
        :meth:`take_up`); a process among several does not (they may be another's),
        kiosk.server.cluster ends a dead one's."""
        self.store = store
        self.hub = hub
        self.clock: Clock = clock or store.clock
        self.config = config
        self.turn = turn_config
        self.live: dict[str, LiveCall] = {}
        self.staff_resume_grace = STAFF_RESUME_GRACE_SECONDS
        self.taken_up_grace = TAKEN_UP_GRACE_SECONDS
        self._taken_up: set[str] = set()  # calls taken up after a restart, until both sides are back
        self._cut_off: set[str] = set()  # calls found ringing or connecting after a restart: ended at start
        self._started_at = self.clock()
        self._tasks: set[asyncio.Future[None]] = set()  # referenced until done
        self._ended: dict[str, tuple[float, LiveCall]] = {}  # call id -> (ended at, the call), for quality
        hub.on_detach.append(self.device_gone)
        #: Told of each call placed here (True) and ended here (False): call id, device id.
        self.on_call: list[Callable[[str, str, bool], None]] = []
        #: Hands a unit's call message to the process running that call (kiosk.server.cluster).
        self.elsewhere: Callable[[str, m.DeviceToServer], None] | None = None
        self._take_up_on_start = take_up

    async def take_up(self) -> None:
        """Before serving, after a restart: the calls whose media was flowing go on, waiting for
        their caregiver; those still ringing or connecting cannot (their ring and their setup went
        with the old process), and are ended with their record once serving (:meth:`start`)."""
        if not self._take_up_on_start:
            return
        self._take_up_on_start = False
        for row in await self.store.run(Store.live_call_rows):
            self._take_up(row)
            if row.connected_at is None:
                self._cut_off.add(row.id)
                log.info("call %s was still ringing or connecting when the server stopped", row.id)
            else:
                self._taken_up.add(row.id)
                log.info("call %s in progress taken up again", row.id)

    def _take_up(self, row: LiveCallRow) -> LiveCall:
        state = (c.CallState.IN_CALL if row.connected_at is not None
                 else c.CallState.CONNECTING if row.answered_at is not None else c.CallState.RINGING)
        machine = c.Call(config=self.config, state=state, placed_at=row.placed_at,
                         rang_at=row.rang_at, answered_at=row.answered_at, connected_at=row.connected_at)
        live = self.live[row.id] = LiveCall(row.id, Caller(row.caller, row.caller_name, row.caller_role),
                                            row.citizen_id, row.device_id, _not_resumed, machine,
                                            screen_awake=row.screen_awake)
        return live

    async def end_orphans(self, call_ids: set[str]) -> None:
        """End calls whose process died: both sides are told (the caregiver when their page asks
        to resume), and each gets its record: the connection lost if media flowed, else the
        server stopped."""
        for row in await self.store.run(Store.live_call_rows):
            if row.id in call_ids and row.id not in self.live:
                log.info("call %s: its process is gone; ended", row.id)
                await self._feed(self._take_up(row), c.ProcessLost())

    async def start(self) -> None:
        """Once serving: end the calls cut off by the restart, and (later) those taken up whose
        unit or caregiver is not back in time."""
        for call_id in sorted(self._cut_off):
            await self._feed(self.live[call_id], c.ProcessLost())
        self._cut_off.clear()
        if self._taken_up:
            asyncio.get_running_loop().call_later(
                self.taken_up_grace, lambda: self._hold(asyncio.ensure_future(self.settle_taken_up_calls())))

    async def settle_taken_up_calls(self) -> None:
        """End each call taken up after the restart whose side has not come back within
        :attr:`taken_up_grace` on our clock: without this, a unit that never returns (unplugged
        while the server was down) would stay busy, and its record unwritten, for ever."""
        if self.clock() < self._started_at + self.taken_up_grace:
            return
        for call_id in sorted(self._taken_up):
            live = self.live.get(call_id)
            if live is None:
                continue
            if self.hub.reach(live.device_id) is None:
                log.info("call %s: its unit did not come back after the restart", call_id)
                await self._feed(live, c.DeviceOffline())
            elif live.staff is _not_resumed:
                log.info("call %s: its caregiver did not come back after the restart; hung up", call_id)
                await self._feed(live, c.HangUp(c.Side.STAFF))
        self._taken_up.clear()

    def _ice(self, leg: str) -> tuple[list[m.IceServer], bool]:
        if self.turn is None:
            return [], False  # host candidates only: fine on one network, never a public STUN server
        return self.turn.ice_servers(leg, self.clock()), self.turn.relay_only

    def _busy_device(self, device_id: str) -> bool:
        return any(lc.device_id == device_id for lc in self.live.values())

    # ----------------------------------------------------------------- staff side
    async def place(self, caller: Caller, citizen_id: str, staff: StaffSend) -> str:
        citizen = await self.store.run(_callee, caller, citizen_id)
        if citizen.device_id is None:
            raise CallNotPlaced("no-device", "this citizen has no screen assigned")
        call_id = str(uuid.uuid4())
        ice, relay_only = self._ice(f"staff-{call_id}")
        busy = self._busy_device(citizen.device_id)
        live = LiveCall(call_id, caller, citizen_id, citizen.device_id, staff, c.Call(config=self.config))
        self.live[call_id] = live
        for tell in self.on_call:
            tell(call_id, citizen.device_id, True)
        await staff(m.CallPlaced(call_id=call_id, citizen_name=citizen.name, ice_servers=ice, relay_only=relay_only))
        link = self.hub.reach(citizen.device_id)
        if link is None:
            await self._feed(live, c.DeviceOffline())
        elif busy:
            await self._feed(live, c.Busy())
        elif link.ui_alive is False:  # its agent said so: it cannot ring, and the caller is told now
            await self._feed(live, c.ScreenNotRunning())
        else:
            await self._feed(live, c.Ring())
        return call_id

    async def from_staff(self, username: str, message: m.StaffToServer) -> None:
        if isinstance(message, m.CallQualityReport):
            await self._quality(message, "quality_staff", lambda caller, _device: caller == username)
            return
        live = self.live.get(getattr(message, "call_id", ""))
        if live is None or live.caller.username != username:
            return  # a late message for a call that has ended: nothing to do
        match message:
            case m.CallAccept(sdp=sdp):
                await self._to_device(live.device_id, m.CallAccept(call_id=live.id, sdp=sdp))
            case m.CallConnected():
                await self._feed(live, c.MediaConnected())
            case m.CallHangUp(reason="media-failed"):
                await self._feed(live, c.MediaFailed())
            case m.CallHangUp():
                event: c.Event = c.HangUp(c.Side.STAFF) if live.machine.state is c.CallState.IN_CALL \
                    else c.Cancel()
                await self._feed(live, event)

    async def resume(self, caller: Caller, call_id: str, staff: StaffSend) -> bool:
        """The caregiver's new socket takes up their call again; whether it is still going.

        A call that ended meanwhile is told as it ended, with its record's facts."""
        live = self.live.get(call_id)
        if live is not None and live.caller.username == caller.username:
            live.staff = staff
            log.info("call %s resumed by its caregiver", call_id)
            return True
        record = await self.store.run(Store.call_record, call_id)
        if record is not None and record.caller == caller.username:
            facts = m.convert(json.loads(record.facts), m.DeviceFacts) if record.facts else None
            with contextlib.suppress(ConnectionError):
                await staff(m.CallEnded(call_id=call_id, reason=c.EndReason(record.end_reason), facts=facts))
        elif record is None and live is None:  # nobody runs it: its process died (a cluster's), and its record follows
            with contextlib.suppress(ConnectionError):
                await staff(m.CallEnded(call_id=call_id, reason=c.EndReason.CONNECTION_LOST))
        return False

    async def staff_gone(self, call_id: str, staff: StaffSend | None = None) -> None:
        """The caregiver's socket for ``call_id`` closed without a hang-up.

        Before media flows, that is withdrawing the call. In a call, media goes on
        peer to peer, so the page is given :attr:`staff_resume_grace` to come back
        (a blink of the caregiver's network) before it counts as hanging up; a page
        that is closed says so itself (it sends its hang-up on ``pagehide``)."""
        live = self.live.get(call_id)
        if live is None or (staff is not None and live.staff != staff):
            return  # over, or moved to another socket of theirs
        if live.machine.state is not c.CallState.IN_CALL or self.staff_resume_grace <= 0:
            await self._feed(live, c.HangUp(c.Side.STAFF))
            return
        live.staff = _not_resumed
        asyncio.get_running_loop().call_later(self.staff_resume_grace, self._staff_not_back, live)

    def _staff_not_back(self, live: LiveCall) -> None:
        if self.live.get(live.id) is live and live.staff is _not_resumed:
            log.info("call %s: the caregiver did not come back; hung up", live.id)
            self._hold(asyncio.ensure_future(self._feed(live, c.HangUp(c.Side.STAFF))))

    # ---------------------------------------------------------------- device side
    async def from_device(self, device_id: str, message: m.DeviceToServer) -> None:
        if not self.runs(getattr(message, "call_id", "")) and self.elsewhere is not None:
            self.elsewhere(device_id, message)  # the caregiver's process runs this call
            return
        if isinstance(message, m.CallQualityReport):
            await self._quality(message, "quality_device", lambda _caller, device: device == device_id)
            return
        live = self.live.get(getattr(message, "call_id", ""))
        if live is None or live.device_id != device_id:
            return
        match message:
            case m.CallRinging(screen_awake=awake):
                live.screen_awake = awake
                await self._feed(live, c.RingAck())
            case m.CallOffer(sdp=sdp):
                if live.machine.state is c.CallState.RINGING:  # after the answer it is stale
                    live.ring_offer = sdp
                await self._feed(live, c.Offered())
            case m.CallAnswer(sdp=sdp):
                if live.machine.state is c.CallState.RINGING:  # a repeated answer changes nothing
                    live.answer_offer = sdp
                await self._feed(live, c.Answer())
            case m.CallConnected():
                await self._feed(live, c.MediaConnected())
            case m.CallHangUp(reason="media-failed"):
                await self._feed(live, c.MediaFailed())
            case m.CallHangUp(reason="unit-wiped"):
                await self._feed(live, c.UnitWiped())
            case m.CallHangUp():
                await self._feed(live, c.HangUp(c.Side.CITIZEN))

    def runs(self, call_id: str) -> bool:
        """Whether this process runs the call (or ran it lately: its quality reports come here)."""
        return call_id in self.live or call_id in self._ended

    async def device_gone(self, device_id: str) -> None:
        for live in [lc for lc in self.live.values() if lc.device_id == device_id]:
            await self._feed(live, c.DeviceOffline())

    async def fire_timers(self) -> None:
        """Let every live call's deadline that has passed on our clock take effect.

        Each call's event-loop timer feeds the same event at its own deadline; a test
        that sets the clock calls this instead of waiting for one.
        """
        for live in list(self.live.values()):
            await self._feed(live, c.TimerFired())

    # -------------------------------------------------------------- the machine
    async def _feed(self, live: LiveCall, event: c.Event) -> None:
        transition = c.step(live.machine, event, self.clock())
        before = live.machine
        live.machine = transition.state
        if live.machine.state is not c.CallState.ENDED and _kept(live.machine) != _kept(before):
            await self._keep_in_progress(live)  # it rang, rings on the unit, was answered, or connected
        ending = any(isinstance(effect, c.RecordCallEnd) for effect in transition.actions)
        if ending:
            self._ending(live)  # before the sides are told: their quality reports follow at once
        try:
            for effect in transition.actions:
                if isinstance(effect, c.Ignored):
                    log.debug("call %s: %s ignored (%s)", live.id, type(event).__name__, effect.reason.value)
                elif isinstance(effect, c.RecordCallEnd):
                    await self._record(live, effect.record)
                elif effect.to is c.Side.CITIZEN:
                    await self._notify_device(live, effect)
                else:
                    await self._notify_staff(live, effect)
        finally:
            if ending:  # written, or failed: the quality reports that wait for the record go on
                live.recorded.set()
        self._arm_timer(live)

    def _arm_timer(self, live: LiveCall) -> None:
        if live.timer is not None:
            live.timer.cancel()
            live.timer = None
        deadline = live.machine.next_deadline
        if deadline is not None and live.machine.state is not c.CallState.ENDED:
            loop = asyncio.get_running_loop()
            live.timer = loop.call_later(max(0.0, deadline - self.clock()),
                                         lambda: asyncio.ensure_future(self._feed(live, c.TimerFired())))

    async def _notify_device(self, live: LiveCall, effect: c.Notify) -> None:
        if effect.notice is c.Notice.RING:
            ice, relay_only = self._ice(live.device_id)
            await self._to_device(live.device_id, m.CallRing(
                call_id=live.id, caller_name=live.caller.display_name, caller_role=live.caller.role,
                ice_servers=ice, relay_only=relay_only, ring_timeout=self.config.ring_timeout,
                caller_photo=await self.store.run(Store.user_photo, live.caller.username)))
        elif effect.notice is c.Notice.ENDED and effect.reason is not None:
            await self._to_device(live.device_id, m.CallEnded(call_id=live.id, reason=effect.reason))

    async def _notify_staff(self, live: LiveCall, effect: c.Notify) -> None:
        message: m.ServerToStaff | None = None
        if effect.notice is c.Notice.RINGING:
            message = m.CallRinging(call_id=live.id, screen_awake=bool(live.screen_awake))
        elif effect.notice is c.Notice.OFFER and live.ring_offer is not None:
            message = m.CallOffer(call_id=live.id, sdp=live.ring_offer)
        elif effect.notice is c.Notice.ANSWERED:  # no SDP: the peers connected while it rang
            message = m.CallAnswer(call_id=live.id, sdp=live.answer_offer)
        elif effect.notice is c.Notice.ENDED and effect.reason is not None:
            message = m.CallEnded(call_id=live.id, reason=effect.reason, facts=await self._facts(live))
        if message is not None:
            with contextlib.suppress(ConnectionError):  # the browser went away; its hang-up event follows
                await live.staff(message)

    async def _to_device(self, device_id: str, message: m.ServerToDevice) -> None:
        link = self.hub.reach(device_id)
        if link is not None:
            with contextlib.suppress(ConnectionError):  # the link's detach feeds DeviceOffline
                await link.send(message)

    async def _facts(self, live: LiveCall) -> m.DeviceFacts:
        row = await self.store.run(Store.device, live.device_id)
        link = self.hub.reach(live.device_id)
        machine = live.machine
        rang_for = None
        if machine.rang_at is not None:
            rang_for = (machine.answered_at or machine.ended_at or self.clock()) - machine.rang_at
        return m.DeviceFacts(
            online=link is not None, online_since=link.connected_at if link else None,
            last_seen=link.last_seen if link else (row.last_seen if row else None),
            rang_for_seconds=round(rang_for, 3) if rang_for is not None else None,
            ui_alive=link.ui_alive if link else None, screen_awake=live.screen_awake,
        )

    def _hold(self, task: asyncio.Future[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _keep_in_progress(self, live: LiveCall) -> None:
        machine = live.machine
        assert machine.placed_at is not None  # placed: ringing, connecting or in call
        row = LiveCallRow(
            id=live.id, caller=live.caller.username, caller_name=live.caller.display_name,
            caller_role=live.caller.role, citizen_id=live.citizen_id, device_id=live.device_id,
            placed_at=machine.placed_at, rang_at=machine.rang_at, answered_at=machine.answered_at,
            connected_at=machine.connected_at, screen_awake=live.screen_awake)
        async with live.writing:
            await self.store.run(Store.save_live_call, row)

    def _ending(self, live: LiveCall) -> None:
        """The call is over here: no longer live, but its quality reports are still taken."""
        del self.live[live.id]
        for tell in self.on_call:
            tell(live.id, live.device_id, False)
        assert live.machine.ended_at is not None
        self._ended[live.id] = (live.machine.ended_at, live)

    async def _record(self, live: LiveCall, record: c.CallRecord) -> None:
        async with live.writing:
            facts = await self._facts(live)
            await self.store.run(Store.add_call_record, CallRow(
                id=live.id, caller=live.caller.username, citizen_id=live.citizen_id,
                device_id=live.device_id, placed_at=record.placed_at, rang_at=record.rang_at,
                answered_at=record.answered_at, connected_at=record.connected_at, ended_at=record.ended_at,
                end_reason=record.reason.value, ring_seconds=record.ring_duration,
                talk_seconds=record.talk_duration, facts=json.dumps(m.to_builtins(facts)),
            ))
        log.info("call %s ended: %s", live.id, record.reason.value)

    async def _quality(self, report: m.CallQualityReport, column: str, allowed: Callable[[str, str], bool]) -> None:
        now = self.clock()
        self._ended = {k: v for k, v in self._ended.items() if now - v[0] < QUALITY_GRACE_SECONDS}
        ended = self._ended.get(report.call_id)
        if ended is None or not allowed(ended[1].caller.username, ended[1].device_id):
            return
        await ended[1].recorded.wait()  # a report may come while the record is being written
        await self.store.run(Store.add_call_quality, report.call_id, column, dict(report.quality))


def _callee(store: Store, caller: Caller, citizen_id: str) -> CitizenRow:
    """The citizen this person may call; a refusal for want of the right is audited."""
    citizen = store.citizen(citizen_id)
    if citizen is None:
        raise CallNotPlaced("unknown-citizen", "no such citizen")
    if caller.role != "admin" and not store.may_call(caller.username, citizen_id):
        with store.tx() as conn:
            store.append_audit(conn, caller.username, "call-refused", citizen.device_id,
                               citizen_id=citizen_id, reason="not-in-care-team")
        raise CallNotPlaced("forbidden", "you are not in this citizen's care team")
    return citizen


def _kept(call: c.Call) -> tuple[object, ...]:
    """What the database keeps of a call not yet ended (its ``live_calls`` row)."""
    return call.state, call.placed_at, call.rang_at, call.answered_at, call.connected_at


def record_view(row: CallRow) -> dict[str, Any]:
    out: dict[str, Any] = dataclasses.asdict(row)
    for key in ("facts", "quality_staff", "quality_device"):
        out[key] = json.loads(out[key]) if out[key] else None
    return out
