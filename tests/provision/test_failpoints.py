"""The agent's fail points: kill there, or hold there (alive, watchdog fed) until the power is cut."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from kiosk.provision import failpoints

HIT = "from kiosk.provision import failpoints; failpoints.hit('wipe:key-destroyed'); print('went on')"


def test_names_default_to_kill_and_hold_is_named() -> None:
    assert failpoints.parse("") == {}
    assert failpoints.parse("enroll:request-sent,wipe:key-destroyed=hold") == {
        "enroll:request-sent": "kill", "wipe:key-destroyed": "hold"}


def test_an_unknown_action_is_refused_not_taken_for_a_kill() -> None:
    with pytest.raises(ValueError, match="must be 'kill' or 'hold'"):
        failpoints.parse("wipe:key-destroyed=sleep")


def _env(spec: str, **more: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "KIOSK_FAILPOINTS": spec, **more}


def test_kill_ends_the_process_there() -> None:
    proc = subprocess.run([sys.executable, "-c", HIT], env=_env("wipe:key-destroyed"),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL
    assert "went on" not in proc.stdout
    assert "kiosk failpoint wipe:key-destroyed: kill" in proc.stderr


def test_an_unnamed_point_costs_nothing() -> None:
    proc = subprocess.run([sys.executable, "-c", HIT], env=_env("wipe:intent"),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "went on" in proc.stdout


def test_hold_stays_there_alive_and_keeps_the_watchdog_fed(tmp_path: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(tmp_path / "notify"))
        notify.settimeout(120)
        proc = subprocess.Popen([sys.executable, "-c", HIT], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=_env("wipe:key-destroyed=hold", NOTIFY_SOCKET=str(tmp_path / "notify")))
        try:
            assert notify.recv(64) == b"WATCHDOG=1"
            assert notify.recv(64) == b"WATCHDOG=1"  # again: it holds, it did not just pass by
            assert proc.poll() is None
        finally:
            proc.kill()
        out, err = proc.communicate(timeout=60)
    assert b"went on" not in out
    assert b"kiosk failpoint wipe:key-destroyed: hold" in err
