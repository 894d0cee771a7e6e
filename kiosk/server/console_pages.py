"""The console's pages for logistics, support and caregivers (the frame is kiosk.server.pages).

Each handler gathers what its page shows from the same functions the JSON API answers
with; the actions on the page go through that API. The pages of units never show whom
a unit belongs to: support may open them.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from kiosk.protocol import messages as m
from kiosk.server import auth, calls, previsit, schedule, units
from kiosk.server.console_api import citizen_planned_by
from kiosk.server.device_api import HUB, STORE
from kiosk.server.fleet_api import unit_detail
from kiosk.server.pages import N_, STATIC, Context, language_of, page
from kiosk.server.store import Store, UserRow

#: What a person may do to a unit from its page, by command kind, in the order shown (English; translated).
COMMAND_WORDS = {"ping": N_("Ping"), "diagnostics": N_("Refresh diagnostics"), "logs": N_("Fetch recent logs"),
                 "restart-ui": N_("Restart the screen app"), "reboot": N_("Reboot the unit"),
                 "screenshot": N_("See the screen (the citizen is asked first)"), "test-ring": N_("Test ring")}
REPEAT_WORDS = {"once": N_("Once"), "daily": N_("Every day"), "weekdays": N_("Weekdays"), "weekly": N_("Every week")}
ENDINGS = json.loads((STATIC / "call-endings.json").read_text())


def _can(user: UserRow) -> Any:
    return lambda permission: auth.may(user.role, permission)


@page("/care", "calls.make", N_("My citizens"), "care.html")
async def care(request: web.Request, user: UserRow) -> Context:
    hub = request.app[HUB]
    mine, found = await request.app[STORE].run(previsit.citizens_and_warnings, hub, user)
    warnings = {w.citizen_id: w for w in found}
    return {"citizens": [{"id": c.id, "name": c.name,
                          "online": c.device_id is not None and hub.reach(c.device_id) is not None,
                          "warning": warnings.get(c.id)} for c in mine]}


@page("/citizens/{citizen_id}", "visits.read", N_("Planned visits and calls"), "citizen.html", nav=False)
async def citizen(request: web.Request, user: UserRow) -> Context:
    hub = request.app[HUB]

    def gather(store: Store, citizen_id: str) -> Context | None:
        row = citizen_planned_by(store, user, citizen_id)
        if row is None:
            return None
        return {"citizen": row, "warning": next(iter(previsit.warnings(store, hub, [row])), None),
                "visits": [schedule.view(v) for v in store.visits_of(citizen_id)],
                "calls": [calls.record_view(c) for c in store.calls_of(citizen_id, 50)]}
    found = await request.app[STORE].run(gather, request.match_info["citizen_id"])
    if found is None:
        raise web.HTTPNotFound()  # another's citizen is "no such page": it tells nothing of who exists
    return {**found, "repeats": m.REPEATS,
            "default_staff_name": user.display_name or user.username, "repeat_words": REPEAT_WORDS,
            "endings": ENDINGS[language_of(request)]["headlines"]}


#: The units one page lists (each row with its forms): a fleet of thousands is found by state and search.
UNITS_SHOWN = 100


@page("/units", "devices.read", N_("Units"), "units.html")
async def unit_list(request: web.Request, user: UserRow) -> Context:
    state = request.query.get("state") or None
    search = request.query.get("q", "")[:100]
    if state not in (None, *units.UNIT_STATES):
        state = None  # an unknown filter shows everything rather than an error page
    store = request.app[STORE]
    found = await store.run(units.units, request.app[HUB], state, search, limit=UNITS_SHOWN)
    return {"units": found.units, "found": found.total, "states": units.UNIT_STATES, "state": state or "",
            "q": search, "can": _can(user),
            "caregivers": await store.run(Store.caregivers) if auth.may(user.role, "command:assign") else []}


@page("/units/{device_id}", "devices.read", N_("Unit"), "unit.html", nav=False)
async def unit_page(request: web.Request, user: UserRow) -> Context:
    detail = await request.app[STORE].run(unit_detail, request.app[HUB], request.match_info["device_id"])
    if detail is None:
        raise web.HTTPNotFound()
    can = _can(user)
    return {"detail": detail, "can": can,
            "actions": [k for k in COMMAND_WORDS if k in m.COMMAND_KINDS and can(f"command:{k}")],
            "command_words": COMMAND_WORDS}


@page("/batches/new", "tokens.create", N_("New batch"), "batch.html")
async def new_batch(request: web.Request, user: UserRow) -> Context:
    return {"server_url": request.app.get(DEVICE_URL, "")}


#: The device port's address as units reach it, to fill in the batch form (set by the server).
DEVICE_URL: web.AppKey[str] = web.AppKey("device_url", str)
