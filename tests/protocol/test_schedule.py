"""Unrolling a visit plan's repeats (kiosk.protocol.schedule), across daylight saving."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from kiosk.protocol import messages as m
from kiosk.protocol.schedule import MAX_PER_VISIT, upcoming

CPH = ZoneInfo("Europe/Copenhagen")


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=CPH).timestamp()


def visit(first: str, repeat: m.Repeat = "once", name: str = "Anne") -> m.ScheduledVisit:
    return m.ScheduledVisit(id=name, at=at(first), staff_name=name, staff_role="sygeplejerske", repeat=repeat)


def local(visits: list[m.PlannedVisit]) -> list[str]:
    return [datetime.fromtimestamp(v.at, CPH).strftime("%a %d %H:%M") for v in visits]


def test_a_single_visit_shows_only_inside_the_window() -> None:
    plan = [visit("2026-11-30 10:30")]
    assert local(upcoming(plan, at("2026-11-30 09:00"), at("2026-12-01 00:00"), CPH)) == ["Mon 30 10:30"]
    assert upcoming(plan, at("2026-11-30 11:00"), at("2026-12-02 00:00"), CPH) == []


def test_every_morning_at_eight_keeps_eight_across_the_clock_change() -> None:
    plan = [visit("2026-10-23 08:00", "daily")]  # summer time ends on Sunday 25 October
    shown = upcoming(plan, at("2026-10-24 00:00"), at("2026-10-27 00:00"), CPH)
    assert local(shown) == ["Sat 24 08:00", "Sun 25 08:00", "Mon 26 08:00"]
    assert shown[1].at - shown[0].at == 25 * 3600  # the night to Sunday was an hour longer


def test_weekdays_skip_the_weekend_and_weekly_keeps_its_weekday() -> None:
    plan = [visit("2026-11-27 09:00", "weekdays", "Bo"), visit("2026-11-18 14:00", "weekly", "Cai")]
    shown = upcoming(plan, at("2026-11-28 00:00"), at("2026-12-03 00:00"), CPH)
    assert local(shown) == ["Mon 30 09:00", "Tue 01 09:00", "Wed 02 09:00", "Wed 02 14:00"]
    assert [v.staff_name for v in shown] == ["Bo", "Bo", "Bo", "Cai"]


def test_nothing_before_the_first_visit_and_a_bounded_count_per_visit() -> None:
    plan = [visit("2026-12-05 08:00", "daily")]
    assert upcoming(plan, at("2026-12-01 00:00"), at("2026-12-05 00:00"), CPH) == []
    far = upcoming(plan, at("2026-12-01 00:00"), at("2027-12-01 00:00"), CPH)
    assert len(far) == MAX_PER_VISIT and local(far)[0] == "Sat 05 08:00"
