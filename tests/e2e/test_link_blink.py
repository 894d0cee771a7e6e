"""The unit's link to the server blinks while a call rings: real server, agent, headless
screen and the Python caregiver, the agent's connection through
:class:`tests.impairment.TcpImpairmentRelay`.

What is emulated: the unit's mobile bearer dropping for 5 s: the relay cuts the
agent's TCP connection (a reset, as the agent sees a dropped bearer) and refuses
new ones until the 5 s are over; the agent then reconnects by itself. The
caregiver's connection is direct. Media go host to host on 127.0.0.1 (no relay):
what is tested is the signalling, which is all that passes through the server.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kiosk.caregiver import CaregiverClient, TestMedia
from kiosk.protocol.call import EndReason
from tests.harness import ADMIN_PASSWORD, BIN, AgentProcess, ServerProcess, terminate, wait_until
from tests.impairment import RelayThread, TcpImpairmentRelay

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

BLINK = 5.0
ANSWER_AFTER = 2.0  # the citizen presses answer while the link is down


@pytest.fixture
def blinking_unit(server: ServerProcess, tmp_path: Path,
                  start_agent: Callable[..., AgentProcess]
                  ) -> Iterator[tuple[RelayThread, TcpImpairmentRelay, AgentProcess, str]]:
    """A unit whose server link runs through a relay that can cut it, with its screen running."""
    tcp = TcpImpairmentRelay(("127.0.0.1", server.device_port))
    with RelayThread(tcp) as relay:
        url = f"https://127.0.0.1:{relay.address[1]}"
        lines = server.cli("enroll-token", "create", "--count", "1", "--expires", "1d",
                           "--server-url", url, "--out", str(tmp_path / "prov")).stdout.split()
        agent = start_agent("unit", provision=Path(lines[0]))
        device_id = agent.wait_online()
        server.add_admin("anne", "caregiver", "Anne, sygeplejerske")
        citizen_id = server.add_citizen("Karen Jensen", device_id, "anne")
        log = agent.state.parent / "screen.log"
        with log.open("w") as out:
            screen = subprocess.Popen(
                [str(BIN / "kiosk-ui"), "--state", str(agent.state), "--headless", "--demo-media",
                 "--auto-answer-after", str(ANSWER_AFTER)], stdout=out, stderr=subprocess.STDOUT, text=True)
        try:
            wait_until(lambda: '"screen": "idle"' in log.read_text(), 30, 0.1, what="the screen app to show idle")
            yield relay, tcp, agent, citizen_id
        finally:
            terminate(screen)


def test_a_blink_while_it_rings_is_not_offline_and_the_citizen_can_still_answer(
        server: ServerProcess, blinking_unit: tuple[RelayThread, TcpImpairmentRelay, AgentProcess, str]) -> None:
    relay, tcp, agent, citizen_id = blinking_unit

    async def scenario() -> tuple[EndReason | None, int, int, list[bool]]:
        async with CaregiverClient(server.console, media=TestMedia(176, 144, 15)) as anne:
            await anne.login("anne", ADMIN_PASSWORD)
            call = await anne.place_call(citizen_id)
            await call.wait_ringing()
            relay.outage(BLINK)  # the bearer drops; the citizen answers in the middle of it
            online_during: list[bool] = []
            for _ in range(int(BLINK)):
                await asyncio.sleep(1.0)
                online_during += [c["online"] for c in await anne.citizens() if c["id"] == citizen_id]
            assert not call.ended, f"the blink ended the call: {call.end_reason}"
            await call.wait_answered(30)
            await call.wait_media(video=5, audio=20, timeout=30)
            result = await call.hang_up()
            return result.end_reason, result.video_frames, result.audio_frames, online_during

    reason, video, audio, online_during = asyncio.run(scenario())
    assert reason is EndReason.HUNG_UP_BY_STAFF and video >= 5 and audio >= 20
    assert online_during and all(online_during), "the unit was never shown offline during the blink"
    assert tcp.connections >= 2, "the link really dropped and the agent came back through it"
    wait_until(lambda: agent.status()["server_online"], 20, 0.2, what="the agent back online")
    record = wait_until(lambda: next((r for r in server.cli_json("call", "list")
                                      if r["end_reason"] == "hung_up_by_staff"), None), 20, 0.5,
                        what="the call record")
    assert record["rang_at"] is not None and record["answered_at"] is not None and record["connected_at"]
