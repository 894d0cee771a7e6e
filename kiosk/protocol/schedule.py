"""Which planned visits fall in a window of time: the repeats of a visit plan unrolled.

Pure: the caller passes the time and the time zone. Repeats keep the first visit's local
time of day across daylight-saving changes ("every morning at 8:00" stays at 8:00).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta, tzinfo

from kiosk.protocol import messages as m

#: The most occurrences one repeating visit contributes to a window (a week of a daily visit
#: fits; the screen shows today and tomorrow).
MAX_PER_VISIT = 16


def upcoming(visits: Iterable[m.ScheduledVisit], start: float, end: float, tz: tzinfo) -> list[m.PlannedVisit]:
    """The visits from ``start`` up to ``end`` (Unix times), in time order."""
    out = [m.PlannedVisit(at=at, staff_name=v.staff_name, staff_role=v.staff_role, kind=v.kind)
           for v in visits for at in _occurrences(v, start, end, tz)]
    return sorted(out, key=lambda p: p.at)


def _occurrences(visit: m.ScheduledVisit, start: float, end: float, tz: tzinfo) -> Iterator[float]:
    first = datetime.fromtimestamp(visit.at, tz)
    if visit.repeat == "once":
        if start <= visit.at < end:
            yield visit.at
        return
    step_days = 7 if visit.repeat == "weekly" else 1
    day = max(first.date(), datetime.fromtimestamp(start, tz).date())
    if step_days == 7:  # keep the weekday of the first visit
        day += timedelta(days=(first.weekday() - day.weekday()) % 7)
    found = 0
    while found < MAX_PER_VISIT:
        when = datetime.combine(day, first.timetz().replace(tzinfo=None), tzinfo=tz).timestamp()
        if when >= end:
            return
        if when >= start and when >= visit.at and (visit.repeat != "weekdays" or day.weekday() < 5):
            found += 1
            yield when
        day += timedelta(days=step_days)
