"""Support rings a real unit to check its screen and speaker ("Prøveopkald", issue 13).

Real server and agent (processes), the real ``kiosk-ui`` window under Xvfb (``screen_driver
test-ring``) with its sound through a private PipeWire (the kiosk's echo canceller, a null sink
as the speaker), and support in Debian's Chromium on the unit's page. Support presses
*Prøveopkald*: the window rings, the ring is heard on the speaker's monitor, a touch answers,
and the page says after how many seconds and that the ring sound played. A second, short test
ring (sent through the API with the page's own session, as the page sends commands) rings out
unanswered and the page says so. Both results are signed by the unit and audited.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.e2e.test_console_journeys import browser, login, reload_until, shot  # noqa: F401  (the fixture)
from tests.harness import AgentProcess, ServerProcess
from tests.pipewire_fixture import PipeWire, band_level_db, level_db

from .answering_screen import AnsweringScreen
from .images import load
from .xvfb import xvfb_display  # noqa: F401  (the fixture)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

RING_HZ = 425  # kiosk.media.audio_cues.RING_HZ: the Danish ringing tone

SEND_SHORT_TEST_RING = """async ([unit]) => (await fetch("/api/devices/" + unit + "/commands", {
  method: "POST", headers: {"Content-Type": "application/json"}, credentials: "same-origin",
  body: JSON.stringify({kind: "test-ring", args: {ring_seconds: 3}})})).status"""


def hear_the_ring(pipewire: PipeWire) -> np.ndarray:
    """Two-second recordings of the speaker until one holds the ring's tone (its first ring is soft)."""
    heard = np.zeros(0)
    for _ in range(10):
        heard = pipewire.record("speaker.monitor", 2.0)
        if band_level_db(heard, RING_HZ - 10, RING_HZ + 10) > -45:
            break
    return heard


def test_support_rings_a_unit_a_touch_answers_and_the_page_says_so(
        browser: Any, server: ServerProcess, online_agent: tuple[AgentProcess, str],  # noqa: F811
        pipewire: PipeWire, xvfb_display: str, tmp_path: Path) -> None:  # noqa: F811
    agent, device_id = online_agent  # unassigned: a unit on the shelf may ring too
    server.add_admin("sara", "support")
    pipewire.add_speaker("speaker", priority=3000)  # the unit's loudspeaker (its monitor: what it plays)
    with AnsweringScreen(agent, xvfb_display, tmp_path, "test-ring", scenario="test-ring", first_cue="ready") as screen:
        page = login(browser, server, "sara")
        page.goto(f"{server.console}/units/{device_id}")
        with page.expect_navigation(timeout=120_000):  # reloaded once the unit's signed result is in
            page.click("button[data-command=test-ring]")
            screen.wait_for("ringing", 60, "the test ring on the window")
            heard = hear_the_ring(pipewire)
            (screen.out / "heard").touch()  # the citizen's touch
        words = page.inner_text("#test-ring")
        shot(page, "support-test-ring")
        screen.wait_for("answered", 60, "the window back on its screen")

        assert page.evaluate(SEND_SHORT_TEST_RING, [device_id]) == 202
        reload_until(page, "#test-ring", "ingen svarede", 60)
        unanswered_words = page.inner_text("#test-ring")
        (screen.out / "finish").touch()
        result = screen.finished()
    assert result["after"] == "ready", "the screen is back where it was"

    (screen.out / "unit-speaker.s16le").write_bytes((heard * 32767).astype("<i2").tobytes())  # 48 kHz mono
    ring_db = band_level_db(heard, RING_HZ - 10, RING_HZ + 10)
    assert ring_db > -45 and level_db(heard) > -50, f"no ring on the speaker ({ring_db:.1f} dB at {RING_HZ} Hz)"
    assert "skærmen ringede og blev besvaret efter" in words and "Ringelyden blev spillet" in words, words
    assert "ingen svarede" in unanswered_words and "Ringelyden blev spillet" in unanswered_words, unanswered_words

    # The window's own pictures: the whole screen one question, its lower part the big green button.
    ringing = load(screen.out / "test-ring.png").convert("RGB")
    assert ringing.size == (1280, 800)
    pixel = ringing.getpixel((640, 600))
    assert isinstance(pixel, tuple)
    red, green, blue = pixel[:3]
    assert green > red + 40 and green > blue + 40, f"no green answer button: {pixel}"
    assert (screen.out / "test-ring-answered.png").exists()

    results = [e for e in server.cli_json("audit", "list", "--limit", "500")
               if e["action"] == "command-result" and e["detail"].get("kind") == "test-ring"]
    assert [e["detail"]["answer"] for e in results] == ["answered", "not-answered"]
    shown = [server.cli_json("command", "show", e["detail"]["command_id"]) for e in results]
    assert all(view["state"] == "done" and view["result_verified"] is True for view in shown), shown
    page_sent = shown[0]  # expires unreached after ten minutes: never rings in a home hours later
    assert page_sent["created_by"] == "sara"
    assert page_sent["expires_at"] - page_sent["created_at"] == pytest.approx(600, abs=1)
    answered, rang_out = (view["result"]["detail"] for view in shown)
    assert answered["ring_sound"] == rang_out["ring_sound"] == "played", (answered, rang_out)
    assert 0 < answered["answered_after"] <= 60 and "answered_after" not in rang_out
    trail = [e["event"] for e in agent.audit() if e.get("command_id") == results[0]["detail"]["command_id"]]
    assert trail == ["command-accepted", "test-ring-requested", "test-ring-ended"]
