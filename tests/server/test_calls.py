"""The server's CallManager in-process: a real store, a real hub, fake device and staff links,
and a clock the test sets — so a ring timeout is reached by moving the clock, not by waiting."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from kiosk.protocol import call as c
from kiosk.protocol import messages as m
from kiosk.server.calls import QUALITY_GRACE_SECONDS, Caller, CallManager, CallNotPlaced
from kiosk.server.hub import Hub
from kiosk.server.store import CallRow, Store
from tests.call_endings import LANGUAGES, ending_text, endings
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
        store.add_user(username, "(not a hash)", role, "cli:test", username.title())
    with store.tx() as conn:
        citizen_id = store.add_citizen(conn, "Karen Jensen", device.id, ["anne"])
    await device.connect(hub)
    yield World(clock, store, hub, calls, device, citizen_id)
    for live in calls.live.values():
        if live.timer is not None:
            live.timer.cancel()
    await store.aclose()


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
    await world.calls.from_device(world.device.id, m.CallRinging(call_id=call_id, screen_awake=True))
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


async def test_a_pre_connected_call_relays_the_ring_offer_and_counts_media_only_after_the_answer(
        world: World) -> None:
    call_id, staff = await world.place()
    await world.calls.from_device(world.device.id, m.CallRinging(call_id=call_id))
    world.clock.advance(0.5)
    await world.calls.from_device(world.device.id, m.CallOffer(call_id=call_id, sdp=SDP))
    assert staff.last(m.CallOffer).sdp == SDP  # to the caller while it rings
    await world.calls.from_staff("anne", m.CallAccept(call_id=call_id, sdp=SDP))
    assert world.device.inbox.last(m.CallAccept).sdp == SDP  # the caller's answer, while it rings
    world.clock.advance(0.5)
    # Both peers' connections are up while it rings; a "connected" now is not media flowing.
    await world.calls.from_staff("anne", m.CallConnected(call_id=call_id))
    assert world.calls.live[call_id].machine.state is c.CallState.RINGING

    world.clock.advance(4.0)
    await world.calls.from_device(world.device.id, m.CallAnswer(call_id=call_id))
    assert staff.last(m.CallAnswer) == m.CallAnswer(call_id=call_id, sdp=None)  # small: "answered"
    await world.calls.from_device(world.device.id, m.CallOffer(call_id=call_id, sdp="v=0\r\nlate"))
    assert len(staff.of(m.CallOffer)) == 1  # an offer after the answer is stale: not passed on
    world.clock.advance(0.1)
    await world.calls.from_device(world.device.id, m.CallConnected(call_id=call_id))
    world.clock.advance(10.0)
    await world.calls.from_staff("anne", m.CallHangUp(call_id=call_id))

    assert world.device.inbox.last(m.CallEnded).reason == "hung_up_by_staff"
    record = world.store.call_record(call_id)
    assert record is not None
    assert (record.answered_at, record.connected_at) == (START + 5.0, START + 5.1)
    assert record.ring_seconds == 5.0 and record.talk_seconds == pytest.approx(10.0)


@pytest.mark.parametrize("ending", ["unanswered", "cancelled", "citizen"])
async def test_a_pre_connected_ring_that_ends_unanswered_keeps_its_true_reason(world: World, ending: str) -> None:
    call_id, staff = await world.place()
    await world.calls.from_device(world.device.id, m.CallRinging(call_id=call_id))
    await world.calls.from_device(world.device.id, m.CallOffer(call_id=call_id, sdp=SDP))
    await world.calls.from_staff("anne", m.CallAccept(call_id=call_id, sdp=SDP))
    await world.calls.from_staff("anne", m.CallConnected(call_id=call_id))
    await world.calls.from_device(world.device.id, m.CallConnected(call_id=call_id))
    if ending == "unanswered":
        world.clock.advance(RING_TIMEOUT)
        await world.calls.fire_timers()
    elif ending == "cancelled":
        await world.calls.from_staff("anne", m.CallHangUp(call_id=call_id))
    else:
        await world.calls.from_device(world.device.id, m.CallHangUp(call_id=call_id))
    reason = {"unanswered": "not_answered", "cancelled": "cancelled_by_caller", "citizen": "hung_up_by_citizen"}
    record = world.store.call_record(call_id)
    assert record is not None and record.end_reason == reason[ending]
    # Each side that did not end it is told, and closes its pre-connected peer.
    if ending != "cancelled":
        assert staff.last(m.CallEnded).reason == reason[ending]
    if ending != "citizen":
        assert world.device.inbox.last(m.CallEnded).reason == reason[ending]
    assert record.answered_at is None and record.connected_at is None and record.talk_seconds is None


async def test_a_unit_that_offers_only_at_the_answer_still_connects(world: World) -> None:
    """An older unit (or one whose pre-connection failed) sends its offer in the answer."""
    call_id, staff = await world.place()
    await world.calls.from_device(world.device.id, m.CallRinging(call_id=call_id))
    await world.calls.from_device(world.device.id, m.CallOffer(call_id=call_id, sdp=SDP))
    await world.calls.from_device(world.device.id, m.CallAnswer(call_id=call_id, sdp="v=0\r\nfresh"))
    assert staff.last(m.CallAnswer).sdp == "v=0\r\nfresh"


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


# --- what the caregiver is told is true --------------------------------------------------
#
# Every end reason is reached the way it happens, and its record's facts are what the page
# shows under the headline; the headline (Danish and English, from the page's one table)
# must claim nothing the facts deny.


async def _connected(world: World) -> str:
    call_id, _ = await world.place()
    await world.calls.from_device(world.device.id, m.CallRinging(call_id=call_id, screen_awake=True))
    world.clock.advance(3.0)
    await world.calls.from_device(world.device.id, m.CallAnswer(call_id=call_id, sdp=SDP))
    await world.calls.from_staff("anne", m.CallConnected(call_id=call_id))
    return call_id


async def _ends(world: World, reason: c.EndReason) -> str:
    """Reach ``reason`` as it happens; the call's id."""
    calls, device = world.calls, world.device.id
    if reason is c.EndReason.DEVICE_OFFLINE:
        await world.hub.disconnect(device)
        return (await world.place())[0]
    if reason is c.EndReason.SCREEN_NOT_RUNNING:
        world.device.link.ui_alive = False  # as the agent's heartbeat reports it
        return (await world.place())[0]
    if reason is c.EndReason.DEVICE_BUSY:
        await world.place()
        return (await world.place())[0]
    call_id, _ = await world.place()
    if reason is c.EndReason.DID_NOT_RING:
        world.clock.advance(c.DEFAULT_RING_ACK_TIMEOUT)
        await calls.fire_timers()
        return call_id
    if reason is c.EndReason.CANCELLED_BY_CALLER:
        await calls.from_staff("anne", m.CallHangUp(call_id=call_id))
        return call_id
    await calls.from_device(device, m.CallRinging(call_id=call_id, screen_awake=True))
    if reason is c.EndReason.SERVER_STOPPED:
        await _restarted(world)
        return call_id
    if reason is c.EndReason.NOT_ANSWERED:
        world.clock.advance(RING_TIMEOUT)
        await calls.fire_timers()
        return call_id
    await calls.from_device(device, m.CallAnswer(call_id=call_id, sdp=SDP))
    if reason is c.EndReason.MEDIA_FAILED:
        await calls.from_staff("anne", m.CallHangUp(call_id=call_id, reason="media-failed"))
        return call_id
    await calls.from_staff("anne", m.CallConnected(call_id=call_id))
    if reason is c.EndReason.CONNECTION_LOST:
        await calls.from_device(device, m.CallHangUp(call_id=call_id, reason="media-failed"))
    elif reason is c.EndReason.HUNG_UP_BY_STAFF:
        await calls.from_staff("anne", m.CallHangUp(call_id=call_id))
    elif reason is c.EndReason.HUNG_UP_BY_CITIZEN:
        await calls.from_device(device, m.CallHangUp(call_id=call_id))
    elif reason is c.EndReason.UNIT_WIPED:
        await calls.from_device(device, m.CallHangUp(call_id=call_id, reason="unit-wiped"))
    return call_id


