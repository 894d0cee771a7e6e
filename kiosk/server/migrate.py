"""Schema migrations (Alembic) for SQLite and PostgreSQL alike.

Every start runs :func:`upgrade`; so does ``kiosk-server db upgrade``. It is safe to run
twice and from several processes at once: on PostgreSQL an advisory lock lets one process
migrate while the others wait, on SQLite the write lock does the same. A database made
before migrations existed (tables, no version) is taken as the first revision, which is
exactly the schema it holds.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

if TYPE_CHECKING:
    from alembic.config import Config

log = logging.getLogger("kiosk.server.migrate")

MIGRATIONS = Path(__file__).with_name("migrations")
BASELINE = "0001"  # the schema as it stood when migrations began
#: The newest revision in migrations/versions (a test holds the two together). Known without
#: Alembic, whose import costs more than a CLI command's whole work: it is loaded only to migrate.
HEAD = "0006"
_VERSION_TABLE = "alembic_version"
_LOCK_KEY = 0x6B696F736B  # "kiosk": one advisory lock for migrations, per PostgreSQL database


def _config(conn: Connection | None = None) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = conn
    return config


def script_head() -> str | None:
    """The newest revision as Alembic reads it from migrations/versions."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_config()).get_current_head()


def current(conn: Connection) -> str | None:
    if not sa.inspect(conn).has_table(_VERSION_TABLE):
        return None
    return conn.execute(sa.text(f"SELECT version_num FROM {_VERSION_TABLE}")).scalar()


def current_of(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return current(conn)


def upgrade(engine: Engine) -> str | None:
    """Bring the database to :data:`HEAD`; returns the revision it was at (None: new)."""
    if current_of(engine) == HEAD:  # the usual case: nothing to do, and no lock taken
        return HEAD
    with engine.connect() as conn:
        conn = conn.execution_options(immediate=True)  # SQLite: BEGIN IMMEDIATE, the write lock
        with conn.begin():
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
            was = current(conn)
            if was == HEAD:  # another process migrated while this one waited
                return was
            from alembic import command

            config = _config(conn)
            if was is None and sa.inspect(conn).has_table("devices"):
                command.stamp(config, BASELINE)  # made by create_all before migrations existed
                was = BASELINE
            command.upgrade(config, "head")
    log.info("database schema upgraded from %s to %s", was or "nothing", HEAD)
    return was


def differences(engine: Engine, metadata: sa.MetaData) -> list[object]:
    """What the database's schema lacks or has beyond the models (empty when they agree)."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return list(compare_metadata(MigrationContext.configure(conn), metadata))
