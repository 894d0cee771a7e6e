"""The server's storage: one small interface over SQLAlchemy Core.

SQLite (WAL) is the embedded default; the same tables run on PostgreSQL (psycopg 3) when
given a ``postgresql://`` URL. The queries are written once, synchronously; the CLI, the
tests and worker threads call them as they are, and the event loop calls them with
``await store.run(Store.method, ...)``, which runs the same code over the async drivers
(psycopg's async mode, aiosqlite), so waiting on the database never holds the loop.

Both the running server and the CLI open the same database, so every write happens in a
short transaction that takes the write lock up front (SQLite) or the locks its rows need
(PostgreSQL). The schema is Alembic's (kiosk.server.migrate),
brought up to date whenever a store opens.

A database that cannot be reached raises :class:`StoreUnavailable`, whose message says so
in plain words; nothing is acknowledged to anyone in that case, and the caller may retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import json
import math
import secrets
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Concatenate, NamedTuple, ParamSpec, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, Row
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.util import greenlet_spawn

from kiosk.protocol import command_lifecycle as lifecycle
from kiosk.protocol.command_lifecycle import CommandLife, CommandState
from kiosk.protocol.machine import Clock, Transition
from kiosk.server import migrate
from kiosk.server.audit import AuditEntry, checked, is_account

metadata = sa.MetaData()

devices = sa.Table(
    "devices", metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("cert_serial", sa.String(64), nullable=False),
    sa.Column("cert_pem", sa.Text, nullable=False),
    sa.Column("enrolled_at", sa.Float, nullable=False),
    sa.Column("revoked_at", sa.Float),
    sa.Column("state", sa.String(32), nullable=False),
    sa.Column("agent_version", sa.String(64), nullable=False),
    sa.Column("last_seen", sa.Float),
    sa.Column("online", sa.Boolean, nullable=False, default=False),  # as of the hub's last flush
)

enroll_tokens = sa.Table(
    "enroll_tokens", metadata,
    sa.Column("token_hash", sa.String(64), primary_key=True),  # the token itself is never stored
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Column("created_by", sa.String(64), nullable=False),
    sa.Column("used_at", sa.Float),
    sa.Column("used_by_device", sa.String(36)),
)

enrollment_holds = sa.Table(
    "enrollment_holds", metadata,  # units whose token expired on the shelf, until logistics decide
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column("device_id", sa.String(36), nullable=False, unique=True),  # reserved: the device's id once enrolled
    sa.Column("key_sha256", sa.String(64), nullable=False),  # only this unit's key may use the approval
    sa.Column("serial_number", sa.String(64), nullable=False),
    sa.Column("agent_version", sa.String(64), nullable=False),
    sa.Column("state", sa.String(20), nullable=False),  # awaiting-approval, approved, rejected, enrolled
    sa.Column("requested_at", sa.Float, nullable=False),
    sa.Column("last_request_at", sa.Float, nullable=False),
    sa.Column("decided_at", sa.Float),
    sa.Column("decided_by", sa.String(64)),
)

commands = sa.Table(
    "commands", metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("device_id", sa.String(36), sa.ForeignKey("devices.id"), nullable=False, index=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("envelope", sa.LargeBinary, nullable=False),
    sa.Column("state", sa.String(16), nullable=False, index=True),
    sa.Column("created_by", sa.String(64), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Column("delivered_at", sa.Float),
    sa.Column("finished_at", sa.Float),
    sa.Column("outcome", sa.String(16)),
    sa.Column("reason", sa.Text),
    sa.Column("result_envelope", sa.LargeBinary),
    sa.Column("result", sa.Text),  # the verified result, JSON
)

audit = sa.Table(
    "audit", metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.Float, nullable=False, index=True),  # the indexes serve the console's filters
    sa.Column("actor", sa.String(64), nullable=False, index=True),
    sa.Column("action", sa.String(64), nullable=False, index=True),
    sa.Column("device_id", sa.String(36), index=True),
    sa.Column("detail", sa.Text, nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),  # sha256(previous hash + this entry)
)

users = sa.Table(
    "users", metadata,
    sa.Column("username", sa.String(64), primary_key=True),
    sa.Column("password_hash", sa.Text, nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("display_name", sa.String(100)),  # shown on the citizen's screen when this person calls
)

user_photos = sa.Table(  # shown on the citizen's ringing screen when this person calls
    "user_photos", metadata,
    sa.Column("username", sa.String(64), sa.ForeignKey("users.username"), primary_key=True),
    sa.Column("png", sa.LargeBinary, nullable=False),  # made by kiosk.server.photos.normalize
    sa.Column("updated_at", sa.Float, nullable=False),
)

citizens = sa.Table(
    "citizens", metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),  # personal data: never logged or audited
    sa.Column("device_id", sa.String(36), sa.ForeignKey("devices.id"), unique=True),
    sa.Column("created_at", sa.Float, nullable=False),
)

care_team = sa.Table(
    "care_team", metadata,  # who may call whom
    sa.Column("username", sa.String(64), sa.ForeignKey("users.username"), primary_key=True),
    sa.Column("citizen_id", sa.String(36), sa.ForeignKey("citizens.id"), primary_key=True),
)

calls = sa.Table(
    "calls", metadata,  # one record per call; never any media
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("caller", sa.String(64), nullable=False),
    sa.Column("citizen_id", sa.String(36), nullable=False, index=True),
    sa.Column("device_id", sa.String(36)),
    sa.Column("placed_at", sa.Float, nullable=False, index=True),  # management's figures count by day
    sa.Column("rang_at", sa.Float),
    sa.Column("answered_at", sa.Float),
    sa.Column("connected_at", sa.Float),
    sa.Column("ended_at", sa.Float, nullable=False),
    sa.Column("end_reason", sa.String(32), nullable=False),
    sa.Column("ring_seconds", sa.Float),
    sa.Column("talk_seconds", sa.Float),
    sa.Column("facts", sa.Text),
    sa.Column("quality_staff", sa.Text),
    sa.Column("quality_device", sa.Text),
)

live_calls = sa.Table(
    "live_calls", metadata,  # calls placed and not ended: a restarted server takes up or ends them
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("caller", sa.String(64), nullable=False),
    sa.Column("caller_name", sa.String(200), nullable=False),
    sa.Column("caller_role", sa.String(32), nullable=False),
    sa.Column("citizen_id", sa.String(36), nullable=False),
    sa.Column("device_id", sa.String(36), nullable=False),
    sa.Column("placed_at", sa.Float, nullable=False),
    sa.Column("rang_at", sa.Float),
    sa.Column("answered_at", sa.Float),
    sa.Column("connected_at", sa.Float),  # none yet: still ringing or connecting
    sa.Column("screen_awake", sa.Boolean),
)

visits = sa.Table(
    "visits", metadata,  # the citizens' planned video visits; personal data, never audited in detail
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("citizen_id", sa.String(36), sa.ForeignKey("citizens.id"), nullable=False, index=True),
    sa.Column("at", sa.Float, nullable=False),  # the first visit; repeats keep its local time of day
    sa.Column("staff_name", sa.String(100), nullable=False),
    sa.Column("staff_role", sa.String(100), nullable=False),
    sa.Column("kind", sa.String(100), nullable=False),
    sa.Column("repeat", sa.String(16), nullable=False),
    sa.Column("created_by", sa.String(64), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

releases = sa.Table(
    "releases", metadata,  # OS releases: signed RAUC bundles in DATA/releases (kiosk.server.rollout)
    sa.Column("version", sa.String(64), primary_key=True),
    sa.Column("arch", sa.String(16), nullable=False),
    sa.Column("compatible", sa.String(100), nullable=False),
    sa.Column("file", sa.String(255), nullable=False),
    sa.Column("bytes", sa.BigInteger, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("added_at", sa.Float, nullable=False),
    sa.Column("added_by", sa.String(64), nullable=False),
)

rollouts = sa.Table(
    "rollouts", metadata,  # a release sent to the fleet wave by wave
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("release", sa.String(64), sa.ForeignKey("releases.version"), nullable=False),
    sa.Column("waves", sa.Text, nullable=False),  # JSON: the cumulative shares asked for
    sa.Column("pause_seconds", sa.Float, nullable=False),
    sa.Column("max_failed_share", sa.Float, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),  # running, halted, done
    sa.Column("wave", sa.Integer, nullable=False),  # the wave under way (0-based)
    sa.Column("wave_starts_at", sa.Float, nullable=False),  # after the pause that precedes it
    sa.Column("reason", sa.Text),  # why it halted
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("created_by", sa.String(64), nullable=False),
)

rollout_units = sa.Table(
    "rollout_units", metadata,
    sa.Column("rollout_id", sa.String(36), sa.ForeignKey("rollouts.id"), primary_key=True),
    sa.Column("device_id", sa.String(36), sa.ForeignKey("devices.id"), primary_key=True),
    sa.Column("wave", sa.Integer, nullable=False),
    sa.Column("stage", sa.String(16), nullable=False),  # kiosk.protocol.update.STAGES
    sa.Column("command_id", sa.String(36)),
    sa.Column("detail", sa.Text, nullable=False, default=""),
    sa.Column("changed_at", sa.Float, nullable=False),
)

login_backoff = sa.Table(
    "login_backoff", metadata,  # kiosk.server.login_guard's memory of failed logins
    # "address:<ip>" or "account:<user name>"; only names of existing accounts are ever kept
    sa.Column("key", sa.String(120), primary_key=True),
    sa.Column("failures", sa.Integer, nullable=False),
    sa.Column("blocked_until", sa.Float, nullable=False),
    sa.Column("last_attempt", sa.Float, nullable=False),
)

# ----------------------- the console's people and figures (kiosk.server.teams, .figures, .oidc)
user_teams = sa.Table(
    "user_teams", metadata,
    sa.Column("username", sa.String(64), sa.ForeignKey("users.username"), primary_key=True),
    sa.Column("team", sa.String(64), primary_key=True, index=True),
)

figures_calls = sa.Table(
    "figures_calls", metadata,  # finished days, counted once
    sa.Column("day", sa.String(10), primary_key=True),  # local date, ISO
    sa.Column("week", sa.String(8), nullable=False),  # its ISO week and its month: the rows of a
    sa.Column("month", sa.String(7), nullable=False),  # week or month are summed by the database
    sa.Column("team", sa.String(64), primary_key=True),
    sa.Column("outcome", sa.String(32), primary_key=True),  # made, unanswered, or a failure cause
    sa.Column("calls", sa.Integer, nullable=False),
    sa.Column("talk_seconds", sa.Float, nullable=False),
)

figures_counted = sa.Table(
    "figures_counted", metadata,
    sa.Column("id", sa.Integer, primary_key=True),  # one row
    sa.Column("through_day", sa.String(10), nullable=False),  # days up to and including this are counted
)

oidc_pending = sa.Table(
    "oidc_pending", metadata,  # logins between the redirect to the provider and its answer
    sa.Column("state_hash", sa.String(64), primary_key=True),
    sa.Column("browser_hash", sa.String(64), nullable=False),
    sa.Column("code_verifier", sa.String(128), nullable=False),
    sa.Column("nonce", sa.String(64), nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
)

oidc_identities = sa.Table(
    "oidc_identities", metadata,  # which account each person at the provider has here
    sa.Column("issuer", sa.String(200), primary_key=True),
    sa.Column("subject", sa.String(255), primary_key=True),
    sa.Column("username", sa.String(64), sa.ForeignKey("users.username"), nullable=False, unique=True),
)

#: What the command lifecycle (kiosk.protocol.command_lifecycle) needs of a stored command.
_LIFE_COLUMNS = (commands.c.state, commands.c.expires_at, commands.c.delivered_at, commands.c.finished_at)

sessions = sa.Table(
    "sessions", metadata,
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column("username", sa.String(64), sa.ForeignKey("users.username"), nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),  # the absolute end, set at login
    sa.Column("last_used", sa.Float, nullable=False),  # the idle end follows from it
)

#: A session's use is written at most this often: a request is then a read, not a write.
SESSION_TOUCH_SECONDS = 60.0



_AUDIT_LOCK = 0x61756469740A  # PostgreSQL advisory lock held while appending to the audit chain


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class StoreUnavailable(Exception):
    """The database did not answer (down, restarting, unreachable); nothing was written."""


class Contended(Exception):
    """Two requests raced for the same row; the loser's transaction is rolled back and it may retry."""


