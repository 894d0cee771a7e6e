from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.harness import AgentProcess, ServerProcess

os.environ.setdefault("KIVY_NO_ARGS", "1")

pytest_plugins = [
    "tests.turn_fixture",  # the real coturn, started once per session when a test asks
    "tests.pipewire_fixture",  # a private real PipeWire, likewise
    "tests.postgres_fixture",  # a throw-away PostgreSQL, and ``database`` for tests marked both_databases
]


@pytest.fixture
def server(tmp_path: Path, database: str | None) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path / "server", database=database).start()
    yield srv
    srv.stop()


@pytest.fixture
def start_agent(server: ServerProcess, tmp_path: Path) -> Iterator[Callable[..., AgentProcess]]:
    """Start a real agent with a fresh provisioning file; stopped at the end of the test."""
    started: list[AgentProcess] = []

    def start(name: str = "unit", env: dict[str, str] | None = None, provision: Path | None = None) -> AgentProcess:
        prov = provision or server.provisioning_file(tmp_path / f"{name}-prov")
        agent = AgentProcess(tmp_path / name, prov, env or {}).start()
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.stop()


@pytest.fixture
def online_agent(start_agent: Callable[..., AgentProcess]) -> tuple[AgentProcess, str]:
    agent = start_agent()
    return agent, agent.wait_online()