#: Words a headline may use only when the facts bear them out (lower case).
CLAIMS: dict[str, tuple[tuple[str, ...], Callable[[m.DeviceFacts, CallRow], bool]]] = {
    "nobody answered": (("ingen tog", "tog ikke", "nobody answered", "did not answer"),
                        lambda f, r: f.rang_for_seconds is not None and r.answered_at is None),
    "it never rang": (("ringede ikke", "kan ikke ringe", "did not ring", "cannot ring"),
                      lambda f, r: f.rang_for_seconds is None and r.rang_at is None),
    "screen offline": (("ikke forbundet", "not connected"), lambda f, _r: not f.online),
    "program not running": (("program kører ikke", "app is not running"), lambda f, _r: f.ui_alive is False),
    "the citizen answered": (("borgeren tog den", "citizen answered"), lambda _f, r: r.answered_at is not None),
    "media was lost": (("blev afbrudt", "was lost"), lambda _f, r: r.connected_at is not None),
    "never connected": (("kunne ikke etableres", "could not be set up"), lambda _f, r: r.connected_at is None),
    "someone hung up": (("lagde på", "hung up"), lambda f, _r: f.rang_for_seconds is not None),
    "busy": (("optaget", "busy"), lambda f, _r: f.online),
    "withdrawn before media": (("afbrød", "cancelled"), lambda _f, r: r.connected_at is None),
    "the unit is being wiped": (("bliver slettet", "being wiped"), lambda f, _r: f.online),  # the unit said so
    "the server stopped first": (("serveren", "the server"), lambda _f, r: r.connected_at is None),
}
#: Reasons after which the caregiver can do something about it, so the page must say what.
NEEDS_ADVICE = {c.EndReason.NOT_ANSWERED, c.EndReason.DID_NOT_RING, c.EndReason.SCREEN_NOT_RUNNING,
                c.EndReason.MEDIA_FAILED, c.EndReason.CONNECTION_LOST, c.EndReason.DEVICE_OFFLINE,
                c.EndReason.DEVICE_BUSY, c.EndReason.UNIT_WIPED, c.EndReason.SERVER_STOPPED}


