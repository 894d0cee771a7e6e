"""Management's figures from the real store: counts that match the calls and plans made,
small cells hidden, finished days counted once and still the same, and the CSV the same rows."""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta
from pathlib import Path

import pytest

from kiosk.protocol import messages as m
from kiosk.protocol import schedule as plans
from kiosk.server import figures, teams
from kiosk.server.store import CallRow, Store, VisitRow
from tests.server.fakes import FakeClock, open_store

TZ = figures.TZ
DAY0 = date(2027, 3, 22)  # a Monday; the clocks go forward on Sunday 28 March (DST)


def at(day: date, hour: int, minute: int = 0) -> float:
    return datetime.combine(day, time(hour, minute), tzinfo=TZ).timestamp()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(at(DAY0, 8))


@pytest.fixture
def store(tmp_path: Path, clock: FakeClock) -> Iterator[Store]:
    db = open_store(tmp_path / "server", clock)
    for name, team in (("anne", "Hjemmeplejen Nord"), ("bo", "Hjemmeplejen Nord"), ("carl", "Psykiatri"),
                       ("dorte", None)):
        db.add_user(name, "(not a hash)", "caregiver", "cli:test")
        if team:
            with db.tx() as conn:
                teams.set_teams(conn, name, [team])
    yield db
    db.close()


def call(store: Store, caller: str, placed_at: float, reason: str, talk: float | None = None) -> None:
    connected = placed_at + 5 if talk is not None else None
    store.add_call_record(CallRow(
        id=str(uuid.uuid4()), caller=caller, citizen_id=str(uuid.uuid4()), device_id=None, placed_at=placed_at,
        rang_at=placed_at + 1, answered_at=connected, connected_at=connected,
        ended_at=placed_at + 5 + (talk or 30), end_reason=reason, ring_seconds=4.0, talk_seconds=talk, facts=None))


def plan(store: Store, creator: str, first: float, repeat: str) -> VisitRow:
    with store.tx() as conn:
        citizen_id = store.add_citizen(conn, "Borger", None, [creator])
        row = VisitRow(str(uuid.uuid4()), citizen_id, first, "Anne", "Sygeplejerske", "", repeat, creator, 0.0)
        store.add_visit(conn, row)
    return row


def rows(found: figures.Figures, team: str = figures.ALL_TEAMS) -> dict[str, figures.Row]:
    return {r.period: r for r in found.rows if r.team == team}


def test_calls_are_counted_by_outcome_and_team_with_small_cells_hidden(store: Store) -> None:
    for i in range(6):  # Nord: six made calls of 2, 4, ... 12 minutes
        call(store, "anne" if i % 2 else "bo", at(DAY0, 9, i), "hung_up_by_staff", talk=120.0 * (i + 1))
    for i in range(5):
        call(store, "carl", at(DAY0, 10, i), "not_answered")
    for reason in ("device_offline", "device_offline", "screen_not_running"):
        call(store, "dorte", at(DAY0, 11), reason)
    call(store, "carl", at(DAY0, 12), "connection_lost", talk=60.0)  # media flowed: made

    found = figures.figures(store, "day", DAY0, DAY0 + timedelta(days=1))
    everyone = rows(found)[DAY0.isoformat()]
    assert (everyone.made, everyone.unanswered, everyone.failed) == (7, 5, "< 5")
    assert everyone.failed_by_cause["device_offline"] == "< 5" and everyone.failed_by_cause["did_not_ring"] == "< 5"
    assert everyone.total_minutes == round((120 * 21 + 60) / 60, 1)
    assert everyone.mean_minutes == round((120 * 21 + 60) / 60 / 7, 2)
    nord = rows(found, "Hjemmeplejen Nord")[DAY0.isoformat()]
    assert (nord.made, nord.unanswered, nord.mean_minutes) == (6, "< 5", 7.0)
    psyk = rows(found, "Psykiatri")[DAY0.isoformat()]
    assert (psyk.made, psyk.unanswered, psyk.mean_minutes) == ("< 5", 5, "< 5"), "one made call hides its length"
    assert "dorte" not in {r.team for r in found.rows}, "people without a team count only in all teams"


