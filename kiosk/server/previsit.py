"""The pre-visit check: shortly before a planned visit, is the citizen's screen ready to ring?

Ready means online, its screen app alive, and a camera and microphone present (as its
newest diagnostics say). The server asks each online unit with a visit coming up for fresh
diagnostics (one ``diagnostics`` command per visit); the caregiver's page shows what is
not ready, in plain words, in time to phone or visit instead. Judging is pure; the sweep
that queues the diagnostics is the only I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from kiosk.protocol import messages as m
from kiosk.protocol.schedule import upcoming
from kiosk.server import audit, commands, schedule
from kiosk.server.ca import Authority
from kiosk.server.hub import Hub
from kiosk.server.store import CitizenRow, Store, StoreUnavailable, UserRow

log = logging.getLogger("kiosk.server.previsit")

LEAD_SECONDS = 10 * 60.0  # default: warn from ten minutes before a visit
SWEEP_SECONDS = 30.0
#: diagnostics older than this before the visit say nothing of camera and microphone now
FRESH_SECONDS = LEAD_SECONDS + 5 * 60.0

Reason = Literal["no-screen", "offline", "screen-app-down", "no-camera", "no-microphone"]


@dataclass(frozen=True)
class UnitFacts:
    """What the server knows of a citizen's screen at the moment of the check."""

    assigned: bool
    online: bool
    ui_alive: bool | None
    last_seen: float | None
    checks: dict[str, str] | None  # name -> OK/WARN/FAIL from fresh diagnostics, None if none


@dataclass(frozen=True)
class Warning:
    citizen_id: str
    visit_at: float
    reasons: tuple[Reason, ...]
    last_seen: float | None


def reasons(facts: UnitFacts) -> tuple[Reason, ...]:
    """What stands in the way of the visit; empty when the screen is ready."""
    if not facts.assigned:
        return ("no-screen",)
    if not facts.online:
        return ("offline",)
    found: list[Reason] = []
    if facts.ui_alive is False or (facts.checks or {}).get("ui") == "FAIL":
        found.append("screen-app-down")
    if (facts.checks or {}).get("camera") == "FAIL":
        found.append("no-camera")
    if (facts.checks or {}).get("microphone") == "FAIL":
        found.append("no-microphone")
    return tuple(found)


def next_visit(store: Store, citizen_id: str, now: float, lead: float) -> float | None:
    """The citizen's next planned visit within ``lead`` seconds, if any."""
    zone = datetime.datetime.now().astimezone().tzinfo
    assert zone is not None
    soon = upcoming(schedule.plan(store, citizen_id), now, now + lead, zone)
    return soon[0].at if soon else None


def facts_of(store: Store, hub: Hub, citizen: CitizenRow, now: float) -> UnitFacts:
    if citizen.device_id is None:
        return UnitFacts(False, False, None, None, None)
    link = hub.links.get(citizen.device_id)
    device = store.device(citizen.device_id)
    diagnostics = store.last_result(citizen.device_id, "diagnostics")
    checks = None
    if diagnostics is not None and diagnostics.finished_at and now - diagnostics.finished_at <= FRESH_SECONDS:
        detail = json.loads(diagnostics.result or "{}").get("detail", {})
        checks = {c["name"]: c["status"] for c in detail.get("checks", []) if isinstance(c, dict)}
    return UnitFacts(True, link is not None, link.ui_alive if link else None,
                     link.last_seen if link else (device.last_seen if device else None), checks)


def warnings(store: Store, hub: Hub, citizens: Iterable[CitizenRow], lead: float = LEAD_SECONDS) -> list[Warning]:
    """A warning for each of these citizens whose screen is not ready for a visit within ``lead``."""
    now = store.clock()
    out = []
    for citizen in citizens:
        at = next_visit(store, citizen.id, now, lead)
        if at is None:
            continue
        facts = facts_of(store, hub, citizen, now)
        found = reasons(facts)
        if found:
            out.append(Warning(citizen.id, at, found, facts.last_seen))
    return out


def citizens_and_warnings(store: Store, hub: Hub, user: UserRow) -> tuple[list[CitizenRow], list[Warning]]:
    """The citizens this person cares for (an administrator: everyone), and their warnings."""
    mine = store.citizens_of(user.username, everyone=user.role == "admin")
    return mine, warnings(store, hub, mine)


class Sweep:
    """Every SWEEP_SECONDS: fresh diagnostics from each online screen with a visit coming up."""

    def __init__(self, store: Store, authority: Authority, hub: Hub, lead: float = LEAD_SECONDS) -> None:
        self.store, self.authority, self.hub, self.lead = store, authority, hub, lead
        self.asked: set[tuple[str, float]] = set()  # (device, visit time): asked once per visit
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._forever(), name="pre-visit-check")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _forever(self) -> None:
        while True:
            try:
                await self.once()
            except StoreUnavailable as exc:  # the hub's sweep says so in plain words already
                log.debug("pre-visit checks wait for the database: %s", exc)
            except Exception:  # a bad row must not end the checks of every other visit
                log.exception("pre-visit check failed; trying again in %.0f s", SWEEP_SECONDS)
            await asyncio.sleep(SWEEP_SECONDS)

    async def once(self) -> int:
        """Ask for diagnostics where a visit is near; how many units were asked."""
        now = self.store.clock()
        asked = 0
        for device_id, at in await self.store.run(_visits_soon, self.hub, now, self.lead):
            if (device_id, at) in self.asked:
                continue
            self.asked.add((device_id, at))
            await self.store.run(commands.queue, self.authority, device_id, m.Diagnostics(), audit.SERVER,
                                 ttl_seconds=self.lead)
            await self.hub.deliver_pending(device_id)
            asked += 1
        self.asked = {(d, at) for d, at in self.asked if at >= now}
        return asked


def _visits_soon(store: Store, hub: Hub, now: float, lead: float) -> list[tuple[str, float]]:
    """(unit, visit time) for each online unit whose citizen has a visit within ``lead``."""
    soon = []
    for citizen in store.citizens_of("", everyone=True):
        if citizen.device_id is None or citizen.device_id not in hub.links:
            continue
        at = next_visit(store, citizen.id, now, lead)
        if at is not None:
            soon.append((citizen.device_id, at))
    return soon
