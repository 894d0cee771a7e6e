"""A real, throw-away PostgreSQL on loopback, for tests: the fixtures ``postgres`` and ``database``.

Load it from the root conftest (``pytest_plugins = ["tests.postgres_fixture"]``). The
session fixture ``postgres`` runs Debian's ``initdb`` and ``pg_ctl`` (setup.sh installs the
``postgresql`` package) as the unprivileged ``postgres`` user — PostgreSQL refuses to run
as root, and the tests do run as root — on a free loopback port, with its data and socket
in a temporary directory that is removed when the session ends. Nothing of the system's
own clusters is touched.

``database`` is the ``--database`` URL the ``server`` fixture (and the store's tests) use:
None, the embedded SQLite default, unless the test is marked ``both_databases``; such a
test runs twice, on SQLite and on a fresh empty PostgreSQL database of its own.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.harness import free_port, port_open, wait_until

PG_USER = "postgres"  # Debian's postgresql package creates this system user
HOST = "127.0.0.1"
START_TIMEOUT = 60.0


def _bindir() -> Path:
    """The newest PostgreSQL Debian installed (its binaries are not on PATH)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parts[-3]))
    if not found:
        pytest.fail("PostgreSQL is not installed: run scripts/setup.sh (it installs the Debian package postgresql)")
    return found[-1].parent


@dataclass
class Postgres:
    """One cluster: its port, and the means to add databases and to stop and start it."""

    bindir: Path
    root: Path
    port: int
    _names = itertools.count(1)

    @property
    def data(self) -> Path:
        return self.root / "data"

    def _as_owner(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["runuser", "-u", PG_USER, "--", *args], capture_output=True, text=True,
                              check=check, timeout=START_TIMEOUT, cwd=self.root)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{PG_USER}@{HOST}:{self.port}/{database}"

    def sql(self, statement: str, database: str = "postgres") -> str:
        return self._as_owner(str(self.bindir / "psql"), "-h", HOST, "-p", str(self.port), "-d", database,
                              "-XAtqc", statement).stdout

    def new_database(self) -> str:
        name = f"kiosk_test_{os.getpid()}_{next(self._names)}"
        self.sql(f"CREATE DATABASE {name}")
        return self.url(name)

    def start(self) -> None:
        self._as_owner(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log"),
                       "-w", "-t", str(int(START_TIMEOUT)), "start",
                       "-o", f"-c listen_addresses={HOST} -c port={self.port} "
                             f"-c unix_socket_directories={self.root}")
        wait_until(lambda: port_open(self.port), 10, what="PostgreSQL port")

    def stop(self, mode: str = "fast") -> None:
        """``fast`` as systemd stops it; ``immediate`` as a crash (it recovers from its WAL)."""
        self._as_owner(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    bindir = _bindir()
    owner = pwd.getpwnam(PG_USER)
    root = Path(tempfile.mkdtemp(prefix="kiosk-pg-"))  # under /tmp, which the postgres user can traverse
    os.chown(root, owner.pw_uid, owner.pw_gid)
    cluster = Postgres(bindir, root, free_port())
    try:
        # trust on loopback: a throw-away cluster reachable only from this machine, for the tests' own user
        cluster._as_owner(str(bindir / "initdb"), "-D", str(cluster.data), "-U", PG_USER, "--auth=trust",
                          "-E", "UTF8", "--no-instructions")
        cluster.start()
        yield cluster
    finally:
        cluster.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.definition.get_closest_marker("both_databases") and "database" in metafunc.fixturenames:
        metafunc.parametrize("database", ["sqlite", "postgresql"], indirect=True)


@pytest.fixture
def database(request: pytest.FixtureRequest) -> str | None:
    if getattr(request, "param", "sqlite") == "sqlite":
        return None
    cluster: Postgres = request.getfixturevalue("postgres")
    return cluster.new_database()
