"""Schema migrations on SQLite and PostgreSQL: the migrated schema is the models' schema,
an upgrade is safe to repeat (also from two processes at once), and a database made
before migrations existed is taken up as the first revision."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import sqlalchemy as sa

from kiosk.server import migrate
from kiosk.server.ca import load_or_create
from kiosk.server.store import Store, database_url, metadata
from tests.harness import BIN, run
from tests.postgres_fixture import Postgres

pytestmark = pytest.mark.timeout(120)


def test_the_head_the_server_knows_is_the_newest_migration() -> None:
    assert migrate.script_head() == migrate.HEAD


@pytest.mark.both_databases
def test_the_migrated_schema_is_the_models_schema(tmp_path: Path, database: str | None) -> None:
    store = Store.in_directory(tmp_path, database=database)
    try:
        assert migrate.current_of(store.engine) == migrate.HEAD
        assert migrate.differences(store.engine, metadata) == []  # autogenerate finds nothing to do
        assert migrate.upgrade(store.engine) == migrate.HEAD  # a second run changes nothing
    finally:
        store.close()


@pytest.mark.both_databases
def test_a_database_from_before_migrations_is_taken_up(tmp_path: Path, database: str | None) -> None:
    engine = sa.create_engine(database_url(database, tmp_path))
    with engine.begin() as conn:  # the schema every server made with create_all until migrations came
        from alembic import command

        command.upgrade(migrate._config(conn), migrate.BASELINE)
        conn.execute(sa.text("DROP TABLE alembic_version"))
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO users (username, password_hash, role, created_at) "
                             "VALUES ('anne', 'x', 'caregiver', 1.0)"))
    engine.dispose()
    store = Store.in_directory(tmp_path, database=database)
    try:
        assert migrate.current_of(store.engine) == migrate.HEAD
        assert migrate.differences(store.engine, metadata) == []
        user = store.user("anne")
        assert user is not None and user.role == "caregiver"  # nothing lost
    finally:
        store.close()


@pytest.mark.both_databases
def test_db_upgrade_from_two_processes_at_once_then_again(tmp_path: Path, database: str | None) -> None:
    args = [str(BIN / "kiosk-server"), "db", "upgrade", "--data", str(tmp_path / "server")]
    args += ["--database", database] if database else []
    load_or_create(tmp_path / "server", "Testby Kommune")  # the CA first: this test races the schema only
    both = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for proc in both:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert f"revision {migrate.HEAD}" in out
    again = run(*args)
    assert f"revision {migrate.HEAD}" in again.stdout


def test_a_database_that_does_not_answer_is_named_in_plain_words(tmp_path: Path, postgres: Postgres) -> None:
    refused = sa.make_url(postgres.url("kiosk")).set(port=1).render_as_string(hide_password=False)
    proc = run(BIN / "kiosk-server", "db", "upgrade", "--data", tmp_path, "--database", refused, check=False)
    assert proc.returncode == 1
    assert "error: the database postgresql://postgres@127.0.0.1:1/" in proc.stderr
    assert "is not answering" in proc.stderr and "Traceback" not in proc.stderr
