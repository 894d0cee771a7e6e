"""The console API for caregivers beyond calling and planning: a citizen's call history, and
the pre-visit warnings for my citizens (kiosk.server.previsit)."""

from __future__ import annotations

from typing import Literal

import msgspec
from aiohttp import web

from kiosk.server import api_schema as s
from kiosk.server import calls, previsit
from kiosk.server.console_api import USER, own_citizen, route
from kiosk.server.device_api import HUB, STORE, json_response
from kiosk.server.store import Store

#: How many of a citizen's calls their page lists, newest first.
CALL_HISTORY = 50


class PreVisitWarningOut(msgspec.Struct):
    citizen_id: str
    visit_at: float
    #: what stands in the way, most fundamental first
    reasons: list[Literal["no-screen", "offline", "screen-app-down", "no-camera", "no-microphone"]]
    last_seen: float | None


@route("GET", "/api/citizens/{citizen_id}/calls", "calls.make", "A citizen's calls, newest first (mine only)",
       response=list[s.CallRecordOut])
async def citizen_calls(request: web.Request) -> web.StreamResponse:
    citizen_id = await own_citizen(request, request.match_info["citizen_id"])
    rows = await request.app[STORE].run(Store.calls_of, citizen_id, CALL_HISTORY)
    return json_response([calls.record_view(r) for r in rows])


@route("GET", "/api/pre-visit-warnings", "visits.read",
       "My citizens whose screen is not ready for a visit in the next minutes, and why",
       response=list[PreVisitWarningOut])
async def pre_visit_warnings(request: web.Request) -> web.StreamResponse:
    _, found = await request.app[STORE].run(previsit.citizens_and_warnings, request.app[HUB], request[USER])
    return json_response([PreVisitWarningOut(w.citizen_id, w.visit_at, list(w.reasons), w.last_seen) for w in found])
