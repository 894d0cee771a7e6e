"""A caregiver calls a real unit and the citizen answers with one touch on the real screen.

Real server, real agent, the real ``kiosk-ui`` window under Xvfb (in the
driver's process), and the Python caregiver as the caller with its test
camera. The simulated touch lands on the answer button; the unit's own
screenshots must then show the caller's video, not black and moving.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from kiosk.caregiver import CaregiverClient, TestMedia
from kiosk.protocol.call import EndReason
from tests.harness import ADMIN_PASSWORD, AgentProcess, ServerProcess

from .answering_screen import AnsweringScreen
from .xvfb import xvfb_display  # noqa: F401  (the fixture)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def test_a_touch_on_the_answer_button_answers_a_real_call_and_shows_the_callers_video(
        server: ServerProcess, online_agent: tuple[AgentProcess, str], xvfb_display: str,  # noqa: F811
        tmp_path: Path) -> None:
    agent, device_id = online_agent
    server.add_admin("anne", "caregiver", "Anne, sygeplejerske")
    citizen_id = server.add_citizen("Karen Jensen", device_id, "anne")
    with AnsweringScreen(agent, xvfb_display, tmp_path, "real-call") as screen:

        async def call() -> EndReason | None:
            async with CaregiverClient(server.console, media=TestMedia(320, 240, 15)) as anne:
                await anne.login("anne", ADMIN_PASSWORD)
                placed = await anne.place_call(citizen_id)
                await placed.wait_ringing()
                await placed.wait_answered(timeout=60)  # answered by the touch, nothing else
                await placed.wait_media(video=15, audio=25, timeout=30)
                await asyncio.to_thread(screen.wait_for, "shots-done", 60, "the unit's screenshots of the call")
                result = await placed.hang_up()
                return result.end_reason

        assert asyncio.run(call()) is EndReason.HUNG_UP_BY_STAFF
        result = screen.finished()
    assert result["ended"] == "hung_up_by_staff"
    screen.assert_callers_video_shown(result)