@dataclass(frozen=True, slots=True)
class DeviceRow:
    id: str
    cert_serial: str
    cert_pem: str
    enrolled_at: float
    revoked_at: float | None
    state: str
    agent_version: str
    last_seen: float | None
    online: bool  # as of the hub's last flush; the hub's links are the live answer


@dataclass(frozen=True, slots=True)
class TokenRow:
    token_hash: str
    created_at: float  # tokens made together share it: their batch
    expires_at: float
    created_by: str
    used_at: float | None
    used_by_device: str | None


@dataclass(frozen=True, slots=True)
class HoldRow:
    token_hash: str
    device_id: str
    key_sha256: str
    serial_number: str
    agent_version: str
    state: str
    requested_at: float
    last_request_at: float
    decided_at: float | None
    decided_by: str | None


@dataclass(frozen=True, slots=True)
class CommandRow:
    id: str
    device_id: str
    kind: str
    envelope: bytes
    state: CommandState
    created_by: str
    created_at: float
    expires_at: float
    delivered_at: float | None
    finished_at: float | None
    outcome: str | None
    reason: str | None
    result_envelope: bytes | None
    result: str | None  # the verified result, JSON

    @property
    def life(self) -> CommandLife:
        return CommandLife(self.state, self.expires_at, self.delivered_at, self.finished_at)


