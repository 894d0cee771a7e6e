"""The Python caregiver (kiosk.caregiver) calls a real unit: server, agent, headless screen.

What `make demo` and the call benchmark rely on: the client logs in, places the
call, answers the unit's offer, media flows both ways (each side counts what it
decoded), and its hang-up is recorded as the caregiver's, with both quality reports.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kiosk.caregiver import CallRejected, CaregiverClient, TestMedia
from kiosk.protocol.call import EndReason
from tests.harness import ADMIN_PASSWORD, BIN, AgentProcess, ServerProcess, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]


@pytest.fixture
def care(server: ServerProcess, online_agent: tuple[AgentProcess, str]) -> tuple[AgentProcess, str]:
    """A unit assigned to a citizen in Anne's care (Bo is not in it)."""
    agent, device_id = online_agent
    server.add_admin("anne", "caregiver", "Anne, sygeplejerske")
    server.add_admin("bo", "caregiver", "Bo Berg")
    return agent, server.add_citizen("Karen Jensen", device_id, "anne")


@pytest.fixture
def unit(care: tuple[AgentProcess, str]) -> Iterator[tuple[Path, str]]:
    """The unit's screen running, answering at once."""
    agent, citizen_id = care
    log = agent.state.parent / "screen.log"
    with log.open("w") as out:
        proc = subprocess.Popen([str(BIN / "kiosk-ui"), "--state", str(agent.state), "--headless", "--demo-media",
                                 "--auto-answer-after", "0"], stdout=out, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until(lambda: '"screen": "idle"' in log.read_text(), 30, 0.1, what="the screen app to show idle")
        yield log, citizen_id
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.both_databases
def test_python_caregiver_calls_media_flows_both_ways_and_hangs_up(
        server: ServerProcess, unit: tuple[Path, str], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="kiosk.caregiver")
    screen_log, citizen_id = unit

    async def scenario() -> Any:
        async with CaregiverClient(server.console, media=TestMedia(320, 240, 15)) as anne:
            await anne.login("anne", ADMIN_PASSWORD)
            assert [c["id"] for c in await anne.citizens()] == [citizen_id]
            call = await anne.place_call(citizen_id)
            assert call.placed is not None and call.placed.ice_servers == [] and not call.placed.relay_only
            await call.wait_ringing()
            await call.wait_answered()
            await call.wait_media(video=11, audio=25, timeout=20)
            assert call.peer is not None and call.peer.configuration.iceServers == []  # never a public STUN
            result = await call.hang_up()
            assert anne.call_in_progress is None
            return result

    result = asyncio.run(scenario())
    assert result.end_reason is EndReason.HUNG_UP_BY_STAFF and result.refused is None
    assert result.video_frames > 10 and result.audio_frames > 20
    times = result.times
    assert times.start_sent is not None and times.placed is not None and times.ringing is not None
    assert times.offer is not None and times.connected is not None and times.first_video_frame is not None
    assert times.start_sent <= times.placed <= times.ringing <= times.offer <= times.connected
    assert times.connected <= times.first_video_frame
    assert result.quality is not None and (result.quality["frames_decoded"] or 0) > 10

    def record() -> dict[str, Any] | None:
        rows = server.cli_json("call", "list")
        return rows[0] if rows and rows[0]["quality_device"] and rows[0]["quality_staff"] else None

    row = wait_until(record, 20, 0.3, what="the call record with both quality reports")
    assert row["id"] == result.call_id and row["caller"] == "anne"
    assert row["end_reason"] == "hung_up_by_staff" and row["talk_seconds"] > 0
    assert row["quality_device"]["frames_decoded"] > 0, row["quality_device"]
    assert row["quality_staff"]["frames_decoded"] > 10, row["quality_staff"]
    screens = [json.loads(line)["screen"] for line in screen_log.read_text().splitlines() if line.startswith("{")]
    assert screens[-4:] == ["ringing", "connecting", "in-call", "ended"], screens
    assert f"call {result.call_id} ended: hung_up_by_staff" in caplog.text
    for private in ("Karen", "v=0", "a=candidate", "ice-pwd"):
        assert private not in caplog.text, f"{private!r} in the client's log"

    # The same call from a shell, as `make demo` runs it: the password on stdin, the result as JSON.
    cli = subprocess.run([sys.executable, "-m", "kiosk.caregiver", "--console", server.console,
                          "--user", "anne", "--citizen", citizen_id, "--password-stdin", "--talk", "1"],
                         input=ADMIN_PASSWORD + "\n", capture_output=True, text=True, timeout=40)
    assert cli.returncode == 0, cli.stderr
    printed = json.loads(cli.stdout)
    assert printed["end_reason"] == "hung_up_by_staff" and printed["video_frames"] > 0, printed
    for private in ("Karen", "v=0", "a=candidate", ADMIN_PASSWORD):
        assert private not in cli.stdout + cli.stderr, f"{private!r} in the command's output"


def test_python_caregiver_outside_the_care_team_is_refused(
        server: ServerProcess, care: tuple[AgentProcess, str]) -> None:
    _, citizen_id = care

    async def scenario() -> CallRejected:
        async with CaregiverClient(server.console) as bo:
            await bo.login("bo", ADMIN_PASSWORD)
            with pytest.raises(CallRejected) as refused:
                await bo.place_call(citizen_id)
            assert bo.call_in_progress is None
            return refused.value

    assert asyncio.run(scenario()).reason == "forbidden"


@pytest.mark.timeout(120)
def test_a_call_in_progress_survives_the_server_killed_and_restarted(
        server: ServerProcess, unit: tuple[Path, str], care: tuple[AgentProcess, str]) -> None:
    """SIGKILL mid-call: media goes on both ways (it never passed through the server), nobody
    is told the call failed, signalling reattaches to the restarted server, the record completes."""
    screen_log, citizen_id = unit
    agent, _ = care

    async def scenario() -> tuple[Any, int, int]:
        async with CaregiverClient(server.console, media=TestMedia(176, 144, 15)) as anne:
            await anne.login("anne", ADMIN_PASSWORD)
            call = await anne.place_call(citizen_id)
            await call.wait_media(video=10, audio=25, timeout=30)
            assert server.proc is not None
            server.proc.kill()  # SIGKILL: nothing is written, nothing is said
            server.proc.wait()
            before = call.video_frames
            await asyncio.sleep(3.0)  # the server is down; the call is not
            during = call.video_frames - before
            assert not call.ended, f"the call ended with the server: {call.end_reason}"
            await asyncio.to_thread(server.start)
            for _ in range(300):
                if call.resumes:
                    break
                await asyncio.sleep(0.1)
            assert call.resumes == 1, "the caregiver took the call up again on the restarted server"
            await asyncio.to_thread(agent.wait_online, 30)
            after = call.video_frames
            await call.wait_media(video=after + 15, audio=1, timeout=20)
            return await call.hang_up(), during, after

    result, during, _ = asyncio.run(scenario())
    assert during >= 15, f"only {during} frames while the server was down"
    assert result.end_reason is EndReason.HUNG_UP_BY_STAFF and result.error is None

    def record() -> dict[str, Any] | None:
        rows = [r for r in server.cli_json("call", "list") if r["id"] == result.call_id]
        return rows[0] if rows and rows[0]["quality_device"] and rows[0]["quality_staff"] else None

    row = wait_until(record, 30, 0.3, what="the call's record, completed after the restart, with both reports")
    assert row["end_reason"] == "hung_up_by_staff" and row["connected_at"] and row["talk_seconds"] > 3
    screens = [json.loads(line)["screen"] for line in screen_log.read_text().splitlines() if line.startswith("{")]
    assert screens[-2:] == ["in-call", "ended"], screens  # the citizen's screen never left the call
    end_lines = [json.loads(line) for line in screen_log.read_text().splitlines()
                 if line.startswith("{") and json.loads(line)["screen"] == "ended"]
    assert end_lines[-1].get("reason") == "hung_up_by_staff", end_lines[-1]
