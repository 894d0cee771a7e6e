"""The console API for the people who run the fleet: logistics (batches of enrollment tokens,
approval, assignment) and support (a unit's state, diagnostics, logs and pending commands).

Support sees units only: nothing here answers with a citizen's name, plan or calls.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Annotated, Any, Literal

import msgspec
from aiohttp import web

from kiosk.protocol import messages as m
from kiosk.protocol import screenshot
from kiosk.protocol.errors import ProtocolError
from kiosk.server import api_schema as s
from kiosk.server import assignment, commands, sheet, units
from kiosk.server.console_api import ApiError, actor, make_provisioning_files, read_body, read_query, route
from kiosk.server.device_api import AUTHORITY, HUB, STORE, json_response
from kiosk.server.hub import Hub
from kiosk.server.store import CommandRow, Store

#: How many of a unit's commands its page lists, newest first.
RECENT_COMMANDS = 20


class UnitQuery(s.PageQuery, forbid_unknown_fields=False):
    """The query of ``GET /api/units``: a state to show, text to find in id, serial or batch,
    and which page of the units found."""

    state: units.UnitState | None = None
    q: Annotated[str, msgspec.Meta(max_length=100)] = ""


class BatchRequest(msgspec.Struct, forbid_unknown_fields=True):
    """A batch of units to flash: ``count`` provisioning files and their printable sheet."""

    server_url: Annotated[str, msgspec.Meta(pattern=s.HTTPS_URL, max_length=200)]
    count: Annotated[int, msgspec.Meta(ge=1, le=sheet.MAX_UNITS)] = 1  # larger runs: several batches
    expires_in: s.Seconds = 7 * 24 * 3600.0
    language: Literal["da", "en"] = "da"  # of the sheet's labels


class BatchOut(msgspec.Struct):
    files: list[s.ProvisioningFileOut]
    #: the PDF sheet, one QR code (the file's content) and label per unit, base64
    sheet_pdf: str
    expires_at: float


class AssignIn(msgspec.Struct, forbid_unknown_fields=True):
    """Hand an enrolled, unassigned unit to a citizen; the care team may call them."""

    citizen_name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    caregivers: Annotated[list[s.Name], msgspec.Meta(max_length=20)] = []


class AssignOut(msgspec.Struct):
    citizen_id: str
    command_id: str


class CommandBrief(msgspec.Struct):
    id: str
    kind: str
    state: str
    created_by: str
    created_at: float
    expires_at: float
    outcome: str | None
    reason: str | None


class CheckOut(msgspec.Struct):
    name: str
    status: Literal["OK", "WARN", "FAIL"]
    detail: str


class LookOut(msgspec.Struct):
    """Support's last look at the screen: the citizen's answer, and the picture only after a yes
    (or from an unassigned unit), as the unit signed it."""

    answer: str  # yes, no, no-answer, unassigned
    at: float | None
    png: str | None  # base64


class RingTestOut(msgspec.Struct):
    """Support's last test ring, as the unit signed it: how it ended (answered after how many
    seconds, not answered, a real call took the screen) and its sound; or why it did not ring."""

    at: float | None
    heard: m.RingTestHeard | None  # None: it did not ring, ``reason`` says why (such as a call on)
    reason: str | None


class UnitDetail(msgspec.Struct):
    """What support sees of a unit: never whom it belongs to."""

    unit: units.UnitOut
    diagnostics: list[CheckOut] | None
    diagnostics_at: float | None
    logs: list[str] | None
    logs_at: float | None
    commands: list[CommandBrief]
    #: the newest wipe's signed receipt, checked again against the unit's certificate now
    wipe: s.CommandOut | None
    look: LookOut | None = None
    test_ring: RingTestOut | None = None


# ------------------------------------------------------------------------------ units
@route("GET", "/api/units", "devices.read", "Units by state, with search (id, serial number, token batch), "
       "a page at a time",
       response=list[units.UnitOut], query=UnitQuery)
async def list_units(request: web.Request) -> web.StreamResponse:
    q = read_query(request, UnitQuery)
    found = await request.app[STORE].run(units.units, request.app[HUB], q.state, q.q, offset=q.offset, limit=q.limit)
    return json_response(found.units)


def unit_detail(store: Store, hub: Hub, device_id: str) -> UnitDetail | None:
    """What support sees of an enrolled unit; None if there is none with that id."""
    unit = units.unit(store, hub, device_id)
    if unit is None:
        return None
    diagnostics, logs, wipe, look, rang = (store.last_result(unit.id, kind)
                                           for kind in ("diagnostics", "logs", "wipe", "screenshot", "test-ring"))
    device = store.device(unit.id)
    return UnitDetail(
        unit=unit,
        diagnostics=msgspec.convert(_detail(diagnostics).get("checks", []), list[CheckOut]) if diagnostics else None,
        diagnostics_at=diagnostics.finished_at if diagnostics else None,
        logs=[str(line) for line in _detail(logs).get("lines", [])] if logs else None,
        logs_at=logs.finished_at if logs else None,
        commands=[_brief(c) for c in store.commands_of(unit.id, RECENT_COMMANDS) if c.kind not in PRIVATE_KINDS],
        wipe=msgspec.convert(commands.view(wipe, device.cert_pem if device else None), s.CommandOut) if wipe else None,
        look=_look(look) if look else None,
        test_ring=_rang(rang) if rang else None,
    )


def _look(row: CommandRow) -> LookOut | None:
    """The unit's answer as the screenshot rules read it (kiosk.protocol.screenshot)."""
    if row.outcome != "ok":
        return None
    try:
        taken = screenshot.read_result(_detail(row))
    except ProtocolError:
        return None  # refused on the way in already; nothing to show
    return LookOut(taken.answer, row.finished_at, base64.b64encode(taken.png).decode() if taken.png else None)


