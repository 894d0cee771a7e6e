"""What crosses processes in a cluster: a command sent through one process reaches a unit held
by another, and a caregiver on one process calls a unit on another, media both ways."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kiosk.caregiver import CaregiverClient, TestMedia
from kiosk.caregiver.call import CallResult
from kiosk.protocol.call import EndReason
from tests.cluster.conftest import Cluster
from tests.harness import ADMIN_PASSWORD, BIN, AgentProcess, Console, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


UnitOn = Callable[[str], tuple[AgentProcess, str]]


@pytest.fixture
def unit_on(cluster: Cluster, tmp_path: Path) -> Iterator[UnitOn]:
    """Real agents, each connected straight to the process named (not through HAProxy)."""
    started: dict[str, tuple[AgentProcess, str]] = {}

    def start(name: str) -> tuple[AgentProcess, str]:
        process = cluster.processes[name]
        agent = AgentProcess(tmp_path / f"unit-{name}", process.provisioning_file(tmp_path / f"prov-{name}")).start()
        started[name] = (agent, agent.wait_online(60))
        return started[name]

    yield start
    for agent, _ in started.values():
        agent.stop()


def test_a_command_sent_through_c_reaches_a_unit_on_a(cluster: Cluster, admin: Console, unit_on: UnitOn) -> None:
    _, device_id = unit_on("a")
    assert cluster.holders(device_id) == {"a"}
    through_c = Console(cluster.processes["c"].console)
    assert through_c.login() == 200
    status, body = through_c.request("POST", f"/api/devices/{device_id}/commands", {"kind": "ping"})
    assert status == 202, body
    done = cluster.processes["c"].wait_command(body["id"], timeout=30)
    assert done["state"] == "done" and done["result_verified"], done
    # process C sees the unit online although another process holds it
    status, unit = through_c.request("GET", f"/api/devices/{device_id}")
    assert status == 200 and unit["online"], unit


def test_a_caregiver_on_a_calls_a_unit_on_b(cluster: Cluster, admin: Console, unit_on: UnitOn,
                                            tmp_path: Path) -> None:
    agent, device_id = unit_on("b")
    citizen_id = cluster.any.add_citizen("Karen Jensen", device_id, "anne")
    screen_log = tmp_path / "screen.log"
    with screen_log.open("w") as out:
        screen = subprocess.Popen([str(BIN / "kiosk-ui"), "--state", str(agent.state), "--headless",
                                   "--demo-media", "--auto-answer-after", "0"],
                                  stdout=out, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until(lambda: '"screen": "idle"' in screen_log.read_text(), 60, 0.2, what="the screen to show idle")
        assert cluster.holders(device_id) == {"b"}

        async def call() -> CallResult:
            async with CaregiverClient(cluster.processes["a"].console, media=TestMedia(320, 240, 15)) as anne:
                await anne.login("anne", ADMIN_PASSWORD)
                placed = await anne.place_call(citizen_id)
                await placed.wait_ringing()
                await placed.wait_answered()
                await placed.wait_media(video=11, audio=25, timeout=30)
                return await placed.hang_up()

        result = asyncio.run(call())
    finally:
        screen.terminate()
        screen.wait(20)
    assert result.end_reason is EndReason.HUNG_UP_BY_STAFF, result
    assert result.video_frames > 10 and result.audio_frames > 20

    def record() -> dict[str, Any] | None:
        rows = [r for r in cluster.any.cli_json("call", "list") if r["id"] == result.call_id]
        return rows[0] if rows and rows[0]["quality_device"] else None

    row = wait_until(record, 30, 0.3, what="the call record with the unit's quality report (sent to process B)")
    assert row["end_reason"] == "hung_up_by_staff" and row["quality_device"]["frames_decoded"] > 0, row
