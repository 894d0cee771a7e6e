"""Management's figures: video visits planned, made, unanswered and failed (by cause), their
durations, per day/week/month and per team; citizens with a unit; the share made on screen.

No figure identifies a citizen or a single employee: only counts per period and team leave
this module, and a count below five (and any mean or share drawn from fewer than five
calls) is shown as ``"< 5"`` — in the JSON, on the page and in the CSV alike, since all
three are made from the same :class:`Row`.

Speed (the console answers in p99 ≤ 100 ms over a year of calls): finished days are counted
once into ``figures_calls`` (per local day, team and outcome) and kept; only yesterday and
today are counted from the call records on each request, by the database (one GROUP BY per
local day over the indexed call time). A call belongs to the team(s) its caller works in when
its day is counted. Planned visits are the current plans unrolled (a cancelled plan no longer
counts, as the plans keep no history). What cannot change is kept in the process
(:class:`Memo`): the sums of finished days per period, the unrolled plans' sums per period
until the plans or the teams change, and the citizens with a unit per team until the citizens, their units, their
care teams or the teams change.
"""

from __future__ import annotations

import csv
import io
import threading
import weakref
from collections import Counter, OrderedDict, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, tzinfo
from typing import Any, ClassVar, Literal, TypeVar
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from kiosk.protocol.call import EndReason
from kiosk.server import teams
from kiosk.server.store import (
    Store,
    calls,
    care_team,
    citizens,
    figures_calls,
    figures_counted,
    user_teams,
    visits,
)

T = TypeVar("T")
Period = Literal["day", "week", "month"]
Cell = int | Literal["< 5"]
SMALL: Literal["< 5"] = "< 5"
MIN_SHOWN = 5  # a count below this is never shown
ALL_TEAMS = "*"  # the row of all teams together (a person in two teams counts once here)
#: the municipality's time: days, weeks and months begin at its midnight
TZ: tzinfo = ZoneInfo("Europe/Copenhagen")

MADE, UNANSWERED = "made", "unanswered"
#: why a call that never connected failed; every other end reason is a call that was made
FAILURE_CAUSES: tuple[str, ...] = tuple(r.value for r in EndReason if r not in (
    EndReason.HUNG_UP_BY_STAFF, EndReason.HUNG_UP_BY_CITIZEN, EndReason.CONNECTION_LOST, EndReason.NOT_ANSWERED))



def outcome(end_reason: str, connected: bool) -> str:
    """What became of a call: made (media flowed), unanswered (it rang), or why it failed."""
    if connected:
        return MADE
    return UNANSWERED if end_reason == EndReason.NOT_ANSWERED else end_reason


def small(count: int) -> Cell:
    return count if count >= MIN_SHOWN else SMALL


@dataclass
class Tally:
    """The raw counts of one period and team (never leaves this module unsuppressed)."""

    planned: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    talk_seconds: float = 0.0

    def add_calls(self, what: str, n: int, talk: float) -> None:
        self.outcomes[what] += n
        self.talk_seconds += talk


@dataclass(frozen=True)
class Row:
    """One line of the figures, as shown: every count at least five or ``"< 5"``."""

    period: str  # 2026-11-29, 2026-W48 or 2026-11
    team: str  # a team, or "*" for all teams
    planned: Cell
    made: Cell
    unanswered: Cell
    failed: Cell
    failed_by_cause: dict[str, Cell]
    mean_minutes: float | Literal["< 5"] | None  # per made call; None when none was made
    total_minutes: float | Literal["< 5"] | None
    share_on_screen: float | Literal["< 5"] | None  # made / planned, in per cent

    @classmethod
    def of(cls, period: str, team: str, t: Tally) -> Row:
        made, failed = t.outcomes[MADE], sum(t.outcomes[c] for c in FAILURE_CAUSES)
        minutes: float | Literal["< 5"] | None = None
        mean: float | Literal["< 5"] | None = None
        if made:
            minutes = round(t.talk_seconds / 60, 1) if made >= MIN_SHOWN else SMALL
            mean = round(t.talk_seconds / 60 / made, 2) if made >= MIN_SHOWN else SMALL
        share: float | Literal["< 5"] | None = None
        if t.planned:
            share = round(100 * made / t.planned, 1) if min(made, t.planned) >= MIN_SHOWN else SMALL
        return cls(period, team, small(t.planned), small(made), small(t.outcomes[UNANSWERED]), small(failed),
                   {c: small(t.outcomes[c]) for c in FAILURE_CAUSES}, mean, minutes, share)


