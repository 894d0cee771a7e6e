"""The console API of management's figures: JSON for the page, and the same rows as CSV."""

from __future__ import annotations

import asyncio
from datetime import date, datetime, timedelta
from typing import Annotated

import msgspec
from aiohttp import web

from kiosk.server import figures
from kiosk.server.console_api import ApiError, read_query, route
from kiosk.server.device_api import STORE, json_response

#: the longest span asked for at once (three years of days is about a thousand rows)
MAX_DAYS = 3 * 366


#: "not given" (a query parameter is text or absent, never null): the defaults are computed
UNSET = date(1, 1, 1)


class FiguresQuery(msgspec.Struct, forbid_unknown_fields=False):
    """Which figures: ``period`` per row, local days ``from`` up to (not including) ``to``.
    Without dates: the last twelve months (by month), up to and including today."""

    period: figures.Period = "month"
    start: Annotated[date, msgspec.Meta(description="first local day, e.g. 2026-01-01")] = \
        msgspec.field(name="from", default=UNSET)
    end: Annotated[date, msgspec.Meta(description="the local day after the last, e.g. 2027-01-01")] = \
        msgspec.field(name="to", default=UNSET)


def asked(request: web.Request) -> figures.Figures:
    """The figures the request's query asks for (management's page asks the same way)."""
    q = read_query(request, FiguresQuery)
    today = datetime.fromtimestamp(request.app[STORE].clock(), figures.TZ).date()
    end = q.end if q.end != UNSET else today + timedelta(days=1)
    start = q.start if q.start != UNSET else date(max(end.year - 1, 1), end.month, 1)
    if not start < end:
        raise ApiError(400, "invalid", "'from' must be a day before 'to'")
    if (end - start).days > MAX_DAYS:
        raise ApiError(400, "invalid", f"at most {MAX_DAYS} days at once; ask for a shorter span")
    return figures.figures(request.app[STORE], q.period, start, end)


@route("GET", "/api/figures", "figures.read", "Visits planned, made, unanswered and failed (by cause), "
       "durations, per period and team; citizens with a unit. Any count below 5 is \"< 5\"",
       response=figures.Figures, query=FiguresQuery)
async def get_figures(request: web.Request) -> web.StreamResponse:
    # counting the days not counted yet may take a while once a day: off the event loop
    return json_response(await asyncio.to_thread(asked, request))


@route("GET", "/api/figures.csv", "figures.read", "The same figures as CSV (the same cells, \"< 5\" included)",
       query=FiguresQuery, media_type="text/csv")
async def get_figures_csv(request: web.Request) -> web.StreamResponse:
    found = await asyncio.to_thread(asked, request)
    name = f"skaermbesoeg-{found.period}-{found.start.isoformat()}-{found.end.isoformat()}.csv"
    return web.Response(text=figures.csv_text(found.rows), content_type="text/csv", charset="utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})
