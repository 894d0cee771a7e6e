"""A process's settings for working among several (kiosk.server.cluster), in one process on
loopback: shared ports, NATS away at start, names and settings refused in plain words.
The three-process cluster itself is tested in tests/cluster/."""

from __future__ import annotations

import asyncio
import logging
import ssl
from pathlib import Path

import pytest

from kiosk.server import cli
from kiosk.server.app import Listen, Server
from kiosk.server.cluster import check_name
from tests.cluster.conftest import Nats
from tests.harness import free_port, wait_until

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
        alone.store.close()


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
