"""The visit schedule end to end: planned on the server, signed to the unit, cached there
encrypted under the assignment key, listed by the screen, and erased by a wipe.

Real processes: server (and its CLI), agent, and the headless screen app.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest

from kiosk.protocol import agent_socket
from kiosk.protocol import messages as m
from tests.e2e.test_call_client import care, unit  # noqa: F401 (fixtures)
from tests.harness import AgentProcess, ServerProcess, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

STAFF = "Anne Andersen"


def _screen_status(agent: AgentProcess) -> m.AgentStatus:
    """What the agent tells the screen (asked over the screen's own socket)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(str(agent_socket.socket_path(agent.state)))
        s.sendall(m.encode(m.GetStatus()) + b"\n")
        reply = m.AGENT_TO_UI.decode(s.makefile("rb").readline())
    assert isinstance(reply, m.AgentStatus), reply
    return reply


def _local(at: float) -> str:
    return datetime.fromtimestamp(at).astimezone().isoformat(timespec="seconds")


def _files_holding(root: Path, needle: bytes) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and not p.is_socket() and needle in p.read_bytes()]


def _listed(log: Path) -> int:
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    return int(lines[-1].get("visits", 0)) if lines else 0


def test_a_visit_planned_on_the_server_shows_on_the_screen_and_a_wipe_erases_it(
        server: ServerProcess, online_agent: tuple[AgentProcess, str], unit: tuple[Path, str]) -> None:  # noqa: F811
    agent, device_id = online_agent
    screen_log, citizen_id = unit
    first = round(time.time()) + 3600.0  # in an hour, then every day at the same time
    added = server.cli_json("visit", "add", "--citizen", citizen_id, "--at", _local(first), "--staff-name", STAFF,
                            "--staff-role", "sygeplejerske", "--kind", "medicin", "--repeat", "daily")
    assert added["at"] == first and added["repeat"] == "daily"

    def shown(at: float) -> Callable[[], bool]:
        return lambda: [v.at for v in _screen_status(agent).visits][:1] == [at]
    wait_until(shown(first), 20, 0.2, what="the planned visit to reach the unit")
    visits = _screen_status(agent).visits
    assert [v.at for v in visits] == [first, first + 86400], visits  # today's and the repeat tomorrow
    assert visits[0] == m.PlannedVisit(at=first, staff_name=STAFF, staff_role="sygeplejerske", kind="medicin")
    wait_until(lambda: _listed(screen_log) >= 1, 20, 0.2, what="the screen to list the visit")

    # Cached under the assignment key: no clear text of it on the unit, nor in any log.
    assert _files_holding(agent.state, STAFF.encode()) == []
    assert STAFF not in agent.log() and STAFF not in server.log()
    assert STAFF not in server.cli("audit", "list", "--json").stdout

    moved = server.cli_json("visit", "move", added["id"], "--at", _local(first + 1800))
    assert moved["at"] == first + 1800
    wait_until(shown(first + 1800), 20, 0.2, what="the moved visit to reach the unit")
    listed = server.cli_json("visit", "list", "--citizen", citizen_id)
    assert [v["id"] for v in listed] == [added["id"]]

    view = server.wait_command(server.send(device_id, "wipe"))
    assert view["state"] == "done", view
    status = _screen_status(agent)
    assert status.state == "enrolled-unassigned" and status.visits == []
    for needle in (STAFF.encode(), b"medicin", b"sygeplejerske"):
        assert _files_holding(agent.state, needle) == [], needle
    assert not any((agent.state / "citizen").iterdir()), "the schedule cache outlived the wipe"


def test_cancelled_visits_leave_the_screen_and_bad_input_is_refused(
        server: ServerProcess, online_agent: tuple[AgentProcess, str], care: tuple[AgentProcess, str]) -> None:  # noqa: F811
    agent, _ = online_agent
    _, citizen_id = care
    at = round(time.time()) + 7200.0
    visit = server.cli_json("visit", "add", "--citizen", citizen_id, "--at", _local(at), "--staff-name", "Bo",
                            "--staff-role", "hjemmehjælper")
    wait_until(lambda: len(_screen_status(agent).visits) == 1, 20, 0.2, what="the visit on the unit")
    server.cli("visit", "cancel", visit["id"])
    wait_until(lambda: _screen_status(agent).visits == [], 20, 0.2, what="the cancelled visit to leave the unit")

    for bad in (["--at", "tomorrow"], ["--at", _local(at), "--staff-name", ""],
                ["--at", _local(at), "--staff-name", "x" * 101]):
        args = ["--staff-name", "Bo", "--staff-role", "hjemmehjælper", *bad]
        out = server.cli("visit", "add", "--citizen", citizen_id, *args, check=False)
        assert out.returncode != 0 and out.stderr.strip() and "Traceback" not in out.stderr, out
    out = server.cli("visit", "add", "--citizen", "no-such", "--at", _local(at), "--staff-name", "Bo",
                     "--staff-role", "x", check=False)
    assert out.returncode != 0 and "no citizen" in out.stderr
    assert server.cli_json("visit", "list", "--citizen", citizen_id) == []
