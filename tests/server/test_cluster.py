"""A process's settings for working among several (kiosk.server.cluster), in one process on
loopback: shared ports, NATS away at start, names and settings refused in plain words.
The three-process cluster itself is tested in tests/cluster/."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from kiosk.protocol import messages as m
from kiosk.protocol.call import CallConfig, EndReason
from kiosk.server import cli
from kiosk.server import cluster as cluster_module
from kiosk.server.app import Listen, Server
from kiosk.server.calls import Caller, CallManager
from kiosk.server.cluster import Cluster, check_name
from kiosk.server.hub import Hub
from kiosk.server.store import Store
from tests.cluster.conftest import Nats
from tests.harness import free_port, wait_until
from tests.server.fakes import FakeClock, FakeDevice, Inbox, open_store

pytestmark = pytest.mark.timeout(90)


async def _tls_answers(server: Server, port: int) -> bool:
    ctx = ssl.create_default_context(cafile=str(server.authority.ca_cert_path))
    _reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="127.0.0.1")
    writer.close()
    return True


async def test_processes_on_one_machine_share_the_ports_with_reuse_port(tmp_path: Path) -> None:
    device, console = Listen("127.0.0.1", free_port()), Listen("127.0.0.1", free_port())
    first = Server.open(tmp_path / "server", "Testby Kommune", ["127.0.0.1"])
    second = Server.open(tmp_path / "server", "Testby Kommune", ["127.0.0.1"])
    alone = Server.open(tmp_path / "server", "Testby Kommune", ["127.0.0.1"])
    started = [(first, await first.start(device, console, reuse_port=True))]
    try:
        started.append((second, await second.start(device, console, reuse_port=True)))
        assert await _tls_answers(first, device.port)
        with pytest.raises(OSError):  # without the option the port is taken, as before
            await alone.start(device, console)
    finally:
        for server, runners in started:
            await server.stop(runners)
        await alone.store.aclose()


async def test_nats_away_at_start_is_said_and_the_process_serves_until_it_comes(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="kiosk.server.cluster")
    nats = Nats(tmp_path)
    server = Server.open(tmp_path / "server", "Testby Kommune", ["127.0.0.1"])
    cluster = server.join(nats.url, "a")
    device = Listen("127.0.0.1", free_port())
    runners = await server.start(device, Listen("127.0.0.1", free_port()))
    try:
        await asyncio.to_thread(wait_until, lambda: "does not answer" in caplog.text, 20, what="NATS away, said")
        assert await _tls_answers(server, device.port)  # units are served meanwhile
        await asyncio.to_thread(nats.start)
        await asyncio.to_thread(wait_until, lambda: cluster.connected, 30, what="the process on NATS")
        assert "joined the cluster" in caplog.text
    finally:
        await server.stop(runners)
        nats.stop()


def test_a_process_name_must_fit_a_subject() -> None:
    assert check_name("web1-a_2") == "web1-a_2"
    for bad in ("", "a.b", "a b", "a*", "x" * 65):
        with pytest.raises(ValueError, match="letters, digits"):
            check_name(bad)


def test_nats_without_postgresql_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["serve", "--data", str(tmp_path / "server"), "--nats", "nats://127.0.0.1:4222"])
    assert "--nats needs --database postgresql://" in capsys.readouterr().err


# --- two processes' hubs in this process, on a real nats-server ---------------------------


@dataclass
class Process:
    hub: Hub
    calls: CallManager
    cluster: Cluster
    gone: list[str]  # units this process was told are gone for good


@pytest.fixture
async def pair(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[Process, Process, Store]]:
    monkeypatch.setattr(cluster_module, "ALIVE_INTERVAL_SECONDS", 0.1)
    monkeypatch.setattr(cluster_module, "PROCESS_SILENCE_SECONDS", 1.0)
    nats = await asyncio.to_thread(Nats(tmp_path).start)
    store = open_store(tmp_path / "server", FakeClock())
    processes = []
    for name in ("a", "b"):
        hub = Hub(store)
        calls = CallManager(store, hub, CallConfig(), None, take_up=False)
        gone: list[str] = []

        async def note(device_id: str, gone: list[str] = gone) -> None:
            gone.append(device_id)

        hub.on_detach.append(note)
        process = Process(hub, calls, Cluster(nats.url, name, hub, calls, grace=0.3), gone)
        process.cluster.start()
        processes.append(process)
    a, b = processes
    await until(lambda: "b" in a.cluster.heard and "a" in b.cluster.heard, "the two to hear each other")
    yield a, b, store
    for process in processes:
        await process.cluster.stop()
    nats.stop()
    await store.aclose()


async def until(predicate: Callable[[], object], what: str, timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def silence(cluster: Cluster) -> None:
    """As ``kill -9``: nothing more is heard from the process, nothing says its units left."""
    assert cluster._main is not None and cluster.nc is not None
    cluster._main.cancel()
    await cluster.nc.close()


async def test_a_unit_held_by_one_process_is_reached_from_the_other_and_moves_without_being_gone(
        pair: tuple[Process, Process, Store]) -> None:
    a, b, store = pair
    unit = FakeDevice(store, "unit-1")
    await unit.connect(a.hub)
    await until(lambda: b.hub.reach(unit.id) is not None, "B to learn where the unit is")
    seen_from_b = b.hub.reach(unit.id)
    assert seen_from_b is not None and seen_from_b.connected_at == unit.link.connected_at
    await seen_from_b.send(m.CallEnded(call_id="call-1", reason=EndReason.NOT_ANSWERED))
    await until(lambda: unit.inbox.of(m.CallEnded), "B's message to reach the unit through A")

    a.hub.detach(unit.link)  # its link drops; A holds it within the grace
    unit.new_connection()
    await unit.connect(b.hub)  # and it comes back through B
    await until(lambda: unit.id not in a.hub.links, "A to let the unit go")
    assert a.hub.reach(unit.id) is not None  # now through B
    await asyncio.sleep(0.5)
    assert a.gone == [] and b.gone == []  # it moved; it was never gone


async def test_a_silent_process_is_taken_for_dead_and_its_units_are_gone_after_the_grace(
        pair: tuple[Process, Process, Store]) -> None:
    a, b, store = pair
    unit, back = FakeDevice(store, "unit-1"), FakeDevice(store, "unit-2")
    for device in (unit, back):
        await device.connect(a.hub)
    await until(lambda: b.hub.reach(unit.id) and b.hub.reach(back.id), "B to learn where the units are")
    await silence(a.cluster)
    await until(lambda: "a" not in b.cluster.heard, "B to take A for dead")
    back.new_connection()
    await back.connect(b.hub)  # one unit comes back through B within the grace
    await until(lambda: b.gone, "the grace to run out")
    assert b.gone == [unit.id] and b.hub.reach(unit.id) is None


async def test_a_process_stopping_on_purpose_is_buried_at_once_and_its_units_get_the_grace(
        pair: tuple[Process, Process, Store], caplog: pytest.LogCaptureFixture) -> None:
    a, b, store = pair
    unit = FakeDevice(store, "unit-1")
    await unit.connect(a.hub)
    await until(lambda: b.hub.reach(unit.id), "B to learn where the unit is")
    await a.cluster.stop()  # as Server.stop does first
    await a.hub.stop()  # its links close: not told as "offline", the cluster has left
    await until(lambda: "a" not in b.cluster.heard, "B to bury A")
    assert "process a is leaving" in caplog.text and b.gone == []  # the grace first
    await until(lambda: b.gone == [unit.id], "the grace to run out")


async def test_a_call_still_ringing_on_a_process_that_dies_is_ended_by_another_with_its_record(
        pair: tuple[Process, Process, Store]) -> None:
    a, _b, store = pair  # B, alive, ends it
    unit = FakeDevice(store, "unit-1")
    store.add_user("anne", "(not a hash)", "caregiver", "cli:test", "Anne")
    with store.tx() as conn:
        citizen_id = store.add_citizen(conn, "Karen Jensen", unit.id, ["anne"])
    await unit.connect(a.hub)
    call_id = await a.calls.place(Caller("anne", "Anne", "caregiver"), citizen_id, Inbox().send)
    await a.calls.from_device(unit.id, m.CallRinging(call_id=call_id, screen_awake=True))
    assert isinstance(store.clock, FakeClock)
    store.clock.advance(5.0)  # placed longer ago than a process is given to announce its calls
    await silence(a.cluster)  # kill -9 while it rings
    await until(lambda: store.call_record(call_id), "B to end the call A ran", timeout=30)
    record = store.call_record(call_id)
    assert record is not None and record.end_reason == EndReason.SERVER_STOPPED
    assert record.rang_at is not None and record.connected_at is None
    assert store.live_call_rows() == []
