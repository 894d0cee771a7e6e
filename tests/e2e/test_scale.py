"""A hundred real agents enrolling and connecting at the same moment (a delivery day)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness import AgentProcess, ServerProcess, wait_until

UNITS = 100


@pytest.mark.slow
def test_hundred_units_enroll_and_connect_at_once(server: ServerProcess, tmp_path: Path) -> None:
    out = tmp_path / "provisioning"
    server.cli("enroll-token", "create", "--count", str(UNITS), "--expires", "1h",
               "--server-url", server.url, "--out", str(out))
    files = sorted(out.glob("*.yaml"))
    assert len(files) == UNITS
    agents = [AgentProcess(tmp_path / f"unit{i:03d}", f) for i, f in enumerate(files)]
    try:
        for agent in agents:
            agent.start()
        online = wait_until(
            lambda: len(ids := [d["id"] for d in server.cli_json("device", "list") if d["online"]]) == UNITS and ids,
            240, 1.0, what=f"{UNITS} units online")
        assert len(set(online)) == UNITS
        assert all(a.proc is not None and a.proc.poll() is None for a in agents), "an agent died"
        # each unit answers a command addressed to it
        some = online[:: UNITS // 5]
        ids = [server.send(d, "ping") for d in some]
        assert [server.wait_command(c)["state"] for c in ids] == ["done"] * len(some)
    finally:
        for agent in agents:
            if agent.proc and agent.proc.poll() is None:
                agent.proc.terminate()
        for agent in agents:
            agent.stop()
