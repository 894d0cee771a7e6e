"""Faults of a cluster: NATS and PostgreSQL restarted under traffic, and ``kill -9`` of the
process holding fifty units with a call in flight.

The fifty units are real agents (tests/cluster/fleet.py: one process for all, each with its
own key, replay memory and audit trail), enrolled and connected through HAProxy while only
process B took new connections.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kiosk.caregiver import CaregiverClient, TestMedia
from kiosk.caregiver.call import CallResult
from kiosk.protocol.call import EndReason
from kiosk.server.store import Store
from tests.cluster.conftest import Cluster, start_process
from tests.harness import ADMIN_PASSWORD, BIN, AgentProcess, Console, terminate, wait_until
from tests.postgres_fixture import Postgres

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

UNITS = 50
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Fleet:
    root: Path
    proc: subprocess.Popen[str]

    def status(self) -> dict[str, dict[str, Any]]:
        try:
            return dict(json.loads((self.root / "fleet.json").read_text()))
        except (OSError, ValueError):
            return {}

    def device_ids(self) -> list[str]:
        return sorted(unit["device_id"] for unit in self.status().values())

    def all_connected(self) -> bool:
        status = self.status()
        return len(status) == UNITS and all(unit["connected"] for unit in status.values())

    def audits(self) -> dict[str, list[dict[str, Any]]]:
        return {unit["device_id"]: [json.loads(line) for line in (Path(path) / "audit.jsonl").read_text().splitlines()]
                for path, unit in self.status().items()}


@pytest.fixture(scope="module")
def fleet(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp("fleet")
    cluster.any.cli("enroll-token", "create", "--count", str(UNITS), "--expires", "1h",
                    "--server-url", cluster.url, "--out", str(root / "provisioning"))
    files = sorted(str(p) for p in (root / "provisioning").glob("*.yaml"))
    with cluster.haproxy.only("b"):
        proc = subprocess.Popen([sys.executable, "-m", "tests.cluster.fleet", str(root), *files],
                                cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, text=True)
        fleet = Fleet(root, proc)
        try:
            wait_until(fleet.all_connected, 180, 0.5, what=f"{UNITS} units enrolled and connected")
        except BaseException:
            terminate(proc)
            raise
    yield fleet
    terminate(proc)


def _states(store: Store, command_ids: list[str]) -> dict[str, str]:
    return {c: str(row.state) if (row := store.command(c)) else "missing" for c in command_ids}


def _send_to_all(console: Console, device_ids: list[str], kind: str = "ping") -> list[str]:
    status, body = console.request("POST", "/api/commands", {"device_ids": device_ids, "kind": kind})
    assert status == 202 and not body["refused"], body
    return [q["id"] for q in body["queued"]]


def test_nats_and_postgresql_restarted_during_traffic_lose_no_command(
        cluster: Cluster, fleet: Fleet, admin: Console, postgres: Postgres) -> None:
    devices = fleet.device_ids()[:5]
    accepted: list[str] = []
    refused: list[int] = []
    stop = threading.Event()

    def traffic() -> None:  # through C, while the units are held by B
        sender = Console(cluster.processes["c"].console)
        assert sender.login() == 200
        i = 0
        while not stop.is_set():
            status, body = sender.request("POST", f"/api/devices/{devices[i % len(devices)]}/commands",
                                          {"kind": "ping"})
            (accepted.append(body["id"]) if status == 202 else refused.append(status))
            i += 1
            time.sleep(0.05)

    sending = threading.Thread(target=traffic)
    sending.start()
    try:
        wait_until(lambda: len(accepted) >= 5, 30, what="commands before the faults")
        cluster.nats.stop()
        wait_until(lambda: all("lost NATS" in p.log() for p in cluster.processes.values()), 30,
                   what="every process to say it lost NATS")
        during_nats_outage = len(accepted)
        wait_until(lambda: len(accepted) >= during_nats_outage + 10, 30, what="commands while NATS is away")
        cluster.nats.start()
        wait_until(lambda: all("NATS answers again" in p.log() for p in cluster.processes.values()), 60,
                   what="every process back on NATS")
        postgres.stop("immediate")
        wait_until(lambda: len(refused) >= 3, 30, what="commands refused while the database is away")
        postgres.start()
        after = len(accepted)
        wait_until(lambda: len(accepted) >= after + 5, 60, what="commands accepted after the database is back")
    finally:
        stop.set()
        sending.join()
    assert set(refused) == {503}, refused  # refused in plain terms, never accepted and lost
    store = cluster.any.store()
    try:
        wait_until(lambda: set(_states(store, accepted).values()) == {"done"}, 90, 0.5,
                   what="every accepted command done")
    finally:
        store.close()
    assert all(p.proc is not None and p.proc.poll() is None for p in cluster.processes.values()), "a process exited"
    assert fleet.all_connected(), "a unit lost its connection"
    for device_id, trail in fleet.audits().items():
        accepted_here = [e["command_id"] for e in trail if e["event"] == "command-accepted"]
        assert len(accepted_here) == len(set(accepted_here)), f"{device_id} carried out a command twice"


def test_kill_9_of_the_process_holding_fifty_units(cluster: Cluster, fleet: Fleet, admin: Console,
                                                   tmp_path: Path) -> None:
    b = cluster.processes["b"]
    devices = fleet.device_ids()
    assert all(held == {"b"} for held in cluster.holders_of(devices).values())
    through_c = Console(cluster.processes["c"].console)
    assert through_c.login() == 200

    # A unit with its screen, and Anne's call to it, both on B.
    with cluster.haproxy.only("b"):
        screen_unit = AgentProcess(tmp_path / "screen-unit", b.provisioning_file(tmp_path / "prov")).start()
        screen_unit_id = screen_unit.wait_online(60)
    citizen_id = cluster.any.add_citizen("Karen Jensen", screen_unit_id, "anne")
    screen_log = tmp_path / "screen.log"
    with screen_log.open("w") as out:
        screen = subprocess.Popen([str(BIN / "kiosk-ui"), "--state", str(screen_unit.state), "--headless",
                                   "--demo-media", "--auto-answer-after", "0"],
                                  stdout=out, stderr=subprocess.STDOUT, text=True)
    killed_at: list[float] = []
    try:
        wait_until(lambda: '"screen": "idle"' in screen_log.read_text(), 60, 0.2, what="the screen to show idle")

        async def call_through_the_kill() -> tuple[CallResult, list[str], list[str]]:
            with cluster.haproxy.only("b", "console"):
                anne = CaregiverClient(cluster.console, media=TestMedia(320, 240, 15))
                await anne.__aenter__()
                await anne.login("anne", ADMIN_PASSWORD)
                placed = await anne.place_call(citizen_id)
            try:
                await placed.wait_media(video=5, audio=10, timeout=60)
                before = await asyncio.to_thread(_send_to_all, through_c, devices)  # some in flight at the kill
                b.proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
                killed_at.append(time.monotonic())
                after = await asyncio.to_thread(_send_to_all, through_c, devices)  # pending: their units are away
                return await placed.wait_ended(timeout=120), before, after
            finally:
                await anne.__aexit__(None, None, None)

        result, before, after = asyncio.run(call_through_the_kill())
        assert result.end_reason is EndReason.CONNECTION_LOST, result

        wait_until(lambda: fleet.all_connected() and all(len(h) == 1 for h in cluster.holders_of(devices).values()),
                   120, 0.5, what=f"all {UNITS} units back through the other processes")
        back_after = time.monotonic() - killed_at[0]
        store = cluster.any.store()
        try:
            wait_until(lambda: set(_states(store, before + after).values()) == {"done"}, 120, 0.5,
                       what="every command done")
            record = wait_until(lambda: store.call_record(result.call_id), 60, 0.5,  # type: ignore[arg-type]
                                what="the call's record")
        finally:
            store.close()
        assert record.end_reason == "connection_lost", record
        wait_until(lambda: '"screen": "ended"' in screen_log.read_text().split('"screen": "in-call"')[-1], 60,
                   0.2, what="the unit's screen to end the call")
        audits = fleet.audits()
        for device_id, *sent in zip(devices, before, after, strict=True):  # the unit's replay memory at work
            accepted = [e["command_id"] for e in audits[device_id] if e["event"] == "command-accepted"]
            assert [accepted.count(command_id) for command_id in sent] == [1, 1], (device_id, sent, accepted)
        print(f"\n{UNITS} units back through the other processes {back_after:.1f} s after kill -9")
    finally:
        screen.terminate()
        screen.wait(20)
        screen_unit.stop()
        cluster.processes["b"] = start_process("b", b.data, b.database or "", cluster.nats,
                                               (b.device_port, b.console_port))
