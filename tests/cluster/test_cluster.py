"""Three server processes on PostgreSQL + NATS behind HAProxy (tests/cluster/conftest.py).

What crosses processes: a caregiver on process A calls a unit on process B, media both ways;
commands sent through process C reach units held by B. Faults: NATS and PostgreSQL restarted
under traffic; ``kill -9`` of the process holding fifty units with a call in flight on it.

The tests share one cluster and run in this order; the last one kills process B.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import threading
import time

import pytest

from kiosk.caregiver import CaregiverClient, TestMedia
from kiosk.caregiver.call import CallResult
from kiosk.protocol.call import EndReason
from kiosk.server.store import Store
from tests.cluster.conftest import UNITS, Cluster, Fleet, ScreenUnit
from tests.harness import ADMIN_PASSWORD, Console, wait_until
from tests.postgres_fixture import Postgres

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def _states(store: Store, command_ids: list[str]) -> dict[str, str]:
    return {c: str(row.state) if (row := store.command(c)) else "missing" for c in command_ids}


def _wait_done(cluster: Cluster, command_ids: list[str]) -> None:
    store = cluster.any.store()
    try:
        wait_until(lambda: set(_states(store, command_ids).values()) == {"done"}, 120, 0.5,
                   what=f"all {len(command_ids)} commands done")
    finally:
        store.close()


def _send_to_all(console: Console, device_ids: list[str], kind: str = "ping") -> list[str]:
    status, body = console.request("POST", "/api/commands", {"device_ids": device_ids, "kind": kind})
    assert status == 202 and not body["refused"], body
    return [q["id"] for q in body["queued"]]


def _commands_carried_out_once(fleet: Fleet) -> None:
    """Each unit's audit trail: no command accepted twice (its replay memory refuses a second delivery)."""
    for device_id, trail in fleet.audits().items():
        accepted = [e["command_id"] for e in trail if e["event"] == "command-accepted"]
        assert len(accepted) == len(set(accepted)), f"{device_id} carried out a command twice"


def test_a_caregiver_on_a_calls_a_unit_on_b(cluster: Cluster, screen_unit: ScreenUnit) -> None:
    assert cluster.holders(screen_unit.device_id) == {"b"}

    async def call() -> CallResult:
        async with CaregiverClient(cluster.processes["a"].console, media=TestMedia(320, 240, 15)) as anne:
            await anne.login("anne", ADMIN_PASSWORD)
            placed = await anne.place_call(screen_unit.citizen_id)
            await placed.wait_ringing()
            await placed.wait_answered()
            await placed.wait_media(video=11, audio=25, timeout=30)
            return await placed.hang_up()

    result = asyncio.run(call())
    assert result.end_reason is EndReason.HUNG_UP_BY_STAFF, result
    assert result.video_frames > 10 and result.audio_frames > 20  # the unit's media reached Anne on A

    store = cluster.any.store()
    try:
        row = wait_until(lambda: (r := store.call_record(str(result.call_id))) and r.quality_device and r, 30, 0.3,
                         what="the call record with the unit's quality report (sent to B)")
    finally:
        store.close()
    assert row.end_reason == "hung_up_by_staff", row
    assert json.loads(row.quality_device)["frames_decoded"] > 0, row  # Anne's media reached the unit on B