def test_the_page_has_a_headline_for_every_reason_in_both_languages() -> None:
    for lang in LANGUAGES:
        assert set(endings()[lang]["headlines"]) >= {r.value for r in c.EndReason}, lang
        assert set(endings()[lang]["advice"]) == {r.value for r in NEEDS_ADVICE}, lang


@pytest.mark.parametrize("lang", LANGUAGES)
@pytest.mark.parametrize("reason", list(c.EndReason))
async def test_every_headline_agrees_with_the_facts_of_its_reason(
        world: World, reason: c.EndReason, lang: str) -> None:
    call_id = await _ends(world, reason)
    record = world.store.call_record(call_id)
    assert record is not None and record.end_reason == reason.value
    facts: m.DeviceFacts = m.convert(json.loads(record.facts or "null"), m.DeviceFacts)
    text = ending_text(lang, reason.value).lower()
    made = [claim for claim, (words, _) in CLAIMS.items() if any(w in text for w in words)]
    assert made, f"{reason} ({lang}): the headline {text!r} says nothing the test can check"
    for claim in made:
        assert CLAIMS[claim][1](facts, record), f"{reason} ({lang}): {text!r} claims {claim!r}, facts say {facts}"


async def test_a_call_to_a_screen_whose_program_is_not_running_ends_at_once_and_never_rings(world: World) -> None:
    world.device.link.ui_alive = False
    call_id, staff = await world.place()
    ended = staff.last(m.CallEnded)
    assert ended.reason == "screen_not_running" and ended.facts is not None
    assert (ended.facts.online, ended.facts.ui_alive, ended.facts.rang_for_seconds) == (True, False, None)
    assert world.device.inbox.of(m.CallRing) == []
    assert call_id not in world.calls.live


async def test_a_ring_the_unit_never_confirms_ends_as_did_not_ring_not_as_unanswered(world: World) -> None:
    call_id, staff = await world.place()
    world.clock.advance(c.DEFAULT_RING_ACK_TIMEOUT - 0.001)
    await world.calls.fire_timers()
    assert staff.of(m.CallEnded) == []
    world.clock.advance(0.001)
    await world.calls.fire_timers()
    assert staff.last(m.CallEnded).reason == "did_not_ring"
    assert world.device.inbox.last(m.CallEnded).reason == "did_not_ring"  # the unit stops, if it rings late
    record = world.store.call_record(call_id)
    assert record is not None and record.rang_at is None and record.end_reason == "did_not_ring"


