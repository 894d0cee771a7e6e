"""Tests for kiosk.provision.diagnostics: the judge_* thresholds and run_all's shape.

The judges are pure, so every threshold is checked on both sides. run_all reads the
real machine; only its shape is checked (one result per check, valid statuses).
"""

from __future__ import annotations

import time
import typing
from pathlib import Path

import pytest

from kiosk.protocol import messages as m
from kiosk.protocol.messages import CheckStatus, DiagnosticCheck
from kiosk.provision import diagnostics
from kiosk.provision.diagnostics import LinkFacts

pytestmark = pytest.mark.timeout(60)

STATUSES = set(typing.get_args(CheckStatus))
MB = 2**20
GB = 2**30


@pytest.mark.parametrize(
    ("celsius", "status"),
    [(-10.0, "OK"), (45.0, "OK"), (69.9, "OK"), (70.0, "WARN"), (75.0, "WARN"), (79.99, "WARN"), (80.0, "FAIL"),
     (105.0, "FAIL")],
)
def test_judge_temperature(celsius: float, status: CheckStatus) -> None:
    got, detail = diagnostics.judge_temperature(celsius)
    assert got == status
    assert "°C" in detail
    if status == "FAIL":
        assert "ventilation" in detail


@pytest.mark.parametrize(
    ("available", "total", "status"),
    [
        (1000 * MB, 1000 * MB, "OK"),
        (150 * MB, 1000 * MB, "OK"),        # exactly 15 %
        (149 * MB, 1000 * MB, "WARN"),
        (50 * MB, 1000 * MB, "WARN"),       # exactly 5 %
        (49 * MB, 1000 * MB, "FAIL"),
        (0, 1000 * MB, "FAIL"),
        (0, 0, "FAIL"),                      # unreadable figures must not divide by zero
    ],
)
def test_judge_memory(available: int, total: int, status: CheckStatus) -> None:
    got, detail = diagnostics.judge_memory(available, total)
    assert got == status
    assert "MB" in detail and "%" in detail


@pytest.mark.parametrize(
    ("free", "total", "status"),
    [
        (50 * GB, 100 * GB, "OK"),
        (10 * GB, 100 * GB, "OK"),           # exactly 10 %
        (10 * GB - 1, 100 * GB, "WARN"),
        (2 * GB, 100 * GB, "WARN"),          # exactly 2 %
        (2 * GB - 1, 100 * GB, "FAIL"),
        (50 * MB, 1 * GB, "WARN"),           # 4.9 %, and exactly the 50 MB floor
        (50 * MB - 1, 1 * GB, "FAIL"),       # under 50 MB whatever the percentage
        (50 * MB - 1, 60 * MB, "FAIL"),
        (0, 0, "FAIL"),
    ],
)
def test_judge_disk(free: int, total: int, status: CheckStatus) -> None:
    got, detail = diagnostics.judge_disk("data partition", free, total)
    assert got == status
    assert detail.startswith("data partition: ")
    assert "GB" in detail


@pytest.mark.parametrize(
    ("dbm", "status"),
    [(-30.0, "OK"), (-69.9, "OK"), (-70.0, "WARN"), (-79.9, "WARN"), (-80.0, "FAIL"), (-95.0, "FAIL")],
)
def test_judge_wifi_signal(dbm: float, status: CheckStatus) -> None:
    got, detail = diagnostics.judge_wifi_signal(dbm)
    assert got == status
    assert "dBm" in detail


@pytest.mark.parametrize(
    ("connected", "rtt", "status"),
    [
        (False, None, "FAIL"),
        (False, 10.0, "FAIL"),
        (True, None, "WARN"),
        (True, 0.0, "OK"),
        (True, 300.0, "OK"),
        (True, 300.1, "WARN"),
        (True, 1000.0, "WARN"),
        (True, 1000.1, "FAIL"),
    ],
)
def test_judge_round_trip(connected: bool, rtt: float | None, status: CheckStatus) -> None:
    got, detail = diagnostics.judge_round_trip(connected, rtt)
    assert got == status
    if not connected:
        assert "not connected" in detail
    elif rtt is not None:
        assert f"{rtt:.0f} ms" in detail


def facts(state_dir: Path, connected: bool = True, rtt: float | None = 42.0, ui_alive: bool = True) -> LinkFacts:
    return LinkFacts(state_dir=state_dir, connected=connected, round_trip_ms=rtt, ui_alive=ui_alive,
                     started_at=time.time() - 60)


def test_run_all_gives_one_valid_check_per_entry(tmp_path: Path) -> None:
    checks = diagnostics.run_all(facts(tmp_path))
    assert len(checks) == len(diagnostics.CHECKS)
    names = [c.name for c in checks]
    assert len(set(names)) == len(names)
    assert names == [
        "versions", "uptime", "cpu-temperature", "throttling", "memory", "disk", "network", "wifi",
        "server-link", "clock-sync", "camera", "microphone", "ui",
    ]
    for check in checks:
        assert isinstance(check, DiagnosticCheck)
        assert check.status in STATUSES, check
        assert check.detail.strip(), check
    # What the agent sends must fit the wire format.
    assert m.Codec(list[DiagnosticCheck]).decode(m.encode(checks)) == checks


def test_run_all_reports_the_link_facts(tmp_path: Path) -> None:
    by_name = {c.name: c for c in diagnostics.run_all(facts(tmp_path, connected=False, ui_alive=False))}
    assert by_name["server-link"].status == "FAIL"
    assert by_name["ui"].status == "FAIL" and "restart-ui" in by_name["ui"].detail
    by_name = {c.name: c for c in diagnostics.run_all(facts(tmp_path, connected=True, rtt=12.0))}
    assert by_name["server-link"] == DiagnosticCheck("server-link", "OK", "round trip to the server 12 ms")
    assert by_name["ui"].status == "OK"


def test_a_broken_check_does_not_hide_the_others(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def exploding_probe(_: LinkFacts) -> DiagnosticCheck:
        raise RuntimeError("sensor bus hung")

    monkeypatch.setattr(diagnostics, "CHECKS", [exploding_probe, diagnostics.ui_process])
    checks = diagnostics.run_all(facts(tmp_path))
    assert checks[0] == DiagnosticCheck("exploding-probe", "WARN", "check failed: sensor bus hung")
    assert checks[1].name == "ui"