def _rang(row: CommandRow) -> RingTestOut:
    """The unit's account of a test ring, held to the protocol's rules (kiosk.protocol.messages.RingTestHeard);
    a failure states its reason, and a refusal in a call also its answer ``in-call``."""
    try:
        heard: m.RingTestHeard | None = m.convert(_detail(row), m.RingTestHeard)
    except ProtocolError:  # a failure without an account (the screen app not running), or refused on the way in
        heard = None
    return RingTestOut(row.finished_at, heard, row.reason if row.outcome != "ok" else None)


#: Commands whose mere timing speaks of a citizen's life (their visit plan): not listed to support.
PRIVATE_KINDS = frozenset({"schedule"})


def _detail(row: CommandRow) -> dict[str, Any]:
    result = json.loads(row.result) if row.result else {}
    detail = result.get("detail", {})
    return detail if isinstance(detail, dict) else {}


def _brief(row: CommandRow) -> CommandBrief:
    return CommandBrief(row.id, row.kind, str(row.state), row.created_by, row.created_at, row.expires_at,
                        row.outcome, row.reason)


@route("GET", "/api/units/{device_id}", "devices.read",
       "A unit for support: state, last diagnostics and logs, its commands, the last wipe receipt",
       response=UnitDetail)
async def get_unit(request: web.Request) -> web.StreamResponse:
    detail = await request.app[STORE].run(unit_detail, request.app[HUB], request.match_info["device_id"])
    if detail is None:
        raise ApiError(404, "unknown-device", "no such enrolled unit")
    return json_response(detail)


async def _decide(request: web.Request, verdict: str) -> web.StreamResponse:
    await read_body(request, s.Empty)
    if not await request.app[STORE].run(Store.decide_enrollment, request.match_info["device_id"], verdict,
                                        actor(request)):
        raise ApiError(404, "not-awaiting", "no unit awaiting approval with that id")
    return web.Response(status=204)


@route("POST", "/api/units/{device_id}/approve", "devices.approve",
       "Approve a unit whose token expired on the shelf: it enrolls at its next try", s.Empty, status=204)
async def approve_unit(request: web.Request) -> web.StreamResponse:
    return await _decide(request, "approved")


@route("POST", "/api/units/{device_id}/reject", "devices.approve",
       "Reject a unit awaiting approval: it stays out", s.Empty, status=204)
async def reject_unit(request: web.Request) -> web.StreamResponse:
    return await _decide(request, "rejected")


@route("POST", "/api/units/{device_id}/assign", "command:assign",
       "Assign an enrolled unit to a new citizen and name the care team", AssignIn, AssignOut, status=201,
       errors=(409,))
async def assign_unit(request: web.Request) -> web.StreamResponse:
    req: AssignIn = await read_body(request, AssignIn)
    device_id = request.match_info["device_id"]
    citizen_id, command = await request.app[STORE].run(assignment.assign, request.app[AUTHORITY], device_id,
                                                       req.citizen_name, req.caregivers, actor(request))
    await request.app[HUB].deliver_pending(device_id)
    return json_response(AssignOut(citizen_id, command.id), status=201)


# ---------------------------------------------------------------------------- batches
@route("POST", "/api/enroll-batches", "tokens.create",
       "A batch of provisioning files with one-time tokens, and its printable sheet (PDF, QR per unit)",
       BatchRequest, BatchOut, status=201)
async def create_batch(request: web.Request) -> web.StreamResponse:
    req: BatchRequest = await read_body(request, BatchRequest)
    store, authority = request.app[STORE], request.app[AUTHORITY]
    files = await store.run(make_provisioning_files, authority, req.server_url, req.count, req.expires_in,
                            actor(request))
    expires_at = store.clock() + req.expires_in
    # some seconds for a large batch: not on the event loop, which carries every unit's link
    pdf = await asyncio.to_thread(sheet.render, files, authority.municipality, expires_at, req.language)
    return json_response(BatchOut([s.ProvisioningFileOut(n, c) for n, c in files],
                                  base64.b64encode(pdf).decode(), expires_at), status=201)
