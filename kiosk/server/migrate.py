"""Schema migrations (Alembic) for SQLite and PostgreSQL alike.

Every start runs :func:`upgrade`; so does ``kiosk-server db upgrade``. It is safe to run
twice and from several processes at once: on PostgreSQL an advisory lock lets one process
migrate while the others wait, on SQLite the write lock does the same. A database made
before migrations existed (tables, no version) is taken as the first revision, which is
exactly the schema it holds.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, Engine

log = logging.getLogger("kiosk.server.migrate")

MIGRATIONS = Path(__file__).with_name("migrations")
BASELINE = "0001"  # the schema as it stood when migrations began
_LOCK_KEY = 0x6B696F736B  # "kiosk": one advisory lock for migrations, per PostgreSQL database


def _config(conn: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = conn
    return config


@functools.cache
def head() -> str:
    """The newest revision this version of the server knows."""
    revision = ScriptDirectory.from_config(_config()).get_current_head()
    assert revision is not None, "kiosk/server/migrations/versions holds no revision"
    return revision


def current(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def current_of(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return current(conn)


def upgrade(engine: Engine) -> str | None:
    """Bring the database to :func:`head`; returns the revision it was at (None: new)."""
    if current_of(engine) == head():  # the usual case: nothing to do, and no lock taken
        return head()
    with engine.connect() as conn:
        conn = conn.execution_options(immediate=True)  # SQLite: BEGIN IMMEDIATE, the write lock
        with conn.begin():
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
            was = current(conn)
            if was == head():  # another process migrated while this one waited
                return was
            config = _config(conn)
            if was is None and sa.inspect(conn).has_table("devices"):
                command.stamp(config, BASELINE)  # made by create_all before migrations existed
                was = BASELINE
            command.upgrade(config, "head")
    log.info("database schema upgraded from %s to %s", was or "nothing", head())
    return was


def differences(engine: Engine, metadata: sa.MetaData) -> list[object]:
    """What the database's schema lacks or has beyond the models (empty when they agree)."""
    with engine.connect() as conn:
        return list(compare_metadata(MigrationContext.configure(conn), metadata))