@dataclass(frozen=True, slots=True)
class UserRow:
    username: str
    password_hash: str
    role: str
    created_at: float
    display_name: str | None


@dataclass(frozen=True, slots=True)
class CitizenRow:
    id: str
    name: str  # personal data: never logged or audited
    device_id: str | None
    created_at: float


@dataclass(frozen=True, slots=True)
class CallRow:
    id: str
    caller: str
    citizen_id: str
    device_id: str | None
    placed_at: float
    rang_at: float | None
    answered_at: float | None
    connected_at: float | None
    ended_at: float
    end_reason: str
    ring_seconds: float | None
    talk_seconds: float | None
    facts: str | None  # JSON, as are the two quality reports
    quality_staff: str | None = None
    quality_device: str | None = None


@dataclass(frozen=True, slots=True)
class VisitRow:
    id: str
    citizen_id: str
    at: float
    staff_name: str
    staff_role: str
    kind: str
    repeat: str
    created_by: str
    created_at: float


@dataclass(frozen=True, slots=True)
class LiveCallRow:
    """A call placed and not yet ended: what a restarted server (or another process, when the
    one running it died) needs to take it up again, or to end it with its record."""

    id: str
    caller: str
    caller_name: str
    caller_role: str
    citizen_id: str
    device_id: str
    placed_at: float
    rang_at: float | None
    answered_at: float | None
    connected_at: float | None
    screen_awake: bool | None


@dataclass(frozen=True, slots=True)
class ReleaseRow:
    version: str
    arch: str
    compatible: str
    file: str
    bytes: int
    sha256: str
    added_at: float
    added_by: str


@dataclass(frozen=True, slots=True)
class RolloutRow:
    id: str
    release: str
    waves: str
    pause_seconds: float
    max_failed_share: float
    state: str
    wave: int
    wave_starts_at: float
    reason: str | None
    created_at: float
    created_by: str


@dataclass(frozen=True, slots=True)
class RolloutUnitRow:
    rollout_id: str
    device_id: str
    wave: int
    stage: str
    command_id: str | None
    detail: str
    changed_at: float


#: Each row type and the table it is read from; a test checks they name the same columns.
ROW_TABLES: dict[type[Any], sa.Table] = {
    DeviceRow: devices, CommandRow: commands, UserRow: users, CitizenRow: citizens, CallRow: calls,
    LiveCallRow: live_calls, TokenRow: enroll_tokens, HoldRow: enrollment_holds, VisitRow: visits,
    ReleaseRow: releases, RolloutRow: rollouts, RolloutUnitRow: rollout_units,
}
R = TypeVar("R")


@functools.cache
def _step_update(extra_columns: tuple[str, ...]) -> sa.Update:
    """A command's guarded lifecycle write, built once per set of extra columns: building it per
    command cost more than running it."""
    return (commands.update()
            .where(commands.c.id == sa.bindparam("b_id"), commands.c.state == sa.bindparam("b_before"))
            .values({name: sa.bindparam(f"b_{name}")
                     for name in ("state", "delivered_at", "finished_at", *extra_columns)}))


class CommandSteps:
    """A batch's commands stepped through their lifecycle in memory, then written at once.

    Read by :meth:`Store.command_steps` inside a transaction that holds them locked, so what
    was read is what is stored until the end: each command is written once, however many
    steps it took (a unit's acknowledgement and result in one batch), and commands with the
    same columns to write go in one statement. Each write is still guarded by the state it
    read; a guard that does not hold fails the transaction rather than losing a step.
    """

    def __init__(self, lives: dict[str, CommandLife], clock: Clock) -> None:
        self.lives = lives
        self._clock = clock
        self._before: dict[str, CommandState] = {}  # the stored state of each command changed so far
        self._columns: dict[str, dict[str, Any]] = {}  # what to write with it, besides its life

    def step(self, command_id: str, event: lifecycle.LifecycleEvent,
             **written_with_the_change: Any) -> Transition[CommandLife, lifecycle.LifecycleAction] | None:
        """Feed a command's lifecycle one event; the transition if it changed the command, else None
        (also for a command that is not stored)."""
        before = self.lives.get(command_id)
        if before is None:
            return None
        after = lifecycle.step(before, event, self._clock())
        if after.state == before:
            return None
        self._before.setdefault(command_id, before.state)
        self._columns.setdefault(command_id, {}).update(written_with_the_change)
        self.lives[command_id] = after.state
        return after

    def write(self, conn: Connection) -> None:
        """Write every changed command: one guarded update each, one statement per set of columns."""
        by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for command_id, before in self._before.items():
            life, extra = self.lives[command_id], self._columns[command_id]
            by_columns.setdefault(tuple(sorted(extra)), []).append({
                "b_id": command_id, "b_before": before, "b_state": life.state,
                "b_delivered_at": life.delivered_at, "b_finished_at": life.finished_at,
                **{f"b_{name}": value for name, value in extra.items()}})
        for columns, rows in by_columns.items():
            written = conn.execute(_step_update(columns), rows).rowcount
            if conn.dialect.supports_sane_multi_rowcount and written != len(rows):
                raise RuntimeError(f"{len(rows) - written} of {len(rows)} commands changed under a lock held")
        self._before.clear()
        self._columns.clear()


class NewAuditEntry(NamedTuple):
    actor: str
    action: str
    device_id: str | None
    detail: dict[str, Any]


class NewCommand(NamedTuple):
    id: str
    device_id: str
    kind: str
    envelope: bytes  # signed
    created_by: str
    expires_at: float


