"""The fleet as logistics and support see it: every unit with the one state that says what to do.

One view for the CLI (``kiosk-server device list``), the JSON API and the console pages.
A unit is an enrolled device or a unit held for approval (its token expired on the shelf).

Speed (10,000 units, p99 ≤ 100 ms): the database narrows the units first — the search (an
enrolled unit is found by its id only) and whatever of the state it can tell alone (revoked,
never seen) — and reads them without their certificates. A unit's state also depends on what
the hub knows live (online, the state the unit reports), so the rows left are judged one by one
here, cheaply; only the page asked for is made into :class:`UnitOut`.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import msgspec
import sqlalchemy as sa

from kiosk.server import enrollment
from kiosk.server.hub import DeviceLink, Hub
from kiosk.server.store import DeviceRow, HoldRow, Store, TokenRow, devices

#: Enrolled this long ago and never connected: a stranded unit (default of the CLI and the API).
NEVER_CONNECTED_AFTER_SECONDS = 3600.0

#: What logistics filter by, in the order of a unit's life.
UnitState = Literal["awaiting-approval", "approved", "rejected", "never-connected", "enrolled-unassigned",
                    "assigned", "wipe-pending", "revoked"]
UNIT_STATES: tuple[str, ...] = UnitState.__args__  # type: ignore[attr-defined]
#: The states of a unit held for approval: never those of an enrolled device.
HELD_STATES = frozenset({"awaiting-approval", "approved", "rejected"})
Connection = Literal["online", "offline", "never connected", "revoked", "not enrolled"]


class UnitOut(msgspec.Struct):
    id: str
    state: UnitState
    connection: Connection
    online: bool
    online_since: float | None
    last_seen: float | None
    ui_alive: bool | None
    agent_version: str
    enrolled_at: float | None
    revoked: bool
    #: only for units awaiting approval: what the unit says of itself, and its token's batch
    serial_number: str | None = None
    batch: str | None = None


class Found(NamedTuple):
    units: list[UnitOut]  # the page asked for
    total: int  # how many units matched, on every page


class _Facts(NamedTuple):
    """What the list needs of a device's row: all of it but the certificate."""

    id: str
    enrolled_at: float
    revoked_at: float | None
    state: str
    agent_version: str
    last_seen: float | None
    online: bool


_FACTS = [devices.c[name] for name in _Facts._fields]


class _Judged(NamedTuple):
    facts: _Facts | DeviceRow
    link: DeviceLink | None
    online: bool
    state: UnitState
    connection: Connection


def _judge(row: _Facts | DeviceRow, hub: Hub | None, now: float, wipes_pending: set[str],
           never_after: float) -> _Judged:
    """``hub`` is the running server's (its links are the live truth); None in another process
    (the CLI), which reads what the server last wrote."""
    link = hub.reach(row.id) if hub is not None else None
    online = link is not None if hub is not None else row.online
    connection: Connection
    if row.revoked_at is not None:
        connection = "revoked"
    elif online:
        connection = "online"
    elif row.last_seen is None and now - row.enrolled_at > never_after:
        connection = "never connected"  # given a certificate, never came
    else:
        connection = "offline"
    reported = link.state if link else row.state
    state: UnitState
    if row.revoked_at is not None:
        state = "revoked"
    elif connection == "never connected":
        state = "never-connected"
    elif row.id in wipes_pending or reported == "wipe-pending":
        state = "wipe-pending"  # queued, or under way on the unit
    elif reported == "assigned":
        state = "assigned"
    else:
        state = "enrolled-unassigned"
    return _Judged(row, link, online, state, connection)


def _enrolled(judged: _Judged) -> UnitOut:
    row, link = judged.facts, judged.link
    return UnitOut(id=row.id, state=judged.state, connection=judged.connection, online=judged.online,
                   online_since=link.connected_at if link else None,
                   last_seen=link.last_seen if link else row.last_seen, ui_alive=link.ui_alive if link else None,
                   agent_version=row.agent_version, enrolled_at=row.enrolled_at, revoked=row.revoked_at is not None)


def _held(hold: HoldRow, token: TokenRow) -> UnitOut:
    return UnitOut(id=hold.device_id, state=hold.state, connection="not enrolled",  # type: ignore[arg-type]
                   online=False, online_since=None, last_seen=None, ui_alive=None, agent_version=hold.agent_version,
                   enrolled_at=None, revoked=False, serial_number=hold.serial_number,
                   batch=enrollment.batch_label(token.created_at, token.created_by))


def unit(store: Store, hub: Hub | None, device_id: str) -> UnitOut | None:
    """One enrolled unit (a unit held for approval has no page of its own yet)."""
    row = store.device(device_id)
    if row is None:
        return None
    return _enrolled(_judge(row, hub, store.clock(), store.devices_with_pending("wipe"),
                            NEVER_CONNECTED_AFTER_SECONDS))


def _candidates(state: str | None, needle: str) -> sa.Select[Any] | None:
    """The enrolled devices that may match, oldest first: the search, and the part of the state the
    database can tell without the hub (None: no enrolled device can be in that state)."""
    q = sa.select(*_FACTS).order_by(devices.c.enrolled_at, devices.c.id)
    if needle:
        q = q.where(devices.c.id.icontains(needle, autoescape=True))  # what matches: the id, any case
    if state in HELD_STATES:
        return None
    if state == "revoked":
        q = q.where(devices.c.revoked_at.is_not(None))
    elif state == "never-connected":  # the hub may still say it is online now: judged after
        q = q.where(devices.c.revoked_at.is_(None), devices.c.last_seen.is_(None))
    elif state is not None:
        q = q.where(devices.c.revoked_at.is_(None))
    return q


def units(store: Store, hub: Hub | None, state: str | None = None, search: str = "",
          never_connected_after: float = NEVER_CONNECTED_AFTER_SECONDS,
          offset: int = 0, limit: int | None = None) -> Found:
    """Enrolled devices, then units held for approval, in the given ``state`` (None: any) whose id
    (or a held unit's serial or batch) holds ``search``: ``limit`` of them after the first ``offset``,
    and how many there are."""
    now = store.clock()
    needle = search.strip().lower()
    candidates = _candidates(state, needle)
    found: list[_Judged | tuple[HoldRow, TokenRow]] = []
    if candidates is not None:
        wipes_pending = store.devices_with_pending("wipe")
        with store.read() as conn:
            judged = (_judge(_Facts._make(r), hub, now, wipes_pending, never_connected_after)
                      for r in conn.execute(candidates).all())
            found += [j for j in judged if state is None or j.state == state]
    found += [(h, t) for h, t in store.enrollment_holds() if (state is None or h.state == state) and (
        not needle or any(needle in text.lower() for text in (
            h.device_id, h.serial_number, enrollment.batch_label(t.created_at, t.created_by))))]
    page = found[offset:None if limit is None else offset + limit]
    return Found([_enrolled(u) if isinstance(u, _Judged) else _held(*u) for u in page], len(found))