@dataclass(frozen=True)
class Figures:
    period: Period
    start: date
    end: date  # exclusive
    rows: list[Row]
    citizens_with_unit: dict[str, Cell]  # per team, and "*"


# ------------------------------------------------------------------------ periods
def period_of(day: date, period: Period) -> str:
    if period == "day":
        return day.isoformat()
    if period == "week":
        year, week, _ = day.isocalendar()
        return f"{year}-W{week:02d}"
    return f"{day.year}-{day.month:02d}"


def _days(start: date, end: date) -> Iterator[date]:
    day = start
    while day < end:
        yield day
        day += timedelta(days=1)


def _midnight(day: date, tz: tzinfo) -> float:
    return datetime.combine(day, time(), tzinfo=tz).timestamp()


# ------------------------------------------------------------------------ counting
def figures(store: Store, period: Period, start: date, end: date, tz: tzinfo = TZ) -> Figures:
    """The figures of the local days ``start`` up to (not including) ``end``."""
    today = datetime.fromtimestamp(store.clock(), tz).date()
    live_from = today - timedelta(days=1)  # a call placed before midnight may end after it
    through = _count_finished_days(store, live_from, tz)
    memo = Memo.of(store)
    tallies: dict[tuple[str, str], Tally] = defaultdict(Tally)
    with store.read() as conn:
        team_of = teams.team_map(conn)
        finished = (period, start, min(end, live_from), through)
        for (p, team, what), (n, talk) in memo.get(("finished", finished),
                                                   lambda: _finished_sums(conn, *finished[:3])).items():
            tallies[p, team].add_calls(what, n, talk)
        if end > live_from:
            for day, team, what, n, talk in _count_calls(conn, team_of, max(start, live_from), end, tz):
                tallies[period_of(day, period), team].add_calls(what, n, talk)
        team_key = tuple(sorted(team_of.items()))
        plans = (_plans_version(conn), team_key, start, end, str(tz))
        for (p, team), n in memo.get(("planned", plans, period),
                                     lambda: _planned_sums(conn, team_of, period, start, end, tz)).items():
            tallies[p, team].planned += n
        with_unit = memo.get(("with unit", _citizens_version(conn), team_key), lambda: _citizens_with_unit(conn))
    for p in {period_of(d, period) for d in _days(start, end)}:
        tallies.setdefault((p, ALL_TEAMS), Tally())  # every period has its all-teams row, if only of zeros
    rows = [Row.of(p, team, t) for (p, team), t in sorted(tallies.items(), key=lambda kv: kv[0])]
    return Figures(period, start, end, rows, with_unit)


class Memo:
    """What one process has worked out and cannot change under it, a few dozen answers per store.

    The finished days' sums are keyed by the last day counted (days are counted once, never
    again); the unrolled plans by the plans' version and the teams, so a plan added, moved or
    cancelled anywhere (another process too) is seen by the next request; the citizens with a
    unit likewise by the citizens' version and the teams."""

    SIZE = 64
    _stores: ClassVar[weakref.WeakKeyDictionary[Store, Memo]] = weakref.WeakKeyDictionary()
    _lock = threading.Lock()  # the figures are worked out off the event loop, in threads

    def __init__(self) -> None:
        self._answers: OrderedDict[tuple[Any, ...], Any] = OrderedDict()

    @classmethod
    def of(cls, store: Store) -> Memo:
        with cls._lock:
            return cls._stores.setdefault(store, cls())

    def get(self, key: tuple[Any, ...], work: Callable[[], T]) -> T:
        with self._lock:
            if key in self._answers:
                self._answers.move_to_end(key)
                return self._answers[key]  # type: ignore[no-any-return]
        answer = work()
        with self._lock:
            self._answers[key] = answer
            while len(self._answers) > self.SIZE:
                self._answers.popitem(last=False)
        return answer