def _from_row(row_type: type[R], row: Row[Any]) -> R:
    values = dict(row._mapping)
    if row_type is CommandRow:
        values["state"] = CommandState(values["state"])
    return row_type(**values)


def _maybe(row_type: type[R], row: Row[Any] | None) -> R | None:
    return None if row is None else _from_row(row_type, row)


def _audit_hash(prev: str, at: float, actor: str, action: str, device_id: str | None, detail: str) -> str:
    body = json.dumps([prev, at, actor, action, device_id, detail], separators=(",", ":"))
    return sha256_hex(body)


def database_url(url: str | None, directory: Path) -> sa.URL:
    """The URL to open: SQLite in the data directory unless a PostgreSQL URL is given.

    ``postgresql://`` means psycopg 3 (SQLAlchemy's own default, psycopg2, is not used).
    A password is best kept out of the URL: libpq reads ``PGPASSFILE`` (~/.pgpass).
    """
    if url is None:
        return sa.make_url(f"sqlite:///{directory / 'kiosk.db'}")
    parsed = sa.make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise ValueError(f"--database takes a postgresql:// or sqlite:/// URL, got {parsed.get_backend_name()}://")
    return parsed


#: the async driver of each backend, for the event loop's calls (:meth:`Store.run`)
_ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+psycopg_async"}


def _engine_options(url: sa.URL) -> dict[str, Any]:
    if url.get_backend_name() == "sqlite":
        return {}
    # pre-ping: a connection left from before a PostgreSQL restart is replaced, not handed out
    return {"pool_pre_ping": True, "pool_size": 5, "max_overflow": 10, "pool_timeout": 5,
            "connect_args": {"connect_timeout": 5, "application_name": "kiosk-server"}}


def _engine(url: sa.URL) -> Engine:
    engine = sa.create_engine(url, **_engine_options(url))
    if url.get_backend_name() == "sqlite":
        _sqlite_pragmas(engine)
    return engine


def _async_engine(url: sa.URL) -> AsyncEngine:
    engine = create_async_engine(url.set(drivername=_ASYNC_DRIVERS[url.get_backend_name()]), **_engine_options(url))
    if url.get_backend_name() == "sqlite":
        _sqlite_pragmas(engine.sync_engine)
    return engine


class BlockingCallOnLoop(RuntimeError):
    """A store call made synchronously on the server's event loop: every unit would wait on it."""


def _where(url: sa.URL) -> str:
    """The database named for people, without its password."""
    return url.render_as_string(hide_password=True).replace("+psycopg", "")


P = ParamSpec("P")
T = TypeVar("T")


