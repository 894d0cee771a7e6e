"""The fleet list on a store and hub in-process: the database narrows by search and state, the
hub's live view decides the rest, and every filter and page gives exactly the units (and the
count) that judging the whole fleet and filtering it afterwards gives."""

from __future__ import annotations

import random
import uuid
from pathlib import Path

import pytest

from kiosk.server import units
from kiosk.server.hub import DeviceLink, Hub
from kiosk.server.store import Store, sha256_hex
from tests.server.fakes import FakeClock, Inbox, open_store

pytestmark = [pytest.mark.timeout(120), pytest.mark.both_databases]

#: Texts searched for: parts of ids in either case, LIKE's wildcards taken literally, a held
#: unit's serial and batch, spaces around, and nothing at all.
SEARCHES = ["", "AB", " 3f ", "%", "unit_", "sn-7", "BY CLI:LIS", "-4"]
PAGES = [(5, 7), (190, 10), (10_000, 10)]  # (190, 10): from the enrolled units into the held ones


def everything_then_filtered(fleet: list[units.UnitOut], state: str | None, search: str) -> list[units.UnitOut]:
    """How the list was made before the database filtered: judge every unit, then keep the matches."""
    needle = search.strip().lower()
    return [u for u in fleet if (state is None or u.state == state)
            and (not needle or any(needle in (text or "").lower() for text in (u.id, u.serial_number, u.batch)))]


async def make_fleet(store: Store, clock: FakeClock, rng: random.Random) -> Hub:
    """About 200 units in every state: seen or not, revoked, wipes queued, units the hub holds whose
    live state the database does not know yet, and units held for approval."""
    hub = Hub(store)
    ids = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(180)]
    ids += ["unit_1%", "unit%_2", "UNIT-UPPER"]  # ids with LIKE's wildcards in them, and capitals
    seen: dict[str, tuple[float, str, bool]] = {}
    with store.tx() as conn:
        for n, device_id in enumerate(ids):
            if n % 3:  # some enrolled at the same time: the id orders them
                clock.advance(rng.uniform(0, 600))
            store.add_device(conn, device_id, format(n, "x"), "(no certificate)", "1.0")
            if rng.random() < 0.8:
                seen[device_id] = (clock(), rng.choice(("assigned", "enrolled-unassigned", "wipe-pending")),
                                   rng.random() < 0.3)
    store.record_seen(seen)
    clock.advance(2 * units.NEVER_CONNECTED_AFTER_SECONDS)
    with store.tx() as conn:
        for _ in range(12):  # just enrolled, not connected yet: offline, not stranded
            store.add_device(conn, str(uuid.UUID(int=rng.getrandbits(128), version=4)), "0", "(no certificate)", "1.0")
    for device_id in rng.sample(ids, 20):
        store.revoke_device(device_id, "cli:test")
    with store.tx() as conn:
        for n, device_id in enumerate(rng.sample(ids, 25)):  # a wipe queued (the last few expired already)
            store.add_command(conn, f"wipe-{n}", device_id, "wipe", b"{}", "cli:test",
                              clock() + (3600.0 if n < 20 else -1.0))
    for device_id in rng.sample(ids, 60):  # online now, some reporting news not yet written
        inbox = Inbox()
        link = DeviceLink(device_id, "", inbox.send, inbox.close,
                          state=rng.choice(("assigned", "enrolled-unassigned", "wipe-pending")),
                          ui_alive=rng.choice((True, False, None)))
        await hub.attach(link)
    for batch, by in enumerate(("cli:test", "cli:lis")):
        tokens = store.create_tokens(6, ttl_seconds=60.0, created_by=by)
        clock.advance(61.0)
        with store.tx() as conn:
            for n, token in enumerate(tokens):
                store.hold_enrollment(conn, sha256_hex(token), f"held-{batch}-{n}", "k" * 64, f"SN-{7 * n}",
                                      "1.0", clock())
                store.set_hold_state(conn, sha256_hex(token), ("awaiting-approval", "approved", "rejected")[n % 3])
    return hub


async def test_search_state_and_paging_give_what_filtering_the_whole_fleet_gives(
        tmp_path: Path, database: str | None) -> None:
    clock = FakeClock()
    store = open_store(tmp_path / "server", clock, database)
    hub = await make_fleet(store, clock, random.Random(13))

    for live in (hub, None):  # the server's view, and the CLI's (what the server last wrote)
        fleet = units.units(store, live).units
        assert {u.state for u in fleet} == set(units.UNIT_STATES), "a fleet with a unit in every state"
        enrolled = [u for u in fleet if u.enrolled_at is not None]
        assert [units.unit(store, live, u.id) for u in enrolled[::10]] == enrolled[::10], \
            "the list and a unit's page agree"
        for state in (None, *units.UNIT_STATES):
            asked = [(search, 0, None) for search in SEARCHES] + [
                (search, offset, limit) for search in ("", "-4") for offset, limit in PAGES]
            for search, offset, limit in asked if live else asked[:1]:
                expected = everything_then_filtered(fleet, state, search)
                found = units.units(store, live, state, search, offset=offset, limit=limit)
                assert found == units.Found(expected[offset:None if limit is None else offset + limit],
                                            len(expected)), (state, search, offset, limit)
    wildcards = units.units(store, hub, None, "_").units
    assert [u.id for u in wildcards] == ["unit_1%", "unit%_2"], "an underscore is an underscore, not any letter"
    assert [u.id for u in units.units(store, hub, None, "unit-upper").units] == ["UNIT-UPPER"]
    store.close()
