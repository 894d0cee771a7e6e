"""systemd's notify protocol, against a real datagram socket standing where systemd's would."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import pytest

from kiosk.provision import sd_notify


@pytest.fixture
def systemd_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> socket.socket:
    path = tmp_path / "notify"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(path))
    s.settimeout(5)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    return s


def test_ready_reaches_systemd(systemd_socket: socket.socket) -> None:
    assert sd_notify.notify("READY=1")
    assert systemd_socket.recv(64) == b"READY=1"


def test_outside_systemd_nothing_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not sd_notify.notify("READY=1")


def test_watchdog_interval_is_half_and_only_for_this_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert sd_notify.watchdog_interval() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", "1")
    assert sd_notify.watchdog_interval() is None
    monkeypatch.delenv("WATCHDOG_USEC")
    assert sd_notify.watchdog_interval() is None


async def test_the_event_loop_feeds_the_watchdog(systemd_socket: socket.socket,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "20000")  # a ping every 10 ms
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    task = asyncio.create_task(sd_notify.keep_watchdog_fed())
    pings = [await asyncio.to_thread(systemd_socket.recv, 64) for _ in range(3)]
    task.cancel()
    assert pings == [b"WATCHDOG=1"] * 3
