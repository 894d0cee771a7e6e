"""A wipe that reaches a unit in a call ends the call first, then wipes.

Through real processes: server, agent, headless screen with its media, and the Python
caregiver. Before this, a wipe sent during a call finished while the call went on, the
camera live, on a unit already "ready for a new citizen".
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from kiosk.caregiver import CaregiverClient, TestMedia
from kiosk.caregiver.call import CallResult
from kiosk.protocol.call import EndReason
from tests.e2e.test_call_client import care, unit  # noqa: F401 (fixtures)
from tests.harness import ADMIN_PASSWORD, AgentProcess, ServerProcess, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]


def test_a_wipe_during_a_call_ends_the_call_first_then_wipes(
        server: ServerProcess, online_agent: tuple[AgentProcess, str], unit: tuple[Path, str]) -> None:  # noqa: F811
    agent, device_id = online_agent
    screen_log, citizen_id = unit
    holder: dict[str, str] = {}

    async def scenario() -> CallResult:
        async with CaregiverClient(server.console, media=TestMedia(320, 240, 15)) as anne:
            await anne.login("anne", ADMIN_PASSWORD)
            call = await anne.place_call(citizen_id)
            await call.wait_media(video=11, audio=25, timeout=30)
            holder["wipe"] = await asyncio.to_thread(server.send, device_id, "wipe")
            return await call.wait_ended(timeout=30)

    result = asyncio.run(scenario())
    assert result.end_reason is EndReason.UNIT_WIPED, result  # the caregiver is told why, in plain words
    view = server.wait_command(holder["wipe"])
    assert view["state"] == "done", view

    # The unit's trail: the call ended and its media closed before the wipe erased anything.
    events = [e["event"] for e in agent.audit()]
    assert "call-ended-for-wipe" in events and "call-media-closed" in events and "wiped" in events, events
    assert events.index("call-ended-for-wipe") < events.index("call-media-closed") < events.index("wiped"), events

    # The screen left the call (its peer closed: camera and microphone off) and shows a unit ready again.
    def screens() -> list[str]:
        return [json.loads(line)["screen"] for line in screen_log.read_text().splitlines() if line.startswith("{")]
    shown = screens()
    assert "in-call" in shown
    after_call = shown[len(shown) - shown[::-1].index("in-call"):]
    assert after_call and after_call[0] == "ended", shown
    wait_until(lambda: agent.status()["state"] == "enrolled-unassigned", 15, what="the unit to be ready again")

    def record() -> dict[str, object] | None:
        rows = server.cli_json("call", "list")
        return rows[0] if rows and rows[0]["end_reason"] else None
    row = wait_until(record, 20, 0.3, what="the call record")
    assert row["end_reason"] == "unit_wiped", row
