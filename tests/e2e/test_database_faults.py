"""PostgreSQL stopped and restarted under the running server while commands flow: the server
says so in plain words, keeps its units connected, refuses (never falsely accepts) what it
cannot store, and delivers every command it did accept, exactly once, when the database is
back. No process exits."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from tests.harness import AgentProcess, Console, ServerProcess, wait_until
from tests.postgres_fixture import Postgres

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture
def database(postgres: Postgres) -> str:  # this test is about PostgreSQL only
    return postgres.new_database()


def test_a_postgresql_restart_during_traffic_loses_no_command(
        server: ServerProcess, start_agent: Callable[..., AgentProcess], postgres: Postgres) -> None:
    agents = [start_agent(f"unit{i}") for i in range(3)]
    device_ids = [agent.wait_online() for agent in agents]
    server.add_admin()
    console = Console(server.console)
    assert console.login() == 200

    accepted: list[str] = []
    refused: list[dict[str, str]] = []
    stop = threading.Event()

    def traffic() -> None:
        sender = Console(server.console)
        assert sender.login() == 200
        i = 0
        while not stop.is_set():
            device_id = device_ids[i % len(device_ids)]
            status, body = sender.request("POST", f"/api/devices/{device_id}/commands", {"kind": "ping"})
            if status == 202:
                accepted.append(body["id"])
            else:
                refused.append({"status": str(status), **body})
            i += 1
            time.sleep(0.05)

    sending = threading.Thread(target=traffic)
    sending.start()
    try:
        wait_until(lambda: len(accepted) >= 5 or refused, 30, what="commands before the outage")
        assert not refused, refused[:3]
        postgres.stop("immediate")  # as a crash: it recovers from its log when it starts
        wait_until(lambda: "is not answering" in server.log(), 30, what="the server to say the database is gone")
        wait_until(lambda: len(refused) >= 3, 30, what="commands refused during the outage")
        status, body = console.request("POST", f"/api/devices/{device_ids[0]}/commands", {"kind": "ping"})
        assert status == 503 and body["error"] == "database-unavailable", body
        assert "not answering" in body["message"] and "nothing was saved" in body["message"]
        time.sleep(2.0)  # a while without a database: units stay connected on heartbeats alone
        postgres.start()
        wait_until(lambda: "answers again" in server.log(), 30, what="the server to find the database back")
        before = len(accepted)
        wait_until(lambda: len(accepted) >= before + 5, 30, what="commands after the outage")
    finally:
        stop.set()
        sending.join(30)

    assert server.proc is not None and server.proc.poll() is None, "the server process exited"
    assert all(r["status"] == "503" and r.get("error") == "database-unavailable" for r in refused), refused[:3]
    for command_id in accepted:  # every command the API accepted is carried out
        assert server.wait_command(command_id, timeout=60)["state"] == "done"
    accepted_ids = set(accepted)
    for agent in agents:  # and each exactly once: the unit's own audit of what it accepted
        taken = [e["command_id"] for e in agent.audit() if e["event"] == "command-accepted"]
        assert len(taken) == len(set(taken)), "a command ran twice"
    ran = [e["command_id"] for agent in agents for e in agent.audit() if e["event"] == "command-accepted"]
    assert accepted_ids <= set(ran)
    log = server.log()
    assert "Traceback" not in log, log[-3000:]
    for device_id in device_ids:  # no unit's connection was dropped for the database's sake
        assert f"device {device_id} disconnected" not in log
