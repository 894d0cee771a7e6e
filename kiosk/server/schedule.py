"""The citizens' visit plans: add, move and cancel planned visits, and send each change to
the citizen's screen as one signed ``schedule`` command carrying the whole plan.

One path for the CLI and the console API. The audit log names the citizen and the visit
by id only: who visits whom, and when, is personal data.
"""

from __future__ import annotations

import math
import uuid
from typing import Any

from kiosk.protocol import messages as m
from kiosk.protocol.errors import ProtocolError
from kiosk.server import commands
from kiosk.server.ca import Authority
from kiosk.server.commands import CommandError
from kiosk.server.store import Store, VisitRow


def plan(store: Store, citizen_id: str) -> list[m.ScheduledVisit]:
    return [_checked(_fields(r)) for r in store.visits_of(citizen_id)]


def view(row: VisitRow) -> dict[str, Any]:
    return {**_fields(row), "citizen_id": row.citizen_id}


def _fields(row: VisitRow) -> dict[str, Any]:
    return {"id": row.id, "at": row.at, "staff_name": row.staff_name, "staff_role": row.staff_role,
            "kind": row.kind, "repeat": row.repeat}


def add(store: Store, authority: Authority, citizen_id: str, fields: dict[str, Any], actor: str) -> VisitRow:
    """Plan a visit (``at``, ``staff_name``, ``staff_role``, optional ``kind`` and ``repeat``)."""
    if store.citizen(citizen_id) is None:
        raise CommandError("unknown-citizen", f"no citizen with id {citizen_id}", 404)
    if len(store.visits_of(citizen_id)) >= m.MAX_VISITS:
        raise CommandError("too-many-visits", f"a citizen's plan holds at most {m.MAX_VISITS} visits", 409)
    visit = _checked({**fields, "id": str(uuid.uuid4())})
    row = VisitRow(id=visit.id, citizen_id=citizen_id, at=visit.at, staff_name=visit.staff_name,
                   staff_role=visit.staff_role, kind=visit.kind, repeat=visit.repeat, created_by=actor,
                   created_at=store.clock())
    with store.tx() as conn:
        store.add_visit(conn, row)
        store.append_audit(conn, actor, "visit-added", None, citizen_id=citizen_id, visit_id=row.id)
    push(store, authority, citizen_id, actor)
    return row


def move(store: Store, authority: Authority, visit_id: str, at: float, actor: str) -> VisitRow:
    row = _existing(store, visit_id)
    _checked({**_fields(row), "at": at})
    with store.tx() as conn:
        store.move_visit(conn, visit_id, at)
        store.append_audit(conn, actor, "visit-moved", None, citizen_id=row.citizen_id, visit_id=visit_id)
    push(store, authority, row.citizen_id, actor)
    return _existing(store, visit_id)


def cancel(store: Store, authority: Authority, visit_id: str, actor: str) -> VisitRow:
    row = _existing(store, visit_id)
    with store.tx() as conn:
        store.cancel_visit(conn, visit_id)
        store.append_audit(conn, actor, "visit-cancelled", None, citizen_id=row.citizen_id, visit_id=visit_id)
    push(store, authority, row.citizen_id, actor)
    return row


def push(store: Store, authority: Authority, citizen_id: str, actor: str) -> str | None:
    """Send the citizen's screen its whole plan; the command's id, or None without a screen."""
    citizen = store.citizen(citizen_id)
    if citizen is None or citizen.device_id is None:
        return None  # the plan waits on the server; it goes out with the next change
    return commands.queue(store, authority, citizen.device_id, m.Schedule(visits=plan(store, citizen_id)), actor).id


def _existing(store: Store, visit_id: str) -> VisitRow:
    row = store.visit(visit_id)
    if row is None:
        raise CommandError("unknown-visit", f"no planned visit with id {visit_id}", 404)
    return row


def _checked(fields: dict[str, Any]) -> m.ScheduledVisit:
    try:
        visit: m.ScheduledVisit = m.convert(fields, m.ScheduledVisit)
    except ProtocolError as exc:
        raise CommandError("invalid-visit", f"a visit needs at (Unix time), staff_name and staff_role "
                           f"(1-100 characters), and repeat one of {', '.join(m.REPEATS)}: {exc.detail}") from None
    if not math.isfinite(visit.at) or visit.at <= 0:
        raise CommandError("invalid-visit", "the visit's time must be a real moment (Unix time)")
    return visit
