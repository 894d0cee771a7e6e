"""Support asks to see a real unit's screen: the citizen is asked on the real window first.

Real server, real agent, the real ``kiosk-ui`` window under Xvfb (``screen_driver look``),
and support's side through ``kiosk-server command screenshot``. An unassigned unit sends
its picture without asking anyone; an assigned one asks, and the picture comes back only
after the citizen's touch on *Ja* — not after *Nej*, not after a minute of silence (the
session's clock is moved on, nobody waits a minute). Every request and answer is in the
server's audit log and the unit's trail; no picture is ever on the unit's disk or in a log.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from kiosk.protocol.screenshot import PNG_SIGNATURE
from tests.harness import AgentProcess, ServerProcess

from .answering_screen import AnsweringScreen
from .images import differing_share, load
from .xvfb import xvfb_display  # noqa: F401  (the fixture)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]


def look(server: ServerProcess, device_id: str, png: Path) -> dict[str, Any]:
    """What support gets: ``kiosk-server command screenshot`` waits for the citizen's answer."""
    view: dict[str, Any] = server.cli_json("command", "screenshot", device_id, "--png", str(png), "--json")
    assert view["state"] == "done" and view["result_verified"] is True, view
    return view


def assert_shows(png: Path, seen_by_the_window: Path) -> None:
    """The returned picture is the screen: its size, and the same pixels (give or take the clock's minute)."""
    picture, own = load(png), load(seen_by_the_window)
    assert picture.size == own.size == (1280, 800)
    assert differing_share(picture, own, threshold=24) < 0.03


def test_support_sees_the_screen_only_after_the_citizens_yes(
        server: ServerProcess, online_agent: tuple[AgentProcess, str], xvfb_display: str,  # noqa: F811
        tmp_path: Path) -> None:
    agent, device_id = online_agent
    server.add_admin("anne", "caregiver", "Anne, sygeplejerske")
    pictures = tmp_path / "support"
    pictures.mkdir()
    with AnsweringScreen(agent, xvfb_display, tmp_path, "look", scenario="look", first_cue="ready") as screen:
        unassigned = look(server, device_id, pictures / "unassigned.png")
        assert unassigned["result"]["detail"]["answer"] == "unassigned"
        assert_shows(pictures / "unassigned.png", screen.out / "ready.png")

        server.add_citizen("Karen Jensen", device_id, "anne")
        screen.wait_for("idle", 120, "the idle screen of the assigned unit")
        yes = look(server, device_id, pictures / "yes.png")
        assert yes["result"]["detail"]["answer"] == "yes"
        assert_shows(pictures / "yes.png", screen.out / "idle.png")  # the screen, not the question on it
        views = {"yes": yes}
        for answer, file in (("no", "no.png"), ("no-answer", "silence.png")):
            views[answer] = look(server, device_id, pictures / file)
            assert views[answer]["result"]["detail"] == {"answer": answer}
            assert not (pictures / file).exists()
        (screen.out / "finish").touch()
        screen.finished()
    for cue in ("answered-yes", "answered-no", "answered-silence"):
        assert (screen.out / cue).exists()

    ids = {answer: view["id"] for answer, view in {"unassigned": unassigned, **views}.items()}
    audit = server.cli_json("audit", "list", "--limit", "500")
    for answer, command_id in ids.items():
        entries = [e for e in audit if e["detail"].get("command_id") == command_id]
        assert {e["action"] for e in entries} == {"command-queued", "command-result"}
        [result] = [e for e in entries if e["action"] == "command-result"]
        assert result["detail"]["answer"] == answer and "png" not in result["detail"]
        trail = [e for e in agent.audit() if e.get("command_id") == command_id]
        assert [e["event"] for e in trail] == ["command-accepted", "screenshot-requested", "screenshot-answered"]
        assert trail[1]["ask_consent"] is (answer != "unassigned") and trail[2]["answer"] == answer
        assert (trail[2]["picture_bytes"] > 0) is (answer in ("yes", "unassigned"))

    picture = (pictures / "yes.png").read_bytes()
    on_disk = [p for p in agent.state.rglob("*") if p.is_file() and not p.is_socket()
               and (PNG_SIGNATURE in (data := p.read_bytes()) or base64.b64encode(picture[:48]) in data)]
    assert on_disk == [], "a picture of the screen was written to the unit's disk"
    for log in (agent.log(), screen.log.read_text()):
        assert base64.b64encode(PNG_SIGNATURE).decode()[:10] not in log and "Karen" not in log