def test_nats_and_postgresql_restarted_during_traffic_lose_no_command(
        cluster: Cluster, fleet: Fleet, admin: Console, postgres: Postgres) -> None:
    devices = fleet.device_ids()[:5]
    through_c = Console(cluster.processes["c"].console)
    assert through_c.login() == 200
    status, unit = through_c.request("GET", f"/api/devices/{devices[0]}")
    assert status == 200 and unit["online"], unit  # C sees a unit that B holds
    accepted: list[str] = []
    refused: list[int] = []
    stop = threading.Event()

    def traffic() -> None:  # through C, to units held by B
        i = 0
        while not stop.is_set():
            status, body = through_c.request("POST", f"/api/devices/{devices[i % len(devices)]}/commands",
                                             {"kind": "ping"})
            accepted.append(body["id"]) if status == 202 else refused.append(status)
            i += 1
            time.sleep(0.05)

    sending = threading.Thread(target=traffic)
    sending.start()
    try:
        wait_until(lambda: len(accepted) >= 5, 30, what="commands before the faults")
        _wait_done(cluster, accepted[:5])  # from C to units on B
        cluster.nats.stop()
        wait_until(lambda: all("lost NATS" in p.log() for p in cluster.processes.values()), 30,
                   what="every process to say it lost NATS")
        during_outage = len(accepted)
        wait_until(lambda: len(accepted) >= during_outage + 10, 30, what="commands while NATS is away")
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
    assert set(refused) == {503}, refused  # refused in plain terms, never accepted and then lost
    _wait_done(cluster, accepted)
    assert all(p.proc is not None and p.proc.poll() is None for p in cluster.processes.values()), "a process exited"
    assert fleet.all_connected(), "a unit lost its connection"
    _commands_carried_out_once(fleet)


def test_kill_9_of_the_process_holding_fifty_units_and_a_call(
        cluster: Cluster, fleet: Fleet, screen_unit: ScreenUnit, admin: Console) -> None:
    b = cluster.processes["b"]
    devices = fleet.device_ids()
    assert all(held == {"b"} for held in cluster.holders_of(devices).values())
    through_c = Console(cluster.processes["c"].console)
    assert through_c.login() == 200
    killed_at: list[float] = []

    async def call_through_the_kill() -> tuple[CallResult, list[str], list[str]]:
        async with contextlib.AsyncExitStack() as stack:
            with cluster.haproxy.only("b", "console"):  # the call runs on B; Anne's page resumes elsewhere
                anne = await stack.enter_async_context(CaregiverClient(cluster.console, media=TestMedia(320, 240, 15)))
                await anne.login("anne", ADMIN_PASSWORD)
                placed = await anne.place_call(screen_unit.citizen_id)
            await placed.wait_media(video=5, audio=10, timeout=60)
            before = await asyncio.to_thread(_send_to_all, through_c, devices)  # some in flight at the kill
            assert b.proc is not None
            b.proc.send_signal(signal.SIGKILL)
            killed_at.append(time.monotonic())
            after = await asyncio.to_thread(_send_to_all, through_c, devices)  # pending: their units are away
            return await placed.wait_ended(timeout=120), before, after

    result, before, after = asyncio.run(call_through_the_kill())
    assert result.end_reason is EndReason.CONNECTION_LOST, result  # Anne is told at once, on another process

    wait_until(lambda: fleet.all_connected() and all(len(h) == 1 for h in cluster.holders_of(devices).values()),
               120, 0.5, what=f"all {UNITS} units back through the other processes")
    back_after = time.monotonic() - killed_at[0]
    _wait_done(cluster, before + after)
    audits = fleet.audits()
    for device_id, *sent in zip(devices, before, after, strict=True):  # exactly once: the replay memory says so
        accepted = [e["command_id"] for e in audits[device_id] if e["event"] == "command-accepted"]
        assert [accepted.count(command_id) for command_id in sent] == [1, 1], (device_id, sent, accepted)
    _commands_carried_out_once(fleet)

    store = cluster.any.store()
    try:
        record = wait_until(lambda: store.call_record(str(result.call_id)), 60, 0.5, what="the call's record")
    finally:
        store.close()
    assert record.end_reason == "connection_lost", record  # written by a process still alive
    wait_until(lambda: '"screen": "ended"' in screen_unit.screen_log.read_text().split('"screen": "in-call"')[-1],
               60, 0.2, what="the unit's screen to end the call")
    print(f"\n{UNITS} units back through the other processes {back_after:.1f} s after kill -9")