# --- a call in progress outlives the server ----------------------------------------------


async def _restarted(world: World) -> CallManager:
    """The server dies (nothing runs, nothing is written), a new one starts on the same store,
    the unit's agent reconnects to it, and it starts serving."""
    restarted = CallManager(world.store, Hub(world.store), c.CallConfig(ring_timeout=RING_TIMEOUT), None)
    await restarted.take_up()
    await world.device.connect(restarted.hub)
    await restarted.start()
    return restarted


async def test_a_call_still_ringing_when_the_server_stops_is_ended_with_its_record_at_restart(world: World) -> None:
    call_id, _staff = await world.place()
    await world.calls.from_device(world.device.id, m.CallRinging(call_id=call_id, screen_awake=True))
    assert [row.id for row in world.store.live_call_rows()] == [call_id]  # kept from the ring on
    world.clock.advance(5.0)
    restarted = await _restarted(world)
    assert call_id not in restarted.live
    assert world.device.inbox.last(m.CallEnded).reason == "server_stopped"  # the unit stops ringing
    record = world.store.call_record(call_id)
    assert record is not None and record.end_reason == "server_stopped"
    assert record.rang_at is not None and record.answered_at is None and record.connected_at is None
    assert world.store.live_call_rows() == []
    page = Inbox()  # the caregiver's page comes back to a call that is over
    assert not await restarted.resume(ANNE, call_id, page.send)
    new_call = await restarted.place(ANNE, world.citizen_id, Inbox().send)  # the unit is not left busy
    assert world.device.inbox.last(m.CallRing).call_id == new_call


async def test_a_restarted_server_takes_up_a_call_in_progress_and_completes_its_record(world: World) -> None:
    call_id = await _connected(world)
    connected_at = world.clock.now
    # The server dies (nothing runs, nothing is written) and a new one starts on the same store.
    restarted = CallManager(world.store, Hub(world.store), c.CallConfig(ring_timeout=RING_TIMEOUT), None)
    await restarted.take_up()
    assert restarted.live[call_id].machine.state is c.CallState.IN_CALL
    await world.device.connect(restarted.hub)  # the unit's agent reconnects by itself

    page = Inbox()  # the caregiver's page, on a new socket
    assert await restarted.resume(ANNE, call_id, page.send)
    assert page.messages == []  # nothing to tell: the call goes on
    assert not await restarted.resume(Caller("bo", "Bo", "caregiver"), call_id, Inbox().send)  # not Bo's

    world.clock.advance(60.0)
    await restarted.from_device(world.device.id, m.CallHangUp(call_id=call_id))
    assert page.last(m.CallEnded).reason == "hung_up_by_citizen"
    await restarted.from_staff("anne", m.CallQualityReport(call_id=call_id, quality={"freezes": 0}))
    record = world.store.call_record(call_id)
    assert record is not None and record.end_reason == "hung_up_by_citizen"
    assert record.connected_at == connected_at and record.talk_seconds == 60.0
    assert record.rang_at is not None and record.answered_at is not None
    assert record.quality_staff is not None
    assert world.store.live_call_rows() == []  # no longer in progress


async def test_a_call_taken_up_whose_unit_never_comes_back_ends_after_the_grace(world: World) -> None:
    call_id = await _connected(world)
    restarted = CallManager(world.store, Hub(world.store), c.CallConfig(ring_timeout=RING_TIMEOUT), None)
    await restarted.take_up()
    page = Inbox()
    assert await restarted.resume(ANNE, call_id, page.send)  # the caregiver is back; the unit is not
    world.clock.advance(restarted.taken_up_grace - 1)
    await restarted.settle_taken_up_calls()
    assert call_id in restarted.live  # still within the grace: the unit may yet reconnect
    world.clock.advance(1)
    await restarted.settle_taken_up_calls()
    assert call_id not in restarted.live
    assert page.last(m.CallEnded).reason == "device_offline"
    record = world.store.call_record(call_id)
    assert record is not None and record.end_reason == "device_offline"
    assert world.store.live_call_rows() == []


