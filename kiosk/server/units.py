"""The fleet as logistics and support see it: every unit with the one state that says what to do.

One view for the CLI (``kiosk-server device list``), the JSON API and the console pages.
A unit is an enrolled device or a unit held for approval (its token expired on the shelf).
"""

from __future__ import annotations

from typing import Literal

import msgspec

from kiosk.server import enrollment
from kiosk.server.hub import Hub
from kiosk.server.store import DeviceRow, Store

#: Enrolled this long ago and never connected: a stranded unit (default of the CLI and the API).
NEVER_CONNECTED_AFTER_SECONDS = 3600.0

#: What logistics filter by, in the order of a unit's life.
UnitState = Literal["awaiting-approval", "approved", "rejected", "never-connected", "enrolled-unassigned",
                    "assigned", "wipe-pending", "revoked"]
UNIT_STATES: tuple[str, ...] = UnitState.__args__  # type: ignore[attr-defined]
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


def _enrolled(row: DeviceRow, hub: Hub | None, now: float, wipes_pending: set[str], never_after: float) -> UnitOut:
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
    return UnitOut(id=row.id, state=state, connection=connection, online=online,
                   online_since=link.connected_at if link else None,
                   last_seen=link.last_seen if link else row.last_seen, ui_alive=link.ui_alive if link else None,
                   agent_version=row.agent_version, enrolled_at=row.enrolled_at, revoked=row.revoked_at is not None)


def unit(store: Store, hub: Hub | None, device_id: str) -> UnitOut | None:
    """One enrolled unit (a unit held for approval has no page of its own yet)."""
    row = store.device(device_id)
    if row is None:
        return None
    return _enrolled(row, hub, store.clock(), store.devices_with_pending("wipe"), NEVER_CONNECTED_AFTER_SECONDS)


def units(store: Store, hub: Hub | None, state: str | None = None, search: str = "",
          never_connected_after: float = NEVER_CONNECTED_AFTER_SECONDS) -> list[UnitOut]:
    """Enrolled devices, then units held for approval; ``search`` matches id, serial or batch."""
    now = store.clock()
    wipes_pending = store.devices_with_pending("wipe")
    found = [_enrolled(r, hub, now, wipes_pending, never_connected_after) for r in store.devices()]
    found += [
        UnitOut(id=h.device_id, state=h.state, connection="not enrolled", online=False,  # type: ignore[arg-type]
                online_since=None, last_seen=None, ui_alive=None, agent_version=h.agent_version, enrolled_at=None,
                revoked=False, serial_number=h.serial_number,
                batch=enrollment.batch_label(token.created_at, token.created_by))
        for h, token in store.enrollment_holds()]
    needle = search.strip().lower()
    return [u for u in found if (state is None or u.state == state)
            and (not needle or any(needle in (text or "").lower() for text in (u.id, u.serial_number, u.batch)))]
