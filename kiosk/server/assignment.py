"""Handing a unit to a citizen: the citizen's record, their care team, and the signed ``assign``.

One path for the CLI (``kiosk-server citizen add``) and the console API. The citizen's name
goes to the unit inside the signed command only; the audit log names the citizen by id.
"""

from __future__ import annotations

import sqlalchemy as sa

from kiosk.protocol import messages as m
from kiosk.server import commands
from kiosk.server.ca import Authority
from kiosk.server.commands import CommandError
from kiosk.server.store import Store


def assign(store: Store, authority: Authority, device_id: str, citizen_name: str, caregivers: list[str],
           actor: str) -> tuple[str, m.Command]:
    """Register the citizen on this unit and queue the assignment; (citizen id, command)."""
    rows = {u: store.user(u) for u in caregivers}
    unknown = [u for u, row in rows.items() if row is None]
    if unknown:
        raise CommandError("unknown-user", f"no such user: {', '.join(unknown)}", 404)
    device = store.device(device_id)
    if device is None or device.revoked_at is not None:
        raise CommandError("unknown-device", f"no enrolled unit {device_id}", 404)
    staff = [row.display_name or u for u, row in rows.items() if row is not None]
    action = commands.parse_action("assign", {"citizen_name": citizen_name, "contact_staff": staff})
    try:
        with store.tx() as conn:
            citizen_id = store.add_citizen(conn, citizen_name, device_id, list(rows))
            store.append_audit(conn, actor, "citizen-added", device_id, citizen_id=citizen_id)
    except sa.exc.IntegrityError:
        raise CommandError("unit-assigned", f"unit {device_id} is assigned to another citizen already; "
                           "collect and wipe it first", 409) from None
    return citizen_id, commands.queue(store, authority, device_id, action, actor)
