"""The agent's part of support's test ring: it asks the screen, signs what the screen says, and
turns a refusal in a call into a failure that says why (the screen decides: it knows its call)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from kiosk.protocol import messages as m
from kiosk.provision import diagnostics, handlers
from kiosk.provision.state import StateDir


class NoSystem:
    async def restart_ui(self) -> None:
        raise AssertionError("not for a test ring")

    async def reboot(self) -> None:
        raise AssertionError("not for a test ring")


async def not_updating(_release: str, _path: str) -> dict[str, str]:
    raise AssertionError("not for a test ring")


def run(tmp_path: Path, reply: m.ScreenReply | Exception, command: m.CommandAction | None = None,
        ) -> tuple[handlers.HandlerResult, list[m.ScreenRequest], StateDir]:
    state = StateDir(tmp_path)
    state.root.mkdir(exist_ok=True)
    asked: list[m.ScreenRequest] = []

    async def ask_screen(request: m.ScreenRequest) -> m.ScreenReply:
        asked.append(request)
        if isinstance(reply, Exception):
            raise reply
        return reply

    ctx = handlers.Context(state, "unit-1", NoSystem(), lambda: diagnostics.LinkFacts(tmp_path, True, None, True, 0.0),
                           lambda: None, ask_screen, not_updating)
    return asyncio.run(handlers.run(ctx, command or m.RingTest(ring_seconds=20), "cmd-1")), asked, state


def heard(answer: m.RingTestAnswer, **more: object) -> m.RingTestReply:
    return m.RingTestReply(request_id="cmd-1", heard=m.RingTestHeard(answer, **more))  # type: ignore[arg-type]


def test_an_answered_ring_is_the_results_detail_and_the_trail_says_how_it_went(tmp_path: Path) -> None:
    result, asked, state = run(tmp_path, heard("answered", answered_after=4.2, ring_sound="played"))
    assert asked == [m.RingTestRequest(request_id="cmd-1", ring_seconds=20)]
    assert result == handlers.HandlerResult("ok", detail={"answer": "answered", "answered_after": 4.2,
                                                          "ring_sound": "played"})
    trail = [(e["event"], e.get("answer")) for e in state.audit_entries()]
    assert trail == [("test-ring-requested", None), ("test-ring-ended", "answered")]


def test_a_unit_in_a_call_refuses_in_plain_words(tmp_path: Path) -> None:
    result, _, _ = run(tmp_path, heard("in-call"))
    assert result.outcome == "failed" and result.reason is not None and "i samtale" in result.reason
    assert result.detail == {"answer": "in-call"}


@pytest.mark.parametrize("reply", [
    m.ScreenshotReply(request_id="cmd-1", answer="no"),  # another question's answer
    handlers.CannotCarryOut("the screen app is not running"),
])
def test_no_ring_without_the_screens_own_account(tmp_path: Path, reply: m.ScreenReply | Exception) -> None:
    result, _, _ = run(tmp_path, reply)
    assert result.outcome == "failed" and result.detail == {}


def test_a_look_at_the_screen_answered_with_a_ring_is_refused_in_the_trail_too(tmp_path: Path) -> None:
    result, asked, state = run(tmp_path, heard("answered", answered_after=1.0, ring_sound="played"), m.Screenshot())
    assert isinstance(asked[0], m.ScreenshotRequest)
    assert result.outcome == "failed" and result.reason is not None and "another question" in result.reason
    assert [e["event"] for e in state.audit_entries()] == ["screenshot-requested", "screenshot-failed"]
