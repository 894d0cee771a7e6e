"""Enrollment in a real home: a lost answer, a pulled plug, a long time on the shelf.

Nothing may strand a unit: it retries with the same key, the server answers a repeat
of its own request with the same identity, and a token that expired unused waits for
logistics to approve or reject the unit.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kiosk.provision.enroll import Step, hardware_serial
from tests.harness import AgentProcess, ServerProcess, wait_until
from tests.lossy_proxy import LosingProxy


def _token(prov: Path | None) -> str | None:
    assert prov is not None
    token = yaml.safe_load(prov.read_text())["token"]
    return str(token) if token is not None else None


def _actions(server: ServerProcess) -> list[str]:
    return [e["action"] for e in json.loads(server.cli("audit", "list", "--limit", "500", "--json").stdout)]


def _enrolled_devices(server: ServerProcess) -> list[dict[str, Any]]:
    return [d for d in server.cli_json("device", "list") if d["enrolled_at"] is not None]


@pytest.fixture
def proxy(server: ServerProcess) -> Iterator[LosingProxy]:
    losing = LosingProxy(server.device_port).start()
    yield losing
    losing.stop()


def test_lost_answer_after_the_servers_commit_is_safe(
        server: ServerProcess, proxy: LosingProxy, start_agent: Callable[..., AgentProcess], tmp_path: Path) -> None:
    prov = server.provisioning_file(tmp_path / "prov")
    content = yaml.safe_load(prov.read_text())
    prov.write_text(yaml.safe_dump({**content, "server_url": f"https://127.0.0.1:{proxy.port}"}))

    agent = start_agent(provision=prov)
    device_id = agent.wait_online(30)

    assert proxy.answers_lost == 1, "the proxy should have lost the enrollment answer"
    assert [d["id"] for d in _enrolled_devices(server)] == [device_id], "exactly one device for the unit"
    actions = _actions(server)
    assert actions.count("device-enrolled") == 1
    assert actions.count("device-enrollment-retried") == 1, "the retry is audited as a retry"
    assert "enrollment-refused" not in actions
    assert "retrying" in agent.log() and "token-used" not in agent.log()
    assert _token(agent.provision) is None


@pytest.mark.slow
@pytest.mark.parametrize("step", list(Step))
def test_enrollment_finishes_after_a_power_cut(step: Step, server: ServerProcess,
                                               start_agent: Callable[..., AgentProcess]) -> None:
    agent = start_agent(env={"KIOSK_FAILPOINTS": f"enroll:{step}"})
    assert agent.proc is not None
    assert agent.proc.wait(30) == -signal.SIGKILL, "the failpoint should have cut the power"
    assert (agent.state / "identity" / "device.key").exists(), "the key is stored before the first request"

    agent.env = {}
    agent.start()
    device_id = agent.wait_online(30)
    assert [d["id"] for d in _enrolled_devices(server)] == [device_id], "exactly one device for the unit"
    assert _token(agent.provision) is None, "the token is destroyed in the file"
    assert [e["event"] for e in agent.audit()].count("enrolled") == 1
    assert "enrollment-refused" not in _actions(server)


def _shelved_unit(server: ServerProcess, start_agent: Callable[..., AgentProcess], tmp_path: Path,
                  name: str) -> tuple[AgentProcess, dict[str, Any]]:
    """A unit whose token expired before its first boot: it waits, held by the server."""
    prov = server.expired_provisioning_file(tmp_path / f"{name}-prov")
    agent = start_agent(name, provision=prov)
    wait_until(lambda: agent.status()["state"] == "awaiting-approval", 30, 0.2, what="unit awaiting approval")
    [held] = [d for d in server.cli_json("device", "list") if d["state"] == "awaiting-approval"]
    return agent, held


def test_unit_whose_token_expired_on_the_shelf_enrolls_once_approved(
        server: ServerProcess, start_agent: Callable[..., AgentProcess], tmp_path: Path) -> None:
    agent, held = _shelved_unit(server, start_agent, tmp_path, "shelved")
    assert held["serial_number"] == hardware_serial()
    assert "by cli:" in held["batch"], held
    assert held["connection"] == "not enrolled"
    assert "waiting for the municipality's logistics to approve it" in agent.log()
    assert _token(agent.provision), "a waiting unit keeps its token"
    assert agent.proc is not None and agent.proc.poll() is None, "the unit waits; it does not give up"

    server.cli("device", "approve", held["id"])
    device_id = agent.wait_online(30)
    assert device_id == held["id"], "the unit enrolls under the id logistics approved"
    assert [d["id"] for d in server.cli_json("device", "list")] == [device_id]
    assert _token(agent.provision) is None
    actions = _actions(server)
    assert actions.index("enrollment-held") < actions.index("enrollment-approved") < actions.index("device-enrolled")


def test_unit_whose_token_expired_on_the_shelf_stays_out_once_rejected(
        server: ServerProcess, start_agent: Callable[..., AgentProcess], tmp_path: Path) -> None:
    agent, held = _shelved_unit(server, start_agent, tmp_path, "shelved")
    server.cli("device", "reject", held["id"])
    assert agent.proc is not None
    assert agent.proc.wait(30) == 2, "a rejected unit stops: a person must act"
    assert "enrollment-rejected" in agent.log() and "rejected this unit" in agent.log()
    assert [e["code"] for e in agent.audit() if e["event"] == "enrollment-refused"] == ["enrollment-rejected"]
    assert not (agent.state / "identity" / "device.crt").exists()
    assert _enrolled_devices(server) == []
    assert [d["state"] for d in server.cli_json("device", "list")] == ["rejected"]
    again = server.cli("device", "approve", "no-such-unit", check=False)
    assert again.returncode == 1 and "no unit awaiting approval" in again.stderr