class Store:
    def __init__(self, url: str | sa.URL, clock: Clock = time.time) -> None:
        self.clock = clock
        self.url = sa.make_url(url)
        self.engine: Engine = _engine(self.url)
        self._on_loop: Store | None = None  # the same store over the async driver, made by the first run()
        self._loop_engine: AsyncEngine | None = None
        with self._reachable():
            migrate.upgrade(self.engine)

    async def run(self, query: Callable[Concatenate[Store, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``query(store, *args, **kwargs)`` from the event loop: a method of the store (or a function
        that takes one) runs unchanged over the async driver, so the loop serves everyone else
        while the database answers. Call it only from the loop that made the first call."""
        if self._on_loop is None:
            self._loop_engine = _async_engine(self.url)
            self._on_loop = Store._over(self._loop_engine.sync_engine, self.url, self.clock)
        return await greenlet_spawn(functools.partial(query, self._on_loop, *args, **kwargs))

    @classmethod
    def _over(cls, engine: Engine, url: sa.URL, clock: Clock) -> Store:
        """The same store over another engine (its schema already up to date; no guard)."""
        store = cls.__new__(cls)
        store.clock, store.url, store.engine = clock, url, engine
        store._on_loop, store._loop_engine = None, None
        return store

    def forbid_blocking_calls_on_loop(self) -> None:
        """From now on a synchronous call made on a running event loop raises :class:`BlockingCallOnLoop`
        (the server turns this on: a store call it forgot to :meth:`run` is found by any test
        that passes through it, not by a unit waiting in the field)."""
        @sa.event.listens_for(self.engine, "engine_connect")
        def _refuse_on_loop(conn: Connection) -> None:
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                return  # the CLI, a worker thread: blocking is theirs to do
            raise BlockingCallOnLoop("a synchronous store call on the event loop; use await store.run(...)")

    @classmethod
    def in_directory(cls, directory: Path, clock: Clock = time.time, database: str | None = None) -> Store:
        return cls(database_url(database, directory), clock)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def close(self) -> None:
        self.engine.dispose()

    async def aclose(self) -> None:
        """Close both pools (the async one must be closed on its loop)."""
        if self._loop_engine is not None:
            await self._loop_engine.dispose()
            self._on_loop = self._loop_engine = None
        self.close()

    @contextlib.contextmanager
    def _reachable(self) -> Iterator[None]:
        """Turn a lost or refused database connection into :class:`StoreUnavailable`."""
        try:
            yield
        except sa.exc.DBAPIError as exc:
            lost = exc.connection_invalidated or isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError))
            if not lost:
                raise
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
            raise StoreUnavailable(f"the database {_where(self.url)} is not answering ({reason}); "
                                   "nothing was saved, try again in a moment") from exc

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection for reading (on SQLite it takes no lock)."""
        with self._reachable(), self.engine.connect() as conn:
            yield conn

    @contextlib.contextmanager
    def tx(self) -> Iterator[Connection]:
        """A write transaction: it takes SQLite's write lock at BEGIN (reads do not)."""
        with self._reachable(), self.engine.connect() as conn:
            conn = conn.execution_options(immediate=True)
            with conn.begin():
                yield conn

    # ----------------------------------------------------------------- audit log
    def append_audit(
        self, conn: Connection, actor: str, action: str, device_id: str | None = None,
        **detail: Any,
    ) -> None:
        """Append one entry, chained to the previous one so any edit is detectable.

        The entry must fit the audit format (:class:`kiosk.server.audit.AuditEntry`) and an
        actor that names an account must name one that exists: a name typed by a stranger
        never gets in. Breaking either is a bug of ours and raises ValueError.
        """
        self.append_audits(conn, [NewAuditEntry(actor, action, device_id, detail)])

    def append_audits(self, conn: Connection, entries: Sequence[NewAuditEntry]) -> None:
        """Append entries in this order, each chained to the one before, as :meth:`append_audit` does
        one: a batch of commands reads the last hash once and inserts once."""
        if not entries:
            return
        if conn.dialect.name == "postgresql":  # one writer at a time extends the chain (SQLite: the write lock)
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_AUDIT_LOCK)))
        accounts = {e.actor for e in entries if is_account(e.actor)}
        known = set(conn.execute(sa.select(users.c.username).where(users.c.username.in_(sorted(accounts))))
                    .scalars()) if accounts else set()
        prev = conn.execute(sa.select(audit.c.hash).order_by(audit.c.seq.desc()).limit(1)).scalar() or ""
        at = self.clock()
        rows = []
        for e in entries:
            text = json.dumps(e.detail, sort_keys=True, default=str)
            chained = _audit_hash(prev, at, e.actor, e.action, e.device_id, text)
            entry = checked({"seq": 0, "at": at, "actor": e.actor, "action": e.action, "device_id": e.device_id,
                             "detail": json.loads(text), "hash": chained})
            if e.actor in accounts and e.actor not in known:
                raise ValueError(f"audit actor {e.actor!r} is not an account")
            rows.append({"at": at, "actor": e.actor, "action": e.action, "device_id": e.device_id,
                         "detail": text, "hash": entry.hash})
            prev = entry.hash
        conn.execute(audit.insert(), rows)

    def audit_entries(self, device_id: str | None = None, limit: int = 200, after: int = 0, *,
                      actor: str | None = None, action: str | None = None, since: float = 0.0,
                      until: float = math.inf) -> list[AuditEntry]:
        """The newest ``limit`` entries after seq ``after`` that match every filter given, oldest first."""
        q = sa.select(audit).where(audit.c.seq > after).order_by(audit.c.seq.desc()).limit(limit)
        for column, wanted in ((audit.c.device_id, device_id), (audit.c.actor, actor), (audit.c.action, action)):
            if wanted:
                q = q.where(column == wanted)
        if since > 0:
            q = q.where(audit.c.at >= since)
        if until < math.inf:
            q = q.where(audit.c.at < until)
        with self.read() as conn:
            rows = conn.execute(q).all()
        return [AuditEntry(r.seq, r.at, r.actor, r.action, r.device_id, json.loads(r.detail), r.hash)
                for r in reversed(rows)]

    def verify_audit_chain(self) -> int | None:
        """Return the seq of the first entry whose hash does not match, or None if intact."""
        return self.check_audit_chain()[1]

    def check_audit_chain(self) -> tuple[int, int | None]:
        """Walk the whole chain: how many entries were checked, and the first altered one (or None)."""
        prev, count = "", 0
        columns = (audit.c.seq, audit.c.at, audit.c.actor, audit.c.action, audit.c.device_id, audit.c.detail,
                   audit.c.hash)
        with self.read() as conn:
            for seq, at, actor, action, device_id, detail, entry_hash in conn.execute(
                    sa.select(*columns).order_by(audit.c.seq)):
                count += 1
                if _audit_hash(prev, at, actor, action, device_id, detail) != entry_hash:
                    return count, int(seq)
                prev = entry_hash
        return count, None

    # ------------------------------------------------------------ enrollment tokens
    def create_tokens(self, count: int, ttl_seconds: float, created_by: str) -> list[str]:
        now = self.clock()
        tokens = [secrets.token_urlsafe(32) for _ in range(count)]
        with self.tx() as conn:
            conn.execute(enroll_tokens.insert(), [
                {"token_hash": sha256_hex(t), "created_at": now, "expires_at": now + ttl_seconds,
                 "created_by": created_by} for t in tokens
            ])
            self.append_audit(conn, created_by, "enroll-tokens-created", count=count,
                              expires_at=now + ttl_seconds)
        return tokens

    def enroll_token(self, conn: Connection, token_hash: str) -> TokenRow | None:
        return _maybe(TokenRow, conn.execute(sa.select(enroll_tokens).where(enroll_tokens.c.token_hash == token_hash))
                      .first())

    def use_token(self, conn: Connection, token_hash: str, device_id: str, now: float) -> None:
        """Mark a token used inside the caller's transaction (the caller decided it may be).

        Raises :class:`Contended` if another transaction used it first (possible on
        PostgreSQL, where a write transaction does not lock the whole database)."""
        if not conn.execute(enroll_tokens.update()
                            .where(enroll_tokens.c.token_hash == token_hash, enroll_tokens.c.used_at.is_(None))
                            .values(used_at=now, used_by_device=device_id)).rowcount:
            raise Contended("the token was used by a concurrent request")

    # ------------------------------------------------------- units awaiting approval
    def enrollment_hold(self, conn: Connection, token_hash: str) -> HoldRow | None:
        return _maybe(HoldRow, conn.execute(
            sa.select(enrollment_holds).where(enrollment_holds.c.token_hash == token_hash)).first())

    def hold_enrollment(self, conn: Connection, token_hash: str, device_id: str, key_sha256: str,
                        serial_number: str, agent_version: str, now: float) -> bool:
        """Record (or refresh) a held unit; True the first time."""
        refreshed = conn.execute(enrollment_holds.update().where(enrollment_holds.c.token_hash == token_hash)
                                 .values(last_request_at=now, agent_version=agent_version)).rowcount
        if refreshed:
            return False
        conn.execute(enrollment_holds.insert().values(
            token_hash=token_hash, device_id=device_id, key_sha256=key_sha256, serial_number=serial_number,
            agent_version=agent_version, state="awaiting-approval", requested_at=now, last_request_at=now))
        return True

    def set_hold_state(self, conn: Connection, token_hash: str, state: str) -> None:
        conn.execute(enrollment_holds.update().where(enrollment_holds.c.token_hash == token_hash).values(state=state))

    def decide_enrollment(self, device_id: str, verdict: str, actor: str) -> bool:
        """Approve or reject a held unit (a decision may be changed until the unit enrolls)."""
        with self.tx() as conn:
            n = conn.execute(
                enrollment_holds.update()
                .where(enrollment_holds.c.device_id == device_id, enrollment_holds.c.state != "enrolled")
                .values(state=verdict, decided_at=self.clock(), decided_by=actor)
            ).rowcount
            if n:
                self.append_audit(conn, actor, f"enrollment-{verdict}", device_id)
        return bool(n)

    def enrollment_holds(self) -> list[tuple[HoldRow, TokenRow]]:
        """Held units not enrolled yet, each with its token (whose creation names its batch)."""
        q = (sa.select(enrollment_holds, enroll_tokens)
             .join(enroll_tokens, enroll_tokens.c.token_hash == enrollment_holds.c.token_hash)
             .where(enrollment_holds.c.state != "enrolled")
             .order_by(enrollment_holds.c.requested_at))
        with self.read() as conn:
            return [(HoldRow(**{c.name: r._mapping[c] for c in enrollment_holds.c}),
                     TokenRow(**{c.name: r._mapping[c] for c in enroll_tokens.c})) for r in conn.execute(q)]

    # ------------------------------------------------------------------- devices
    def add_device(self, conn: Connection, device_id: str, serial: str, cert_pem: str, agent_version: str) -> None:
        """``last_seen`` stays empty until its first connection: "never connected" in the device list."""
        conn.execute(devices.insert().values(
            id=device_id, cert_serial=serial, cert_pem=cert_pem, enrolled_at=self.clock(),
            state="enrolled-unassigned", agent_version=agent_version, online=False,
        ))

    def device(self, device_id: str, conn: Connection | None = None) -> DeviceRow | None:
        """A device's row; inside the caller's transaction when ``conn`` is given."""
        q = sa.select(devices).where(devices.c.id == device_id)
        if conn is not None:
            return _maybe(DeviceRow, conn.execute(q).first())
        with self.read() as own:
            return _maybe(DeviceRow, own.execute(q).first())

    def revocations(self, device_ids: Sequence[str]) -> dict[str, float | None]:
        """When each of these devices (those that exist) was revoked, None if it is not, in one read."""
        with self.read() as conn:
            return {r.id: r.revoked_at for r in conn.execute(
                sa.select(devices.c.id, devices.c.revoked_at).where(devices.c.id.in_(sorted(set(device_ids)))))}

    def devices(self, limit: int | None = None, offset: int = 0) -> list[DeviceRow]:
        """Enrolled devices, oldest first: all, or ``limit`` after the first ``offset``."""
        q = sa.select(devices).order_by(devices.c.enrolled_at, devices.c.id).limit(limit).offset(offset)
        with self.read() as conn:
            return [_from_row(DeviceRow, r) for r in conn.execute(q)]

    def revoked_since(self, since: float) -> list[str]:
        """Ids of devices revoked at or after ``since`` (the CLI may revoke from another process)."""
        with self.read() as conn:
            return list(conn.execute(sa.select(devices.c.id).where(devices.c.revoked_at >= since)).scalars())

    def revoke_device(self, device_id: str, actor: str) -> bool:
        with self.tx() as conn:
            n = conn.execute(devices.update().where(devices.c.id == device_id, devices.c.revoked_at.is_(None))
                             .values(revoked_at=self.clock())).rowcount
            if n:
                self.append_audit(conn, actor, "device-revoked", device_id)
        return bool(n)

    def record_seen(self, seen: dict[str, tuple[float, str, bool]]) -> None:
        """Write last-seen time, reported state and connectedness for many devices at once."""
        if not seen:
            return
        with self.tx() as conn:
            conn.execute(
                devices.update().where(devices.c.id == sa.bindparam("b_id"))
                .values(last_seen=sa.bindparam("b_seen"), state=sa.bindparam("b_state"),
                        online=sa.bindparam("b_online")),
                [{"b_id": d, "b_seen": t, "b_state": st, "b_online": on} for d, (t, st, on) in seen.items()],
            )

    def forget_online(self) -> None:
        """Every unit offline until it connects: for a database that held no live connections."""
        with self.tx() as conn:
            conn.execute(devices.update().where(devices.c.online).values(online=False))

    # ------------------------------------------------------------------ commands
    def add_command(self, conn: Connection, command_id: str, device_id: str, kind: str,
                    envelope: bytes, created_by: str, expires_at: float) -> None:
        self.add_commands(conn, [NewCommand(command_id, device_id, kind, envelope, created_by, expires_at)])

    def add_commands(self, conn: Connection, new: Sequence[NewCommand]) -> None:
        """Store signed commands as pending, all in one insert."""
        if new:
            now = self.clock()
            conn.execute(commands.insert(), [
                {"id": c.id, "device_id": c.device_id, "kind": c.kind, "envelope": c.envelope,
                 "state": CommandState.PENDING, "created_by": c.created_by, "created_at": now,
                 "expires_at": c.expires_at} for c in new])

    def command(self, command_id: str) -> CommandRow | None:
        with self.read() as conn:
            return _maybe(CommandRow, conn.execute(sa.select(commands).where(commands.c.id == command_id)).first())


    def pending_commands(self, device_id: str | None = None) -> list[CommandRow]:
        """The commands to send now, oldest first, as the lifecycle says (kiosk.protocol.command_lifecycle)."""
        now = self.clock()
        q = sa.select(commands).where(commands.c.state.in_(sorted(lifecycle.DELIVERABLE)), commands.c.expires_at > now)
        if device_id is not None:
            q = q.where(commands.c.device_id == device_id)
        with self.read() as conn:
            rows = [_from_row(CommandRow, r) for r in conn.execute(q.order_by(commands.c.created_at))]
        return [row for row in rows if row.life.deliverable(now)]

    def deliverable_commands(self) -> list[tuple[str, str]]:
        """(command id, device id) of every command to send now, oldest first; no envelopes."""
        q = (sa.select(commands.c.id, commands.c.device_id)
             .where(commands.c.state.in_(sorted(lifecycle.DELIVERABLE)), commands.c.expires_at > self.clock())
             .order_by(commands.c.created_at))
        with self.read() as conn:
            return [(row.id, row.device_id) for row in conn.execute(q)]

    def envelopes(self, command_ids: list[str]) -> dict[str, bytes]:
        """The signed envelopes of these commands, by id (asked for in slices: a query's parameters are bounded)."""
        found: dict[str, bytes] = {}
        with self.read() as conn:
            for start in range(0, len(command_ids), 500):
                q = sa.select(commands.c.id, commands.c.envelope).where(
                    commands.c.id.in_(command_ids[start:start + 500]))
                found.update((row.id, row.envelope) for row in conn.execute(q))
        return found

    def command_owners(self, command_ids: Sequence[str]) -> dict[str, tuple[str, str]]:
        """The device and kind of each of these commands (those that exist), in one read."""
        with self.read() as conn:
            return {r.id: (r.device_id, r.kind) for r in conn.execute(
                sa.select(commands.c.id, commands.c.device_id, commands.c.kind)
                .where(commands.c.id.in_(sorted(set(command_ids)))))}

    def command_steps(self, conn: Connection, command_ids: Sequence[str]) -> CommandSteps:
        """The lifecycle of these commands, read once inside the caller's transaction and locked for
        it (PostgreSQL: ``FOR UPDATE``; SQLite: its write lock, taken at BEGIN), to step in memory
        and write with :meth:`CommandSteps.write` before the transaction ends."""
        lives = {r.id: CommandLife(CommandState(r.state), r.expires_at, r.delivered_at, r.finished_at)
                 for r in conn.execute(sa.select(commands.c.id, *_LIFE_COLUMNS)
                                       .where(commands.c.id.in_(sorted(set(command_ids))))
                                       .order_by(commands.c.id).with_for_update())}
        return CommandSteps(lives, self.clock)

    @contextlib.contextmanager
    def _stepping(self, conn: Connection, command_id: str, steps: CommandSteps | None) -> Iterator[CommandSteps]:
        """The batch's ``steps``, or this one command's, written on leaving."""
        if steps is not None:
            yield steps
            return
        own = self.command_steps(conn, [command_id])
        yield own
        own.write(conn)

    def mark_delivered(self, command_id: str) -> None:
        with self.tx() as conn:
            self.acknowledge(conn, command_id)

    def acknowledge(self, conn: Connection, command_id: str, steps: CommandSteps | None = None) -> None:
        """The device holds the command: mark it delivered inside the caller's transaction (with
        ``steps``: when the batch's steps are written)."""
        with self._stepping(conn, command_id, steps) as stepping:
            stepping.step(command_id, lifecycle.Acknowledged())

    def expire_commands(self) -> list[str]:
        """Open commands past their expiry become 'expired'; returns their ids."""
        due = sa.select(commands.c.id).where(commands.c.state.in_(sorted(lifecycle.OPEN)),
                                             commands.c.expires_at <= self.clock())
        with self.read() as conn:  # the common case, nothing due, takes no write lock
            if conn.execute(due.limit(1)).first() is None:
                return []
        expired = []
        with self.tx() as conn:
            steps = self.command_steps(conn, list(conn.execute(due).scalars()))
            for command_id in sorted(steps.lives):
                changed = steps.step(command_id, lifecycle.Swept())
                if changed is not None and lifecycle.AuditExpiry() in changed.actions:
                    expired.append(command_id)
            steps.write(conn)
            self.append_audits(conn, [NewAuditEntry("server", "command-expired", None, {"command_id": command_id})
                                      for command_id in expired])
        return expired

    def finish_command(self, conn: Connection, command_id: str, outcome: str, reason: str | None,
                       result_envelope: bytes, result: dict[str, Any], steps: CommandSteps | None = None) -> bool:
        """Record a verified result if it is the command's first; returns whether it was (with
        ``steps``: it is written when the batch's steps are)."""
        with self._stepping(conn, command_id, steps) as stepping:
            changed = stepping.step(command_id, lifecycle.Reported(ok=outcome == "ok"),
                                    outcome=outcome, reason=reason, result_envelope=result_envelope,
                                    result=json.dumps(result, default=str))
        return changed is not None and lifecycle.KeepResult() in changed.actions

    # --------------------------------------------------------------- people
    def add_user(self, username: str, password_hash: str, role: str, actor: str,
                 display_name: str | None = None) -> None:
        with self.tx() as conn:
            conn.execute(users.insert().values(username=username, password_hash=password_hash, role=role,
                                               created_at=self.clock(), display_name=display_name))
            self.append_audit(conn, actor, "user-added", user=username, role=role)

    def user(self, username: str) -> UserRow | None:
        with self.read() as conn:
            return _maybe(UserRow, conn.execute(sa.select(users).where(users.c.username == username)).first())

    def set_user_photo(self, username: str, photo: bytes | None, actor: str) -> bool:
        """Store (or, with None, remove) a person's photo; False if there is no such person."""
        with self.tx() as conn:
            if conn.execute(sa.select(users.c.username).where(users.c.username == username)).first() is None:
                return False
            conn.execute(user_photos.delete().where(user_photos.c.username == username))
            if photo is not None:
                conn.execute(user_photos.insert().values(username=username, png=photo, updated_at=self.clock()))
            self.append_audit(conn, actor, "user-photo-set" if photo is not None else "user-photo-removed",
                              user=username, bytes=len(photo) if photo is not None else 0)
        return True

    def user_photo(self, username: str) -> bytes | None:
        with self.read() as conn:
            found = conn.execute(sa.select(user_photos.c.png).where(user_photos.c.username == username)).scalar()
        return bytes(found) if found is not None else None

    def set_password_hash(self, username: str, password_hash: str) -> None:
        with self.tx() as conn:
            conn.execute(users.update().where(users.c.username == username).values(password_hash=password_hash))

    def create_session(self, username: str, ttl_seconds: float) -> str:
        token = secrets.token_urlsafe(32)
        with self.tx() as conn:
            now = self.clock()
            conn.execute(sessions.delete().where(sessions.c.expires_at < now))
            conn.execute(sessions.insert().values(token_hash=sha256_hex(token), username=username,
                                                  expires_at=now + ttl_seconds, last_used=now))
        return token

    def session_user(self, token: str, idle_seconds: float = math.inf) -> UserRow | None:
        """The session's person, unless it ended (at its absolute end, or ``idle_seconds`` unused).

        Using it moves its idle end on; that is written at most every SESSION_TOUCH_SECONDS.
        A session found idle is ended for good.
        """
        now, token_hash = self.clock(), sha256_hex(token)
        with self.read() as conn:
            row = conn.execute(
                sa.select(users, sessions.c.last_used).join(sessions, sessions.c.username == users.c.username)
                .where(sessions.c.token_hash == token_hash, sessions.c.expires_at > now)
            ).first()
        if row is None:
            return None
        if row.last_used <= now - idle_seconds:
            self.end_session(token)
            return None
        if now - row.last_used >= SESSION_TOUCH_SECONDS:
            with self.tx() as conn:
                conn.execute(sessions.update().where(sessions.c.token_hash == token_hash).values(last_used=now))
        return UserRow(**{c.name: row._mapping[c.name] for c in users.c})

    def end_session(self, token: str) -> None:
        with self.tx() as conn:
            conn.execute(sessions.delete().where(sessions.c.token_hash == sha256_hex(token)))


    # ------------------------------------------------------------ citizens and calls
    def add_citizen(self, conn: Connection, name: str, device_id: str | None, caregivers: list[str]) -> str:
        citizen_id = str(uuid.uuid4())
        conn.execute(citizens.insert().values(id=citizen_id, name=name, device_id=device_id, created_at=self.clock()))
        if caregivers:
            conn.execute(care_team.insert(), [{"username": u, "citizen_id": citizen_id} for u in caregivers])
        return citizen_id

    def citizen(self, citizen_id: str) -> CitizenRow | None:
        with self.read() as conn:
            return _maybe(CitizenRow, conn.execute(sa.select(citizens).where(citizens.c.id == citizen_id)).first())

    def citizens_of(self, username: str, everyone: bool, limit: int | None = None, offset: int = 0) -> list[CitizenRow]:
        """By name: all, or ``limit`` after the first ``offset``."""
        q = sa.select(citizens).order_by(citizens.c.name, citizens.c.id).limit(limit).offset(offset)
        if not everyone:
            q = q.join(care_team, care_team.c.citizen_id == citizens.c.id).where(care_team.c.username == username)
        with self.read() as conn:
            return [_from_row(CitizenRow, r) for r in conn.execute(q)]

    def may_call(self, username: str, citizen_id: str) -> bool:
        with self.read() as conn:
            return conn.execute(sa.select(care_team).where(
                care_team.c.username == username, care_team.c.citizen_id == citizen_id)).first() is not None

    def release_device(self, conn: Connection, device_id: str) -> None:
        """After a wipe the screen belongs to no citizen; the citizen's record stays."""
        conn.execute(citizens.update().where(citizens.c.device_id == device_id).values(device_id=None))

    # ------------------------------------------------------------------------ visits
    def add_visit(self, conn: Connection, row: VisitRow) -> None:
        conn.execute(visits.insert().values(**dataclasses.asdict(row)))

    def visit(self, visit_id: str) -> VisitRow | None:
        with self.read() as conn:
            return _maybe(VisitRow, conn.execute(sa.select(visits).where(visits.c.id == visit_id)).first())

    def visits_of(self, citizen_id: str) -> list[VisitRow]:
        q = sa.select(visits).where(visits.c.citizen_id == citizen_id).order_by(visits.c.at, visits.c.id)
        with self.read() as conn:
            return [_from_row(VisitRow, r) for r in conn.execute(q)]

    def move_visit(self, conn: Connection, visit_id: str, at: float) -> None:
        conn.execute(visits.update().where(visits.c.id == visit_id).values(at=at))

    def cancel_visit(self, conn: Connection, visit_id: str) -> None:
        conn.execute(visits.delete().where(visits.c.id == visit_id))

    def save_live_call(self, row: LiveCallRow) -> None:
        with self.tx() as conn:
            conn.execute(live_calls.delete().where(live_calls.c.id == row.id))
            conn.execute(live_calls.insert().values(**dataclasses.asdict(row)))

    def live_call_rows(self) -> list[LiveCallRow]:
        with self.read() as conn:
            return [_from_row(LiveCallRow, r) for r in conn.execute(sa.select(live_calls))]

    def add_call_record(self, record: CallRow) -> None:
        """The call's record; a call in progress it was is no longer (one transaction)."""
        with self.tx() as conn:
            conn.execute(live_calls.delete().where(live_calls.c.id == record.id))
            conn.execute(calls.insert().values(**dataclasses.asdict(record)))
            self.append_audit(conn, record.caller, "call-ended", record.device_id, call_id=record.id,
                              citizen_id=record.citizen_id, reason=record.end_reason,
                              talk_seconds=record.talk_seconds)

    def add_call_quality(self, call_id: str, column: str, quality: dict[str, Any]) -> bool:
        assert column in ("quality_staff", "quality_device")
        with self.tx() as conn:
            return bool(conn.execute(calls.update().where(calls.c.id == call_id, calls.c[column].is_(None))
                                     .values({column: json.dumps(quality)})).rowcount)

    def call_record(self, call_id: str) -> CallRow | None:
        with self.read() as conn:
            return _maybe(CallRow, conn.execute(sa.select(calls).where(calls.c.id == call_id)).first())

    def call_records(self, limit: int = 200) -> list[CallRow]:
        with self.read() as conn:
            rows = conn.execute(sa.select(calls).order_by(calls.c.placed_at.desc()).limit(limit))
            return [_from_row(CallRow, r) for r in rows]

    # ------------------------------------------------------- what the console pages show
    def commands_of(self, device_id: str, limit: int = 50) -> list[CommandRow]:
        """A device's commands, newest first."""
        q = (sa.select(commands).where(commands.c.device_id == device_id)
             .order_by(commands.c.created_at.desc()).limit(limit))
        with self.read() as conn:
            return [_from_row(CommandRow, r) for r in conn.execute(q)]

    def last_result(self, device_id: str, kind: str) -> CommandRow | None:
        """The newest command of this kind the device answered (its result, verified on the way in)."""
        q = (sa.select(commands).where(commands.c.device_id == device_id, commands.c.kind == kind,
                                       commands.c.result.is_not(None))
             .order_by(commands.c.finished_at.desc()).limit(1))
        with self.read() as conn:
            return _maybe(CommandRow, conn.execute(q).first())

    def devices_with_pending(self, kind: str) -> set[str]:
        """Devices with a command of this kind not yet answered nor expired."""
        q = sa.select(commands.c.device_id).where(
            commands.c.kind == kind, commands.c.state.in_(sorted(lifecycle.OPEN)),
            commands.c.expires_at > self.clock())
        with self.read() as conn:
            return set(conn.execute(q).scalars())

    def calls_of(self, citizen_id: str, limit: int = 50) -> list[CallRow]:
        q = sa.select(calls).where(calls.c.citizen_id == citizen_id).order_by(calls.c.placed_at.desc()).limit(limit)
        with self.read() as conn:
            return [_from_row(CallRow, r) for r in conn.execute(q)]

    def citizen_on(self, device_id: str) -> CitizenRow | None:
        """The citizen a screen is assigned to, if any."""
        with self.read() as conn:
            q = sa.select(citizens).where(citizens.c.device_id == device_id)
            return _maybe(CitizenRow, conn.execute(q).first())

    def caregivers(self) -> list[UserRow]:
        with self.read() as conn:
            q = sa.select(users).where(users.c.role == "caregiver").order_by(users.c.username)
            return [_from_row(UserRow, r) for r in conn.execute(q)]


def _sqlite_pragmas(engine: Engine) -> None:
    # pysqlite's own transaction handling defers BEGIN; writes (tx()) take the write lock up front,
    # so the CLI and the server never deadlock upgrading a read lock; reads never block (WAL).
    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=10000")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("immediate") else "BEGIN")