def _finished_sums(conn: Connection, period: Period, start: date,
                   end: date) -> dict[tuple[str, str, str], tuple[int, float]]:
    """The counted days' calls per period, team and outcome, summed by the database."""
    column = figures_calls.c[period]
    q = (sa.select(column, figures_calls.c.team, figures_calls.c.outcome, sa.func.sum(figures_calls.c.calls),
                   sa.func.sum(figures_calls.c.talk_seconds))
         .where(figures_calls.c.day >= start.isoformat(), figures_calls.c.day < end.isoformat())
         .group_by(column, figures_calls.c.team, figures_calls.c.outcome))
    return {(p, team, what): (int(n), float(talk)) for p, team, what, n, talk in conn.execute(q)}


def _plans_version(conn: Connection) -> tuple[Any, ...]:
    """Changes whenever a plan is added (count, newest), cancelled (count) or moved (sum of times)."""
    return tuple(conn.execute(sa.select(sa.func.count(), sa.func.sum(visits.c.at), sa.func.max(visits.c.created_at),
                                        sa.func.sum(sa.func.length(visits.c.repeat)))).one())


def _citizens_version(conn: Connection) -> tuple[Any, ...]:
    """Changes whenever a citizen is added (count, newest), a unit released or handed out (citizens
    with a unit) or a care team grows or shrinks (its rows). A care team is named when its citizen
    is added and not edited since; editing it must change this too."""
    return tuple(conn.execute(sa.select(*(q.scalar_subquery() for q in (
        sa.select(sa.func.count()).select_from(citizens), sa.select(sa.func.count(citizens.c.device_id)),
        sa.select(sa.func.max(citizens.c.created_at)), sa.select(sa.func.count()).select_from(care_team))))).one())


def _count_calls(conn: Connection, team_of: dict[str, tuple[str, ...]], start: date, end: date,
                 tz: tzinfo) -> Iterator[tuple[date, str, str, int, float]]:
    """Counts of the calls placed in these local days: (day, team, outcome, calls, talk seconds).

    The database groups each local day's calls by caller and outcome (a day's bounds are its
    midnights in ``tz``, so a day of 23 or 25 hours is counted right); the callers' teams are
    added here."""
    connected = calls.c.connected_at.is_not(None)
    for day in _days(start, end):
        counts: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0, 0.0])
        q = (sa.select(calls.c.caller, calls.c.end_reason, connected, sa.func.count(),
                       sa.func.coalesce(sa.func.sum(calls.c.talk_seconds), 0.0))
             .where(calls.c.placed_at >= _midnight(day, tz), calls.c.placed_at < _midnight(day + timedelta(days=1), tz))
             .group_by(calls.c.caller, calls.c.end_reason, connected))
        for caller, end_reason, was_connected, n, talk in conn.execute(q):
            what = outcome(end_reason, bool(was_connected))
            for team in (ALL_TEAMS, *team_of.get(caller, ())):
                cell = counts[team, what]
                cell[0] += n
                cell[1] += float(talk)
        for (team, what), (n, talk) in counts.items():
            yield day, team, what, int(n), talk


def _count_finished_days(store: Store, before: date, tz: tzinfo) -> str:
    """Count every day before ``before`` not counted yet into figures_calls (once; kept).
    Returns the last day counted."""
    last = (before - timedelta(days=1)).isoformat()
    with store.read() as conn:
        through = conn.execute(sa.select(figures_counted.c.through_day)).scalar()
    if through is not None and through >= last:
        return str(through)  # the common case: nothing new, no write lock
    with store.tx() as conn:  # another process may have counted meanwhile: read again under the lock
        through = conn.execute(sa.select(figures_counted.c.through_day)).scalar()
        if through is not None and through >= last:
            return str(through)
        if through is None:
            first = conn.execute(sa.select(sa.func.min(calls.c.placed_at))).scalar()
            start = datetime.fromtimestamp(first, tz).date() if first is not None else before
        else:
            start = date.fromisoformat(through) + timedelta(days=1)
        if start < before:
            rows = [{"day": d.isoformat(), "week": period_of(d, "week"), "month": period_of(d, "month"),
                     "team": team, "outcome": what, "calls": n, "talk_seconds": talk}
                    for d, team, what, n, talk in _count_calls(conn, teams.team_map(conn), start, before, tz)]
            conn.execute(figures_calls.delete().where(figures_calls.c.day >= start.isoformat(),
                                                      figures_calls.c.day < before.isoformat()))
            if rows:
                conn.execute(figures_calls.insert(), rows)
        conn.execute(figures_counted.delete())
        conn.execute(figures_counted.insert().values(id=1, through_day=last))
    return last


