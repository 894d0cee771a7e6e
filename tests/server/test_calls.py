"""The server's CallManager in-process: a real store, a real hub, fake device and staff links,
and a clock the test sets — so a ring timeout is reached by moving the clock, not by waiting."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kiosk.protocol import call as c
from kiosk.protocol import messages as m
from kiosk.server.calls import QUALITY_GRACE_SECONDS, Caller, CallManager, CallNotPlaced
from kiosk.server.hub import Hub
from kiosk.server.store import Store
from tests.server.fakes import START, FakeClock, FakeDevice, Inbox, open_store

pytestmark = pytest.mark.timeout(60)

ANNE = Caller("anne", "Anne Hansen", "caregiver")
RING_TIMEOUT = 45.0
SDP = "v=0\r\n"


@dataclass
class World:
    clock: FakeClock
    store: Store
    hub: Hub
    calls: CallManager
    device: FakeDevice
    citizen_id: str

    async def place(self, caller: Caller = ANNE) -> tuple[str, Inbox]:
        staff = Inbox()
        call_id = await self.calls.place(caller, self.citizen_id, staff.send)
        return call_id, staff


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    clock = FakeClock()
    store = open_store(tmp_path / "server", clock)
    hub = Hub(store)
    calls = CallManager(store, hub, c.CallConfig(ring_timeout=RING_TIMEOUT), None)
    device = FakeDevice(store, "device-1")
    for username, role in (("anne", "caregiver"), ("bo", "caregiver")):
        store.add_user(username, "(not a hash)", role, "test", username.title())
    with store.tx() as conn:
        citizen_id = store.add_citizen(conn, "Karen Jensen", device.id, ["anne"])
    await device.connect(hub)
    yield World(clock, store, hub, calls, device, citizen_id)
    for live in calls.live.values():
        if live.timer is not None:
            live.timer.cancel()
    store.close()


async def test_an_unanswered_call_ends_when_the_clock_reaches_the_ring_timeout(world: World) -> None:
    call_id, staff = await world.place()
    ring = world.device.inbox.last(m.CallRing)
    assert (ring.call_id, ring.caller_name, ring.ring_timeout) == (call_id, "Anne Hansen", RING_TIMEOUT)

    world.clock.advance(2.0)
    await world.calls.from_device(world.device.id, m.CallRinging(call_id=call_id, screen_awake=True))
    assert staff.last(m.CallRinging).screen_awake is True

    world.clock.advance(RING_TIMEOUT - 2.0 - 0.001)  # a moment before the deadline: still ringing
    await world.calls.fire_timers()
    assert staff.of(m.CallEnded) == [] and call_id in world.calls.live

    world.clock.advance(0.001)
    await world.calls.fire_timers()

    ended = staff.last(m.CallEnded)
    assert ended.reason == "not_answered"
    assert ended.facts == m.DeviceFacts(online=True, online_since=START, last_seen=START,
                                        rang_for_seconds=RING_TIMEOUT - 2.0, ui_alive=None, screen_awake=True)
    assert world.device.inbox.last(m.CallEnded).reason == "not_answered"
    assert call_id not in world.calls.live
    record = world.store.call_record(call_id)
    assert record is not None
    assert (record.end_reason, record.placed_at, record.rang_at, record.ended_at) == (
        "not_answered", START, START + 2.0, START + RING_TIMEOUT)
    assert record.ring_seconds == RING_TIMEOUT - 2.0 and record.talk_seconds is None


async def test_a_late_timer_still_ends_the_call_at_its_deadline(world: World) -> None:
    call_id, staff = await world.place()
    world.clock.advance(RING_TIMEOUT + 30.0)  # a loaded server fired the timer 30 s late
    await world.calls.fire_timers()
    record = world.store.call_record(call_id)
    assert record is not None and record.ended_at == START + RING_TIMEOUT
    assert staff.last(m.CallEnded).reason == "not_answered"


async def test_an_answered_call_keeps_its_times_and_who_hung_up(world: World) -> None:
    call_id, staff = await world.place()
    world.clock.advance(1.0)
    await world.calls.from_device(world.device.id, m.CallRinging(call_id=call_id))
    world.clock.advance(4.0)
    await world.calls.from_device(world.device.id, m.CallAnswer(call_id=call_id, sdp=SDP))
    assert staff.last(m.CallAnswer).sdp == SDP
    await world.calls.from_staff("anne", m.CallAccept(call_id=call_id, sdp=SDP))
    assert world.device.inbox.last(m.CallAccept).sdp == SDP
    world.clock.advance(0.5)
    await world.calls.from_staff("anne", m.CallConnected(call_id=call_id))
    world.clock.advance(RING_TIMEOUT * 3)  # talking past every timeout: no timer ends a call in progress
    await world.calls.fire_timers()
    assert staff.of(m.CallEnded) == []
    await world.calls.from_device(world.device.id, m.CallHangUp(call_id=call_id))

    assert staff.last(m.CallEnded).reason == "hung_up_by_citizen"
    assert world.device.inbox.of(m.CallEnded) == []  # the citizen knows they hung up
    record = world.store.call_record(call_id)
    assert record is not None
    assert (record.ring_seconds, record.talk_seconds) == (4.0, RING_TIMEOUT * 3)


async def test_an_offline_screen_ends_the_call_at_once_and_says_so(world: World) -> None:
    await world.hub.disconnect(world.device.id)
    world.clock.advance(600.0)
    call_id, staff = await world.place()
    assert staff.messages[0] == m.CallPlaced(call_id=call_id, citizen_name="Karen Jensen", ice_servers=[])
    ended = staff.last(m.CallEnded)
    assert ended.reason == "device_offline"
    assert ended.facts is not None and ended.facts.online is False
    assert world.device.inbox.of(m.CallRing) == []


async def test_a_second_call_to_a_busy_screen_is_refused_as_busy(world: World) -> None:
    first, _ = await world.place()
    second, staff = await world.place()
    assert staff.last(m.CallEnded).reason == "device_busy"
    assert first in world.calls.live and second not in world.calls.live
    assert [ring.call_id for ring in world.device.inbox.of(m.CallRing)] == [first]


async def test_the_screen_going_away_while_ringing_ends_the_call(world: World) -> None:
    call_id, staff = await world.place()
    await world.calls.device_gone(world.device.id)
    assert staff.last(m.CallEnded).reason == "device_offline"
    assert call_id not in world.calls.live


async def test_someone_outside_the_care_team_may_not_call(world: World) -> None:
    with pytest.raises(CallNotPlaced) as refused:
        await world.place(Caller("bo", "Bo", "caregiver"))
    assert refused.value.code == "forbidden"
    assert world.device.inbox.of(m.CallRing) == []
    assert [e.action for e in world.store.audit_entries()][-1] == "call-refused"


async def test_messages_from_the_wrong_party_change_nothing(world: World) -> None:
    call_id, staff = await world.place()
    await world.calls.from_staff("bo", m.CallHangUp(call_id=call_id))  # not Bo's call
    stranger = FakeDevice(world.store, "device-2")
    await stranger.connect(world.hub)
    await world.calls.from_device(stranger.id, m.CallAnswer(call_id=call_id, sdp=SDP))  # not its call
    assert staff.of(m.CallEnded) == [] and staff.of(m.CallAnswer) == []
    assert world.calls.live[call_id].machine.state is c.CallState.RINGING


async def test_quality_reports_are_kept_within_the_grace_period_only(world: World) -> None:
    call_id, _ = await world.place()
    await world.calls.from_staff("anne", m.CallHangUp(call_id=call_id))
    world.clock.advance(QUALITY_GRACE_SECONDS - 1.0)
    await world.calls.from_staff("anne", m.CallQualityReport(call_id=call_id, quality={"rtt_ms": 40}))
    world.clock.advance(2.0)
    await world.calls.from_device(world.device.id, m.CallQualityReport(call_id=call_id, quality={"rtt_ms": 41}))
    record = world.store.call_record(call_id)
    assert record is not None and record.quality_staff is not None
    assert json.loads(record.quality_staff) == {"rtt_ms": 40}
    assert record.quality_device is None  # too late
