"""The console in Firefox: Debian's Firefox ESR, driven over WebDriver BiDi by puppeteer-core
(npm, from package-lock.json; it downloads no browser). Each role logs in and takes one step on
its main page against a real server and a real unit; a screenshot of each is kept."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.e2e.test_browser_call import ARTIFACTS
from tests.harness import ADMIN_PASSWORD, AgentProcess, ServerProcess, run

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
FIREFOX = Path("/usr/bin/firefox-esr")
SCRIPT = Path(__file__).with_name("firefox_journeys.mjs")
SHOTS = ARTIFACTS / "console"


def test_every_role_logs_in_and_works_its_main_page_in_firefox(
        server: ServerProcess, online_agent: tuple[AgentProcess, str]) -> None:
    if not FIREFOX.exists() or shutil.which("node") is None:
        pytest.fail("Firefox ESR or node is missing: run scripts/setup.sh (it installs firefox-esr and npm ci)")
    if not (ROOT / "node_modules" / "puppeteer-core").exists():
        pytest.fail("puppeteer-core is missing: run scripts/setup.sh (npm ci installs it from package-lock.json)")
    _, device_id = online_agent
    for role in ("admin", "logistics", "support", "caregiver", "management"):
        server.add_admin(role, role)
    server.add_citizen("Karen Jensen", device_id, "caregiver")
    SHOTS.mkdir(parents=True, exist_ok=True)

    out = run("node", SCRIPT, server.console, ADMIN_PASSWORD, device_id, SHOTS.resolve(), timeout=840).stdout
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert lines[0]["version"].startswith("firefox/"), lines[0]
    got = {line["role"]: line for line in lines[1:]}
    assert not [g for g in got.values() if "error" in g], got
    assert {role: g["landed"] for role, g in got.items()} == {
        "admin": "/care", "logistics": "/units", "support": "/units", "caregiver": "/care",
        "management": "/figures"}
    assert got["admin"]["seen"] == ["cli:root"], "the audit log filtered by who"
    assert got["logistics"]["seen"] == [device_id], "the unit found by its id"
    assert got["support"]["seen"] and got["caregiver"]["seen"] == "Karen Jensen"
    assert got["management"]["seen"] >= 2, "a week's row for all teams, at least"
