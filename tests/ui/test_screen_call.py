"""A caregiver calls a real unit and the citizen answers with one touch on the real screen.

Real server, real agent, the real ``kiosk-ui`` window under Xvfb (in the
driver's process), and the Python caregiver as the caller with its test
camera. The simulated touch lands on the answer button; the unit's own
screenshots must then show the caller's video, not black and moving.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kiosk.caregiver import CaregiverClient, TestMedia
from kiosk.protocol.call import EndReason
from tests.harness import ADMIN_PASSWORD, AgentProcess, ServerProcess, wait_until

from .images import differing_share, load, mean_luma
from .test_screens import ARTIFACTS, ROOT
from .xvfb import kivy_env, xvfb_display  # noqa: F401  (the fixture)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def test_a_touch_on_the_answer_button_answers_a_real_call_and_shows_the_callers_video(
        server: ServerProcess, online_agent: tuple[AgentProcess, str], xvfb_display: str,  # noqa: F811
        tmp_path: Path) -> None:
    agent, device_id = online_agent
    server.add_admin("anne", "caregiver", "Anne, sygeplejerske")
    citizen_id = server.add_citizen("Karen Jensen", device_id, "anne")
    out = ARTIFACTS / "real-call"
    for stale in out.glob("*"):
        stale.unlink()
    out.mkdir(parents=True, exist_ok=True)
    log = tmp_path / "screen.log"
    with log.open("w") as sink:
        screen = subprocess.Popen([sys.executable, "-m", "tests.ui.screen_driver", "answer", "--state",
                                   str(agent.state), "--out", str(out)],
                                  env=kivy_env(xvfb_display, tmp_path / "kivy"), cwd=ROOT, stdout=sink,
                                  stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: (out / "idle").exists() or screen.poll() is not None, 90, 0.2,
                   what="the screen app showing idle")
        assert screen.poll() is None, log.read_text()[-3000:]

        async def call() -> EndReason | None:
            async with CaregiverClient(server.console, media=TestMedia(320, 240, 15)) as anne:
                await anne.login("anne", ADMIN_PASSWORD)
                placed = await anne.place_call(citizen_id)
                await placed.wait_ringing()
                await placed.wait_answered(timeout=60)  # answered by the touch, nothing else
                await placed.wait_media(video=15, audio=25, timeout=30)
                await asyncio.to_thread(wait_until, lambda: (out / "shots-done").exists() or screen.poll() is not None,
                                        60, 0.2, what="the unit's screenshots of the call")
                result = await placed.hang_up()
                return result.end_reason

        assert asyncio.run(call()) is EndReason.HUNG_UP_BY_STAFF
        assert screen.wait(60) == 0, log.read_text()[-3000:]
    finally:
        if screen.poll() is None:
            screen.terminate()
            screen.wait(20)
    result = json.loads((out / "result.json").read_text())
    assert result["shots"] == ["real-ringing", "real-in-call", "real-in-call-later"]
    assert result["frames_shown"] >= 30 and result["ended"] == "hung_up_by_staff"
    width, height = result["window"]
    video = (round(width * 0.3), round(height * 0.1), round(width * 0.7), round(height * 0.65))
    first, later = load(out / "real-in-call.png"), load(out / "real-in-call-later.png")
    assert mean_luma(first, video) > 40, "the caller's video is black on the unit's screen"
    assert differing_share(first.crop(video), later.crop(video), threshold=24) > 0.01, "the video stands still"
    assert "Karen" not in log.read_text() and "a=candidate" not in log.read_text()
    assert os.path.getsize(out / "real-ringing.png") > 0
