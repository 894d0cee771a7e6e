"""A unit with a wrong clock (libfaketime): it waits with a plain clock message, never a pin mismatch.

A Raspberry Pi has no real-time clock; at first boot its time is whatever the image
carried until time sync succeeds. The agent runs under libfaketime (Debian package
``faketime``) with its offset in a file the test rewrites, as time sync would step it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.harness import AgentProcess, ServerProcess, wait_until

LIBFAKETIME = sorted(Path("/usr/lib").glob("*/faketime/libfaketime.so.1"))
IMPOSTOR_WORDS = ("pin-mismatch", "pinned root", "not this municipality's server")


class UnitClock:
    """The unit's clock offset, as libfaketime reads it on every call (``FAKETIME_NO_CACHE``)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def set(self, offset: str) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(offset + "\n")
        os.replace(tmp, self.path)  # libfaketime never reads half a line

    def env(self) -> dict[str, str]:
        return {"LD_PRELOAD": str(LIBFAKETIME[0]), "FAKETIME_TIMESTAMP_FILE": str(self.path),
                "FAKETIME_NO_CACHE": "1"}


@pytest.fixture
def unit_clock(tmp_path: Path) -> UnitClock:
    if not LIBFAKETIME:
        pytest.fail("libfaketime is missing: scripts/setup.sh installs the Debian package faketime")
    return UnitClock(tmp_path / "unit-clock")


def _no_impostor_words(log: str) -> None:
    for words in IMPOSTOR_WORDS:
        assert words not in log, f"a clock error was reported as {words!r}"


@pytest.mark.slow
def test_unit_with_its_clock_days_behind_waits_then_enrolls_once_the_clock_is_right(
        server: ServerProcess, start_agent: Callable[..., AgentProcess], unit_clock: UnitClock) -> None:
    unit_clock.set("-3d")
    agent = start_agent(env=unit_clock.env())
    wait_until(lambda: "clock problem" in agent.log(), 30, 0.2, what="a clock message")
    log = agent.log()
    assert "this unit's clock is 3 days behind the server's" in log, log
    assert "certificate seems not yet valid" in log and "retries" in log
    _no_impostor_words(log)
    assert agent.proc is not None and agent.proc.poll() is None, "a clock problem is retried, not final"
    assert server.cli_json("device", "list") == []
    assert agent.provision is not None and yaml.safe_load(agent.provision.read_text())["token"]

    unit_clock.set("+0")  # time sync succeeded
    device_id = agent.wait_online(30)
    assert server.wait_command(server.send(device_id, "ping"))["state"] == "done"

    # Rebooted without a real-time clock: days behind again, now on the enrolled link.
    agent.stop()
    seen = len(agent.log())
    unit_clock.set("-3d")
    agent.start()
    wait_until(lambda: "clock problem" in agent.log()[seen:], 30, 0.2, what="a clock message from the link")
    assert "3 days behind the server's" in agent.log()[seen:]
    _no_impostor_words(agent.log())
    unit_clock.set("+0")
    agent.wait_online(30)


@pytest.mark.slow
def test_unit_with_its_clock_hours_ahead_enrolls_and_obeys_commands(
        server: ServerProcess, start_agent: Callable[..., AgentProcess], unit_clock: UnitClock) -> None:
    unit_clock.set("+3h")
    agent = start_agent(env=unit_clock.env())
    device_id = agent.wait_online(30)
    wait_until(lambda: "clock problem: this unit's clock is 3 h ahead of the server's" in agent.log(), 10,
               what="the link to name the clock difference")
    # By the unit's own clock this command expired two hours ago; by the server's it is fresh.
    view = server.wait_command(server.send(device_id, "ping", expires="1h"))
    assert view["state"] == "done", view
    _no_impostor_words(agent.log())
    refusals = [e for e in agent.audit() if e["event"] == "command-refused"]
    assert refusals == []