async def test_a_call_taken_up_whose_caregiver_never_comes_back_is_hung_up_for_them(world: World) -> None:
    call_id = await _connected(world)
    restarted = CallManager(world.store, Hub(world.store), c.CallConfig(ring_timeout=RING_TIMEOUT), None)
    await restarted.take_up()
    await world.device.connect(restarted.hub)  # the unit is back; the caregiver's page is not
    world.clock.advance(restarted.taken_up_grace)
    await restarted.settle_taken_up_calls()
    assert world.device.inbox.last(m.CallEnded).reason == "hung_up_by_staff"
    record = world.store.call_record(call_id)
    assert record is not None and record.end_reason == "hung_up_by_staff"


async def test_a_call_taken_up_with_both_sides_back_goes_on_after_the_grace(world: World) -> None:
    call_id = await _connected(world)
    restarted = CallManager(world.store, Hub(world.store), c.CallConfig(ring_timeout=RING_TIMEOUT), None)
    await restarted.take_up()
    await world.device.connect(restarted.hub)
    assert await restarted.resume(ANNE, call_id, Inbox().send)
    world.clock.advance(restarted.taken_up_grace * 2)
    await restarted.settle_taken_up_calls()
    assert restarted.live[call_id].machine.state is c.CallState.IN_CALL


async def test_a_quality_report_sent_as_the_call_ends_is_kept_with_its_record(world: World) -> None:
    """A side reports its quality the moment it hears the call ended, which may be before the server has
    written the record (telling the caregiver reads the database first): the report waits for the
    record, never lost. Seen with a cluster, where the unit's report came that quickly."""
    call_id = await _connected(world)
    await asyncio.gather(
        world.calls.from_device(world.device.id, m.CallHangUp(call_id=call_id)),
        world.calls.from_staff("anne", m.CallQualityReport(call_id=call_id, quality={"freezes": 0})))
    record = world.store.call_record(call_id)
    assert record is not None and record.quality_staff is not None


async def test_resuming_a_call_that_ended_meanwhile_tells_how_it_ended(world: World) -> None:
    call_id = await _connected(world)
    await world.calls.from_device(world.device.id, m.CallHangUp(call_id=call_id))
    page = Inbox()
    assert not await world.calls.resume(ANNE, call_id, page.send)
    assert page.last(m.CallEnded).reason == "hung_up_by_citizen"


async def test_an_old_socket_closing_does_not_hang_up_a_call_resumed_elsewhere(world: World) -> None:
    call_id = await _connected(world)
    first = world.calls.live[call_id].staff
    second = Inbox()
    assert await world.calls.resume(ANNE, call_id, second.send)
    await world.calls.staff_gone(call_id, first)
    assert call_id in world.calls.live and world.calls.live[call_id].staff == second.send


async def test_a_caregiver_whose_socket_drops_in_a_call_may_come_back_within_the_grace(world: World) -> None:
    world.calls.staff_resume_grace = 0.05
    call_id = await _connected(world)
    first = world.calls.live[call_id].staff
    await world.calls.staff_gone(call_id, first)  # a blink of the caregiver's network
    assert call_id in world.calls.live
    back = Inbox()
    assert await world.calls.resume(ANNE, call_id, back.send)
    await asyncio.sleep(0.2)
    assert call_id in world.calls.live  # resumed in time: the call goes on

    await world.calls.staff_gone(call_id, back.send)  # and now gone for good
    await asyncio.sleep(0.2)
    record = world.store.call_record(call_id)
    assert record is not None and record.end_reason == "hung_up_by_staff"
    assert world.device.inbox.last(m.CallEnded).reason == "hung_up_by_staff"


async def test_a_socket_closed_before_media_flows_withdraws_the_call_at_once(world: World) -> None:
    call_id, staff = await world.place()
    await world.calls.staff_gone(call_id, staff.send)
    assert call_id not in world.calls.live
    assert world.device.inbox.last(m.CallEnded).reason == "cancelled_by_caller"
