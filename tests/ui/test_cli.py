"""``kiosk-ui --headless`` as a process, the way ``make demo`` and the end-to-end tests run it.

The agent is faked in the test (a real Unix socket, the real messages); the
staff browser is a real aiortc peer in the test process. The call goes through
a real coturn on loopback with the relay-only policy, as the server configures
it, so the device's peer must use exactly the ICE servers the ring carried.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from kiosk.media.peer import rtc_configuration
from kiosk.protocol import messages as m
from kiosk.protocol.agent_socket import socket_path
from kiosk.server.turn import ice_servers, issue_credentials
from kiosk.ui import cli

from .fake_agent import CITIZEN, FakeAgent
from .staff import StaffBrowser

if TYPE_CHECKING:
    from tests.turn_fixture import TurnServer

pytest_plugins = ["tests.turn_fixture"]
pytestmark = pytest.mark.timeout(60)

KIOSK_UI = Path(sys.executable).parent / "kiosk-ui"


@dataclass
class UiProcess:
    proc: asyncio.subprocess.Process
    stderr_path: Path
    screens: list[dict[str, Any]] = field(default_factory=list)
    stdout: list[str] = field(default_factory=list)
    reader: asyncio.Task[None] | None = None

    async def read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            text = line.decode()
            self.stdout.append(text)
            self.screens.append(json.loads(text))  # every stdout line is one JSON screen

    def names(self) -> list[str]:
        return [s["screen"] for s in self.screens]

    async def wait_screen(self, name: str, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while not (self.screens and self.screens[-1]["screen"] == name):
            assert time.monotonic() < deadline, f"no {name} screen in {timeout} s: {self.names()}"
            await asyncio.sleep(0.02)
        return self.screens[-1]

    async def stop(self, timeout: float = 10.0) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self.reader is not None:
            await asyncio.wait_for(self.reader, 5)
        assert self.proc.returncode is not None
        return self.proc.returncode

    def output(self) -> str:
        return "".join(self.stdout) + self.stderr_path.read_text(errors="replace")


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[FakeAgent]:
    fake = await FakeAgent(socket_path(tmp_path)).start()
    yield fake
    await fake.stop()


@pytest.fixture
async def start_ui(tmp_path: Path) -> AsyncIterator[Any]:
    started: list[UiProcess] = []

    async def start(*options: str) -> UiProcess:
        stderr_path = tmp_path / f"kiosk-ui-{len(started)}.log"
        with stderr_path.open("wb") as stderr:
            proc = await asyncio.create_subprocess_exec(
                str(KIOSK_UI), "--state", str(tmp_path), "--headless", *options,
                stdout=asyncio.subprocess.PIPE, stderr=stderr)
        ui = UiProcess(proc, stderr_path)
        ui.reader = asyncio.create_task(ui.read())
        started.append(ui)
        return ui

    yield start
    for ui in started:
        await ui.stop()


def relay_servers(turn: TurnServer, user: str) -> list[m.IceServer]:
    """What the server puts in CallRing/CallPlaced for one leg of a call."""
    creds = issue_credentials(turn.secret, user, now=time.time(), ttl=600)
    return ice_servers(turn.host, turn.port, creds)


@pytest.mark.slow
async def test_headless_ui_answers_through_turn_and_hangs_up_by_itself(
        agent: FakeAgent, start_ui: Any, turn_server: TurnServer) -> None:
    ui = await start_ui("--auto-answer-after", "0", "--hang-up-after", "1.5", "--demo-media")
    await agent.wait_for(m.UiHello, timeout=15)  # the process imports aiortc and PyAV first
    await ui.wait_screen("idle")

    device_servers = relay_servers(turn_server, "device")
    await agent.send(m.CallRing(call_id="call-1", caller_name="Anne", caller_role="caregiver",
                                ice_servers=device_servers, relay_only=True, ring_timeout=30))
    assert await agent.wait_for(m.CallRinging) == m.CallRinging(call_id="call-1", screen_awake=True)
    answered = await agent.wait_for(m.CallAnswer, timeout=15)
    offer = answered.sdp or agent.of_type(m.CallOffer)[-1].sdp  # answered at once: the offer rides in the answer
    candidates = [line for line in offer.splitlines() if line.startswith("a=candidate:")]
    assert candidates and all(" typ relay" in line for line in candidates), candidates  # relay only, as told

    staff_servers = relay_servers(turn_server, "staff")
    staff = StaffBrowser(rtc_configuration(staff_servers, relay_only=True))
    try:
        accept = await staff.answer_the_answer(answered, agent.of_type(m.CallOffer))
        assert accept is not None
        await agent.send(accept)
        assert await agent.wait_for(m.CallConnected, timeout=15) == m.CallConnected(call_id="call-1")
        await staff.wait_connected()
        await staff.received.wait_for("video", 15)  # the device's test pattern, through coturn
        await staff.received.wait_for("audio", 25)

        # The device hangs up by itself 1.5 s after connecting, then reports its quality.
        report = await agent.wait_for(m.CallQualityReport, timeout=10)
    finally:
        await staff.close()
    calls = agent.calls()
    assert calls.index(m.CallHangUp(call_id="call-1", reason="hung-up")) < calls.index(report)
    assert report.call_id == "call-1"
    decoded, received = report.quality["frames_decoded"], report.quality["packets_received"]
    assert isinstance(decoded, int) and decoded > 0 and isinstance(received, int) and received > 0
    await ui.wait_screen("ended")
    assert ui.names() == ["starting", "idle", "ringing", "connecting", "in-call", "ended"]
    assert ui.screens[2] == {"screen": "ringing", "call_id": "call-1", "caller": "Anne", "role": "caregiver"}
    assert ui.screens[-1]["reason"] == "hung_up_by_citizen"

    assert await ui.stop() == 0
    output = ui.output()
    for secret in (CITIZEN, "Sygeplejerske", "v=0", "a=candidate", "ice-pwd", "fingerprint",
                   *(s.credential for s in device_servers + staff_servers if s.credential)):
        assert secret not in output, f"{secret!r} leaked into kiosk-ui's output"


async def test_without_auto_answer_a_call_rings_out(agent: FakeAgent, start_ui: Any) -> None:
    ui = await start_ui()
    await agent.wait_for(m.UiHello, timeout=15)
    await agent.send(m.CallRing(call_id="call-2", caller_name="Anne", caller_role="caregiver",
                                ice_servers=[], ring_timeout=1.0))
    await agent.wait_for(m.CallRinging)
    ended = await ui.wait_screen("ended", timeout=5)
    assert ended["reason"] == "not_answered"
    assert await ui.stop() == 0
    # Ringing, and the offer made while it rang (gathered fast here; slow, it may not have gone out).
    assert [type(msg) for msg in agent.calls()] in ([m.CallRinging, m.CallOffer], [m.CallRinging])
    assert CITIZEN not in ui.output()


async def test_an_agent_that_goes_away_shows_offline_and_is_found_again(
        agent: FakeAgent, start_ui: Any) -> None:
    ui = await start_ui()
    await agent.wait_for(m.UiHello, timeout=15)
    await ui.wait_screen("idle")
    await agent.stop()
    assert (await ui.wait_screen("offline"))["offline"] == "agent"
    await agent.start()
    await ui.wait_screen("idle")
    assert agent.connections == 2
    assert await ui.stop() == 0


def test_a_bad_screen_size_or_language_is_refused_with_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    for bad in (["--size", "big"], ["--size", "10x10"], ["--language", "sv"]):
        with pytest.raises(SystemExit) as exc:
            cli.main(["--state", "/x", *bad])
        assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "WIDTHxHEIGHT" in err and "out of range" in err and "invalid choice: 'sv'" in err
    assert cli._parser().parse_args(["--state", "/x", "--size", "1280x800"]).size == (1280, 800)


def test_bad_seconds_are_refused_with_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["--state", "/x", "--headless", "--auto-answer-after", "soon"])
    assert exc.value.code == 2
    assert "not a number of seconds" in capsys.readouterr().err


def test_auto_answer_alone_means_at_once_and_absent_means_never() -> None:
    parse = cli._parser().parse_args
    assert parse(["--state", "/x", "--headless", "--auto-answer-after"]).auto_answer_after == 0.0
    assert parse(["--state", "/x", "--headless", "--auto-answer-after", "2.5"]).auto_answer_after == 2.5
    assert parse(["--state", "/x", "--headless"]).auto_answer_after is None