def _planned(conn: Connection, team_of: dict[str, tuple[str, ...]], start: date, end: date,
             tz: tzinfo) -> Iterator[tuple[date, str, int]]:
    """Planned visits per local day and team (the planner's), the repeats unrolled.

    Counted without walking each visit's repeats: per team, a repeating visit adds one to
    every matching day from its first on, so each day's count is a running sum.
    """
    once: Counter[tuple[date, str]] = Counter()
    begins: dict[str, dict[date, Counter[str]]] = defaultdict(lambda: defaultdict(Counter))  # team, day, pattern
    for at, repeat, created_by in conn.execute(sa.select(visits.c.at, visits.c.repeat, visits.c.created_by)):
        first = datetime.fromtimestamp(at, tz).date()
        pattern = f"weekly-{first.weekday()}" if repeat == "weekly" else repeat
        for team in (ALL_TEAMS, *team_of.get(created_by, ())):
            if repeat == "once":
                once[first, team] += 1
            elif first < end:
                begins[team][max(first, start)][pattern] += 1
    for team, starts in begins.items():
        running: Counter[str] = Counter()
        for day in _days(start, end):
            if day in starts:
                running.update(starts[day])
            weekday = day.weekday()
            n = running["daily"] + (running["weekdays"] if weekday < 5 else 0) + running[f"weekly-{weekday}"]
            if n:
                yield day, team, n
    for (day, team), n in once.items():
        if start <= day < end:
            yield day, team, n


def _planned_sums(conn: Connection, team_of: dict[str, tuple[str, ...]], period: Period, start: date, end: date,
                  tz: tzinfo) -> Counter[tuple[str, str]]:
    """Planned visits per period and team."""
    sums: Counter[tuple[str, str]] = Counter()
    for day, team, n in _planned(conn, team_of, start, end, tz):
        sums[period_of(day, period), team] += n
    return sums


def _citizens_with_unit(conn: Connection) -> dict[str, Cell]:
    """Citizens who have a unit now: all, and per team of the people in their care team."""
    has_unit = citizens.c.device_id.is_not(None)
    total = conn.execute(sa.select(sa.func.count()).select_from(citizens).where(has_unit)).scalar() or 0
    per_team = conn.execute(
        sa.select(user_teams.c.team, sa.func.count(sa.distinct(citizens.c.id)))
        .join(care_team, care_team.c.username == user_teams.c.username)
        .join(citizens, citizens.c.id == care_team.c.citizen_id)
        .where(has_unit).group_by(user_teams.c.team))
    return {ALL_TEAMS: small(total)} | {team: small(n) for team, n in per_team}


# ------------------------------------------------------------------------ CSV
CSV_COLUMNS = ("period", "team", "planned", "made", "unanswered", "failed",
               *(f"failed_{c}" for c in FAILURE_CAUSES), "mean_minutes", "total_minutes", "share_on_screen")


def csv_text(rows: Iterable[Row]) -> str:
    """The rows exactly as the JSON and the page show them (the same cells, "< 5" included)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for r in rows:
        writer.writerow([r.period, r.team, r.planned, r.made, r.unanswered, r.failed,
                         *(r.failed_by_cause[c] for c in FAILURE_CAUSES),
                         *("" if v is None else v for v in (r.mean_minutes, r.total_minutes, r.share_on_screen))])
    return out.getvalue()
