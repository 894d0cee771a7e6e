"""The console's pages for management (the figures) and administrators (the audit log).

Both show what their JSON API answers (kiosk.server.figures_api, the audit routes of
kiosk.server.console_api). The chart is drawn on the server as SVG: no script, no
library, and every bar carries its number in words, so nothing is said by colour alone.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from aiohttp import web

from kiosk.server import figures
from kiosk.server.console_api import ApiError
from kiosk.server.device_api import STORE
from kiosk.server.figures_api import asked
from kiosk.server.pages import N_, Context, page
from kiosk.server.store import Store, UserRow

#: the chart's drawing area, in SVG units (the SVG scales to the page's width)
CHART_HEIGHT: Final = 160
BAR_WIDTH: Final = 28
BAR_GAP: Final = 14
AUDIT_PAGE_ROWS: Final = 200


@dataclass(frozen=True)
class Bar:
    x: int
    planned_height: int
    made_height: int
    period: str
    planned: str
    made: str


def _count(cell: figures.Cell) -> int:
    return cell if isinstance(cell, int) else 0  # "< 5" is drawn as nothing, and written as "< 5"


def chart(rows: list[figures.Row]) -> list[Bar]:
    """Bars of visits planned and made per period, for all teams together."""
    totals = [r for r in rows if r.team == "*"]
    tallest = max([_count(r.planned) for r in totals] + [_count(r.made) for r in totals] + [1])
    return [Bar(x=i * (BAR_WIDTH + BAR_GAP),
                planned_height=round(_count(r.planned) * CHART_HEIGHT / tallest),
                made_height=round(_count(r.made) * CHART_HEIGHT / tallest),
                period=r.period, planned=str(r.planned), made=str(r.made)) for i, r in enumerate(totals)]


@page("/figures", "figures.read", N_("Figures"), "figures.html")
async def figures_page(request: web.Request, user: UserRow) -> Context:
    try:
        found = await asyncio.to_thread(asked, request)
    except ApiError as exc:
        return {"error": str(exc), "rows": [], "bars": [], "query": request.query_string}
    return {"figures": found, "rows": found.rows, "bars": chart(found.rows), "chart_height": CHART_HEIGHT,
            "bar_width": BAR_WIDTH, "query": request.query_string, "error": None}


@page("/audit", "audit.verify", N_("Audit log"), "audit.html")
async def audit_page(request: web.Request, user: UserRow) -> Context:
    store = request.app[STORE]
    wanted = {k: request.query.get(k, "")[:100].strip() for k in ("actor", "action", "device_id")}
    entries = await store.run(Store.audit_entries, wanted["device_id"] or None, AUDIT_PAGE_ROWS,
                              actor=wanted["actor"] or None, action=wanted["action"] or None)
    checked, altered = (await asyncio.to_thread(store.check_audit_chain)
                        if request.query.get("check") == "1" else (None, None))
    return {"entries": [{"seq": e.seq, "at": datetime.fromtimestamp(e.at, figures.TZ).strftime("%Y-%m-%d %H:%M:%S"),
                         "actor": e.actor, "action": e.action, "device_id": e.device_id or "",
                         "detail": json.dumps(e.detail, ensure_ascii=False, sort_keys=True)}
                        for e in reversed(entries)],
            "wanted": wanted, "checked": checked, "altered": altered}