def test_planned_visits_match_the_plans_unrolled_across_dst(store: Store) -> None:
    visits = [plan(store, "anne", at(DAY0, 8), "daily"),
              plan(store, "anne", at(DAY0 + timedelta(days=2), 9), "weekly"),
              plan(store, "bo", at(DAY0, 10), "weekdays"),
              plan(store, "carl", at(DAY0 + timedelta(days=1), 11), "once"),
              plan(store, "bo", at(DAY0 + timedelta(days=40), 11), "daily")]  # after the span
    start, end = DAY0 - timedelta(days=3), DAY0 + timedelta(days=21)
    found = figures.figures(store, "day", start, end)
    scheduled: list[m.ScheduledVisit] = m.convert(
        [{"id": v.id, "at": v.at, "staff_name": v.staff_name, "staff_role": v.staff_role, "kind": v.kind,
          "repeat": v.repeat} for v in visits], list[m.ScheduledVisit])
    shown = rows(found)
    for day in (start + timedelta(days=i) for i in range((end - start).days)):
        expected = len(plans.upcoming(scheduled, at(day, 0), at(day + timedelta(days=1), 0), TZ))
        assert shown[day.isoformat()].planned == figures.small(expected), day
    weeks = rows(figures.figures(store, "week", start, end))
    assert weeks["2027-W13"].planned == 7 + 1 + 5  # daily, the weekly one, weekdays; across the DST change
    assert rows(figures.figures(store, "month", start, end))["2027-03"].planned == figures.small(10 + 2 + 8 + 1)


def test_finished_days_are_counted_once_and_stay_the_same(store: Store, clock: FakeClock) -> None:
    for day in range(4):
        for i in range(5 + day):
            call(store, "anne", at(DAY0 + timedelta(days=day), 9, i), "hung_up_by_citizen", talk=60.0)
    clock.now = at(DAY0 + timedelta(days=3), 12)
    span = (DAY0, DAY0 + timedelta(days=7))
    before = figures.figures(store, "day", *span)
    assert [rows(before)[(DAY0 + timedelta(days=d)).isoformat()].made for d in range(4)] == [5, 6, 7, 8]
    clock.now = at(DAY0 + timedelta(days=6), 12)  # every one of those days is now counted and kept
    after = figures.figures(store, "day", *span)
    assert after.rows == before.rows
    call(store, "anne", at(DAY0 + timedelta(days=6), 9), "not_answered")  # today's calls count at once
    today = rows(figures.figures(store, "day", *span))[(DAY0 + timedelta(days=6)).isoformat()]
    assert today.unanswered == "< 5"


def test_citizens_with_a_unit_per_team(store: Store) -> None:
    with store.tx() as conn:
        for i in range(6):
            store.add_citizen(conn, f"Borger {i}", None, ["anne"] if i < 3 else ["anne", "carl"])
    found = figures.figures(store, "month", DAY0, DAY0 + timedelta(days=1))
    assert found.citizens_with_unit == {figures.ALL_TEAMS: "< 5"}, "no citizen has a unit yet"


def test_citizens_with_a_unit_follow_assignments_releases_and_teams(store: Store) -> None:
    """Kept between requests, and still right after every kind of change the console makes."""
    def with_unit() -> dict[str, figures.Cell]:
        return figures.figures(store, "month", DAY0, DAY0 + timedelta(days=1)).citizens_with_unit

    def add(n: int, caregivers: list[str]) -> list[str]:
        with store.tx() as conn:
            devices = [f"unit-{uuid.uuid4()}"[:36] for _ in range(n)]
            for device_id in devices:
                store.add_device(conn, device_id, "1", "(no certificate)", "1.0")
                store.add_citizen(conn, "Borger", device_id, caregivers)
        return devices

    nord = add(6, ["anne", "carl"])
    assert with_unit() == {figures.ALL_TEAMS: 6, "Hjemmeplejen Nord": 6, "Psykiatri": 6}
    assert with_unit() == {figures.ALL_TEAMS: 6, "Hjemmeplejen Nord": 6, "Psykiatri": 6}, "the same when kept"
    with store.tx() as conn:
        store.release_device(conn, nord[0])  # wiped: the citizen keeps their record, not the unit
    assert with_unit() == {figures.ALL_TEAMS: 5, "Hjemmeplejen Nord": 5, "Psykiatri": 5}
    add(1, ["bo"])
    assert with_unit() == {figures.ALL_TEAMS: 6, "Hjemmeplejen Nord": 6, "Psykiatri": 5}
    with store.tx() as conn:
        teams.set_teams(conn, "carl", ["Hjemmeplejen Syd"])
    assert with_unit() == {figures.ALL_TEAMS: 6, "Hjemmeplejen Nord": 6, "Hjemmeplejen Syd": 5}


def test_the_csv_holds_the_same_cells(store: Store) -> None:
    for i in range(5):
        call(store, "anne", at(DAY0, 9, i), "hung_up_by_staff", talk=90.0)
    found = figures.figures(store, "week", DAY0, DAY0 + timedelta(days=14))
    table = list(csv.DictReader(io.StringIO(figures.csv_text(found.rows))))
    assert [(r["period"], r["team"], r["made"], r["unanswered"]) for r in table] == \
        [(r.period, r.team, str(r.made), str(r.unanswered)) for r in found.rows]
    assert table[0]["mean_minutes"] == "1.5" and table[0]["failed_device_offline"] == "< 5"
