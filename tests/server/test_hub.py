"""The hub in-process on a clock the test sets: queued commands reach a device when it comes
online, an expired one never does, and a revoked device's link is closed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kiosk.protocol import messages as m
from kiosk.protocol.call import EndReason
from kiosk.protocol.command_lifecycle import CommandState
from kiosk.server import commands
from kiosk.server.ca import Authority, load_or_create
from kiosk.server.hub import Hub
from kiosk.server.store import Store
from tests.server.fakes import START, FakeClock, FakeDevice, open_store

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> Authority:
    return load_or_create(tmp_path_factory.mktemp("ca"), "Testby Kommune", ["localhost"])


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def store(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Store]:
    store = open_store(tmp_path / "server", clock)
    yield store
    await store.aclose()  # the pool the loop's calls opened closes on that loop


def sent_ids(device: FakeDevice) -> list[str]:
    return [m.Codec(m.Command).decode(d.envelope.payload).id for d in device.inbox.of(m.CommandDelivery)]


async def test_a_command_to_an_offline_device_waits_and_expires_unsent(
        store: Store, clock: FakeClock, authority: Authority) -> None:
    device = FakeDevice(store, "device-1")
    hub = Hub(store)
    early = commands.queue(store, authority, device.id, m.Ping(), "cli:test", ttl_seconds=60.0)
    late = commands.queue(store, authority, device.id, m.Ping(), "cli:test", ttl_seconds=3600.0)
    clock.advance(60.0)
    await hub.sweep()

    await device.connect(hub)
    await hub.deliver_pending(device.id)
    await hub.deliver_pending(device.id)  # sent once per connection

    assert sent_ids(device) == [late.id]
    early_row = store.command(early.id)
    assert early_row is not None and early_row.state is CommandState.EXPIRED


async def test_the_sweep_delivers_what_another_process_queued(
        store: Store, clock: FakeClock, authority: Authority) -> None:
    device = FakeDevice(store, "device-1")
    hub = Hub(store)
    await device.connect(hub)
    command = commands.queue(store, authority, device.id, m.Reboot(), "cli:test")  # as the CLI does
    assert device.inbox.of(m.CommandDelivery) == []
    await hub.sweep()
    assert sent_ids(device) == [command.id]
    store.mark_delivered(command.id)
    await hub.sweep()
    assert sent_ids(device) == [command.id]


async def test_the_sweep_reads_envelopes_only_of_what_it_sends(
        store: Store, clock: FakeClock, authority: Authority, monkeypatch: pytest.MonkeyPatch) -> None:
    online, offline = FakeDevice(store, "device-1"), FakeDevice(store, "device-2")
    hub = Hub(store)
    await online.connect(hub)
    waiting = [commands.queue(store, authority, offline.id, m.Ping(), "cli:test") for _ in range(20)]
    first = commands.queue(store, authority, online.id, m.Ping(), "cli:test")
    read: list[list[str]] = []
    envelopes = Store.envelopes  # the class's: the loop's calls go through another instance

    def reading(self: Store, ids: list[str]) -> dict[str, bytes]:
        read.append(list(ids))
        return envelopes(self, ids)

    monkeypatch.setattr(Store, "envelopes", reading)

    await hub.sweep()
    await hub.sweep()  # already sent on this link: nothing read again
    second = commands.queue(store, authority, online.id, m.Ping(), "cli:test")
    await hub.sweep()

    assert read == [[first.id], [second.id]]  # never the offline unit's twenty
    assert sent_ids(online) == [first.id, second.id]
    assert all(row.id in {w.id for w in waiting} for row in store.pending_commands(offline.id))


async def test_the_sweep_closes_the_link_of_a_device_revoked_elsewhere(store: Store, clock: FakeClock) -> None:
    device, other = FakeDevice(store, "device-1"), FakeDevice(store, "device-2")
    hub = Hub(store)
    await device.connect(hub)
    await other.connect(hub)
    clock.advance(10.0)
    assert store.revoke_device(device.id, "cli:test")
    await hub.sweep()
    assert device.inbox.closed and device.id not in hub.links
    assert not other.inbox.closed and other.id in hub.links


async def test_links_are_stamped_on_the_hubs_clock(store: Store, clock: FakeClock) -> None:
    device = FakeDevice(store, "device-1")
    hub = Hub(store)
    clock.advance(3.0)
    await device.connect(hub)
    clock.advance(2.0)
    hub.seen(device.link)
    assert (device.link.connected_at, device.link.last_seen) == (START + 3.0, START + 5.0)
    await hub.flush_seen()
    row = store.device(device.id)
    assert row is not None and row.last_seen == START + 5.0 and row.online


# --- a link that blinks -------------------------------------------------------------------


def hub_telling_offline(store: Store, detach_grace: float) -> tuple[Hub, list[str]]:
    """A hub, and the devices it has declared offline (its ``on_detach``), in order."""
    hub = Hub(store, detach_grace=detach_grace)
    gone: list[str] = []

    async def offline(device_id: str) -> None:
        gone.append(device_id)

    hub.on_detach.append(offline)
    return hub, gone


async def test_a_dropped_link_is_held_online_and_its_call_messages_wait_for_the_next_connection(
        store: Store, authority: Authority) -> None:
    hub, gone = hub_telling_offline(store, detach_grace=30.0)
    device = FakeDevice(store, "device-1")
    await device.connect(hub)
    hub.detach(device.link)  # the 4G bearer dropped

    assert device.id in hub.links and gone == []  # still online to the console and the calls
    held = hub.links[device.id]
    ring = m.CallRing(call_id="c1", caller_name="Anne", caller_role="caregiver", ice_servers=[])
    ended = m.CallEnded(call_id="c1", reason=EndReason.CANCELLED_BY_CALLER)
    await held.send(ring)
    await held.send(ended)
    with pytest.raises(ConnectionError):  # commands wait in the store, not here
        await held.send(m.CommandDelivery(envelope=m.SignedEnvelope(payload=b"{}", signature=b"")))
    queued = commands.queue(store, authority, device.id, m.Ping(), "cli:test", ttl_seconds=3600.0)
    await hub.deliver_pending(device.id)  # nothing sent on the held link, nothing lost

    device.new_connection()  # the unit is back
    await device.connect(hub)
    await hub.deliver_pending(device.id)
    assert device.inbox.messages[:2] == [ring, ended]  # in order, before anything else
    assert sent_ids(device) == [queued.id]
    assert hub.held == {} and gone == []


async def test_a_link_not_back_within_the_grace_is_offline(store: Store) -> None:
    hub, gone = hub_telling_offline(store, detach_grace=0.05)
    device = FakeDevice(store, "device-1")
    await device.connect(hub)
    hub.detach(device.link)
    for _ in range(100):
        if gone:
            break
        await asyncio.sleep(0.02)
    assert gone == [device.id] and device.id not in hub.links and hub.held == {}


async def test_a_unit_that_says_goodbye_or_is_disconnected_is_offline_at_once(store: Store) -> None:
    hub = Hub(store, detach_grace=30.0)
    device = FakeDevice(store, "device-1")
    await device.connect(hub)
    hub.detach(device.link, grace=False)
    assert device.id not in hub.links
    await device.connect(hub)
    await hub.disconnect(device.id)  # revoked, or wiped: no reconnect is coming
    assert device.id not in hub.links and hub.held == {}
