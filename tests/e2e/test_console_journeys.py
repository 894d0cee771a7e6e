"""Each role's main journey through the console in Debian's Chromium, against a real server and
real units: logistics (batch -> provisioning file -> a real agent enrolls -> assign -> wipe ->
receipt shown), support (diagnostics, without the citizen), caregiver (plan a visit that the
unit takes, the pre-visit warning when the unit is off). Every page is checked by axe-core at
1280, 390 and 320 px, and each role's main page is kept as a screenshot."""

from __future__ import annotations

import asyncio
import csv
import io
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from kiosk.protocol import messages as m
from kiosk.server import figures
from tests.e2e.test_browser_call import ARTIFACTS, CHROMIUM, CHROMIUM_FLAGS
from tests.harness import ADMIN_PASSWORD, AgentProcess, ServerProcess, wait_until
from tests.staff_client import StaffClient
from tests.ui.answering_screen import AnsweringScreen
from tests.ui.xvfb import xvfb_display  # noqa: F401  (the fixture)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]
playwright_api = pytest.importorskip("playwright.sync_api")

AXE = Path(__file__).resolve().parents[2] / "node_modules" / "axe-core" / "axe.min.js"
WIDTHS = (1280, 390, 320)
SHOTS = ARTIFACTS / "console"
DASH = "\u2013"  # the page's cell of a figure there is none of (no call made: no minutes)
CALLS = 6  # placed for management's figures: a count of five or more is shown as it is


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        yield b
        b.close()


def login(browser: Any, server: ServerProcess, username: str, lang: str = "da") -> Any:
    # axe-core is injected by the test, so this context lets the test's own script past the CSP
    page = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True).new_page()
    page.on("dialog", lambda dialog: dialog.accept())  # "wipe this unit?" — yes
    page.goto(f"{server.console}/?lang={lang}")
    page.fill("#username", username)
    page.fill("#password", ADMIN_PASSWORD)
    page.click("#login button[type=submit]")
    page.wait_for_selector("#logout")
    return page


def accessible(page: Any, name: str) -> None:
    """No serious or critical axe-core violation at any width, and nothing wider than the screen."""
    if not AXE.exists():
        pytest.fail("axe-core is missing: run scripts/setup.sh (npm ci installs it from package-lock.json)")
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 900})
        page.add_script_tag(path=str(AXE))
        result = page.evaluate("async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
                               ".map(v => ({id: v.id, impact: v.impact, nodes: v.nodes.map(n => n.target)}))")
        bad = [v for v in result if v["impact"] in ("serious", "critical")]
        assert bad == [], f"{name} at {width} px: {bad}"
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, f"{name} at {width} px is {overflow} px wider than the screen"
    page.set_viewport_size({"width": 1280, "height": 900})


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def reload_until(page: Any, selector: str, text: str, timeout: float = 30) -> None:
    def shown() -> bool:
        page.reload()
        return text in (page.text_content(selector) or "")
    wait_until(shown, timeout, 0.5, what=f"{text!r} in {selector}")


def test_the_login_and_refusal_pages_are_accessible(browser: Any, server: ServerProcess) -> None:
    server.add_admin("sara", "support")
    page = browser.new_context(bypass_csp=True).new_page()
    page.goto(server.console + "/")
    accessible(page, "login")
    page.goto(server.console + "/?lang=en")
    accessible(page, "login in English")
    page.fill("#username", "sara")
    page.fill("#password", ADMIN_PASSWORD)
    page.click("#login button[type=submit]")
    page.wait_for_selector("#logout")
    assert page.goto(server.console + "/batches/new").status == 403
    accessible(page, "403")


def test_logistics_batch_enroll_assign_wipe(browser: Any, server: ServerProcess, tmp_path: Path) -> None:
    server.add_admin("lis", "logistics")
    server.add_admin("anne", "caregiver", "Anne, sygeplejerske")
    page = login(browser, server, "lis")
    assert page.url.endswith("/units")

    page.goto(server.console + "/batches/new")
    accessible(page, "batch")
    page.fill("#batch-url", server.url)
    page.fill("#batch-count", "2")
    page.click("#batch button[type=submit]")
    page.wait_for_selector("#batch-result:not([hidden])")
    with page.expect_download() as sheet:
        page.click("#sheet-link")
    assert Path(sheet.value.path()).read_bytes().startswith(b"%PDF-")
    with page.expect_download() as first:
        page.click("#file-links a >> nth=0")
    provisioning = tmp_path / "unit.yaml"
    first.value.save_as(str(provisioning))
    assert "token:" in provisioning.read_text()

    agent = AgentProcess(tmp_path / "unit", provisioning).start()
    try:
        device_id = agent.wait_online(60)
        page.goto(server.console + "/units?state=enrolled-unassigned")
        row = f"tr[data-unit='{device_id}']"
        page.wait_for_selector(row)
        assert "Klar til en borger" in page.inner_text(row)
        accessible(page, "units")
        shot(page, "logistics-units")

        page.fill(f"{row} input[name=citizen_name]", "Karen Jensen")
        page.check(f"{row} input[value=anne]")
        with page.expect_navigation(timeout=60_000):  # the page reloads once the server took it
            page.click(f"{row} form.assign button")
        page.goto(server.console + "/units")
        reload_until(page, row, "Tildelt")
        assert "Karen" not in page.content(), "the units page names no citizen"

        with page.expect_navigation(timeout=60_000):  # reloaded once the unit answered (or 30 s passed)
            page.click(f"{row} button[data-command=wipe]")
        page.goto(f"{server.console}/units/{device_id}")
        reload_until(page, "#wipe-receipt", "verificeret", 60)
        assert "citizen-data" in page.inner_text("#wipe-receipt")
        assert "Klar til en borger" in page.inner_text("#unit-state")
        accessible(page, "unit after wipe")
    finally:
        agent.stop()


def test_support_sees_diagnostics_but_never_the_citizen(
        browser: Any, server: ServerProcess, online_agent: tuple[AgentProcess, str]) -> None:
    _, device_id = online_agent
    server.add_admin("sara", "support")
    server.add_admin("anne", "caregiver")
    server.add_citizen("Karen Jensen", device_id, "anne")
    page = login(browser, server, "sara")
    page.click(f"a[href='/units/{device_id}']")
    page.click("button[data-command=diagnostics]")
    page.wait_for_selector("#diagnostics", timeout=60_000)
    checks = page.inner_text("#diagnostics")
    for name in ("camera", "microphone", "ui", "network"):
        assert name in checks
    assert all(page.locator("#diagnostics .badge").all_inner_texts()) and set(
        page.locator("#diagnostics .badge").all_inner_texts()) <= {"OK", "WARN", "FAIL"}
    page.click("button[data-command=logs]")
    page.wait_for_selector("#logs", timeout=60_000)
    assert "Karen" not in page.content() and "Anne" not in page.content()
    accessible(page, "unit")
    shot(page, "support-unit")
    assert page.goto(server.console + "/care").status == 403


def test_caregiver_plans_a_visit_the_unit_takes_and_is_warned_when_the_unit_is_off(
        browser: Any, server: ServerProcess, online_agent: tuple[AgentProcess, str]) -> None:
    agent, device_id = online_agent
    server.add_admin("anne", "caregiver", "Anne, sygeplejerske")
    citizen_id = server.add_citizen("Karen Jensen", device_id, "anne")
    page = login(browser, server, "anne")
    assert page.url.endswith("/care")
    call = page.locator(f"button[data-citizen='{citizen_id}']")
    assert call.get_attribute("aria-label") == "Ring op til Karen Jensen", "each call button names its citizen"

    page.click(f"a[href='/citizens/{citizen_id}']")
    soon = time.localtime(time.time() + 5 * 60)
    page.fill("#visit-at", time.strftime("%Y-%m-%dT%H:%M", soon))
    page.select_option("#visit-repeat", "daily")
    page.click("#add-visit button[type=submit]")
    page.wait_for_selector("#visits tbody tr")
    assert "Hver dag" in page.inner_text("#visits") and "Anne, sygeplejerske" in page.inner_text("#visits")
    accessible(page, "citizen")
    schedule = wait_until(lambda: [e for e in server.cli_json("audit", "list", "--limit", "500")
                                   if e["action"] == "command-result" and e["detail"]["kind"] == "schedule"],
                          30, 0.3, what="the unit's answer to its new plan")
    command = server.show(schedule[-1]["detail"]["command_id"])
    assert command["result"]["detail"] == {"visits": 1} and command["result_verified"], "the unit holds the plan"

    agent.stop()
    page.goto(server.console + "/care")
    reload_until(page, "#citizen-list", "Skærmen er ikke forbundet", 30)
    warning = page.inner_text(f"[data-warning-for='{citizen_id}']")
    assert "Besøget" in warning and "Ring til borgeren, eller tag ud i stedet." in warning
    accessible(page, "care")
    shot(page, "caregiver-citizens")

    page.click("#lang")  # English: every row too, not only the frame
    page.wait_for_selector("html[lang=en]")
    assert "The screen is not connected" in page.inner_text("#citizen-list")
    assert page.locator(f"button[data-citizen='{citizen_id}']").get_attribute("aria-label") == "Call Karen Jensen"
    assert "screen offline" in page.inner_text("#citizen-list")


def test_management_figures_match_the_calls_made_and_administrators_filter_the_audit_log(
        browser: Any, server: ServerProcess, online_agent: tuple[AgentProcess, str], tmp_path: Path) -> None:
    """Six calls placed through the call socket to a real unit (no screen app runs on it, so each
    ends at once, 'screen not running'): management's page counts them, and its CSV holds the
    page's cells; the administrator finds them in the audit log by who and what, chain intact."""
    _, device_id = online_agent
    server.cli("user", "add", "anne", "--role", "caregiver", "--team", "Hjemmeplejen Nord", "--password-stdin",
               stdin=ADMIN_PASSWORD + "\n")
    server.add_admin("mette", "management")
    server.add_admin("admin", "admin")
    citizen_id = server.add_citizen("Karen Jensen", device_id, "anne")

    async def place_calls() -> list[str]:
        async with StaffClient(server.console) as anne:
            await anne.login("anne")
            await anne.connect()
            reasons = []
            for _ in range(CALLS):
                await anne.send(m.CallStart(citizen_id=citizen_id))
                await anne.expect(m.CallPlaced)
                reasons.append((await anne.expect(m.CallEnded, timeout=10)).reason)
            return reasons

    with ThreadPoolExecutor(1) as aside:  # Playwright's own event loop runs in this thread
        assert aside.submit(asyncio.run, place_calls()).result() == ["screen_not_running"] * CALLS

    page = login(browser, server, "mette")
    assert page.url.endswith("/figures")
    page.select_option("#period", "day")
    today = datetime.now(figures.TZ).date()
    page.fill("#from", (today - timedelta(days=6)).isoformat())  # the last week
    with page.expect_navigation():
        page.click("form.filters button[type=submit]")
    shown = {(cells[0], cells[1]): cells for cells in (
        row.locator("td").all_inner_texts() for row in page.locator("#figures tbody tr").all())}
    for team in ("Alle teams", "Hjemmeplejen Nord"):  # period, team, planned, made, unanswered, failed, ...
        assert shown[today.isoformat(), team][2:6] == ["< 5", "< 5", "< 5", str(CALLS)], shown[today.isoformat(), team]
    assert "Karen" not in page.content() and "anne" not in page.content(), "no figure names anyone"
    with page.expect_download() as download:
        page.click("#csv")
    table = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    assert {(r["period"], "Alle teams" if r["team"] == "*" else r["team"]):
            [r["period"], "Alle teams" if r["team"] == "*" else r["team"], r["planned"], r["made"],
             r["unanswered"], r["failed"], r["mean_minutes"] or DASH, r["share_on_screen"] or DASH]
            for r in table} == shown, "the CSV holds the page's cells"
    accessible(page, "figures")
    shot(page, "management-figures")

    page = login(browser, server, "admin")
    page.goto(server.console + "/audit")
    page.fill("#actor", "anne")
    page.fill("#action", "call-ended")
    with page.expect_navigation():
        page.click("form.filters button:not([name])")
    rows = [r.locator("td").all_inner_texts() for r in page.locator("#audit tbody tr").all()]
    assert len(rows) == CALLS and all(r[2:4] == ["anne", "call-ended"] for r in rows), rows
    page.fill("#device_id", device_id)
    page.fill("#actor", "")
    page.fill("#action", "")
    with page.expect_navigation():
        page.click("button[name=check]")
    assert "ingen ændret" in page.inner_text("#chain")
    rows = [r.locator("td").all_inner_texts() for r in page.locator("#audit tbody tr").all()]
    assert rows and all(r[4] == device_id[:8] for r in rows), "only that unit's entries"
    accessible(page, "audit")
    shot(page, "admin-audit")


def test_support_sees_the_screen_after_the_citizens_yes_and_nothing_after_no(
        browser: Any, server: ServerProcess, online_agent: tuple[AgentProcess, str], xvfb_display: str,  # noqa: F811
        tmp_path: Path) -> None:
    """The real kiosk-ui window under Xvfb asks the citizen (``screen_driver look``: Ja, then Nej);
    support's page shows the picture after the yes, and after the no says so with no picture.
    Both answers are in the audit log, neither with a picture."""
    agent, device_id = online_agent
    server.add_admin("sara", "support")
    server.add_admin("anne", "caregiver")
    with AnsweringScreen(agent, xvfb_display, tmp_path, "console-look", scenario="look", first_cue="ready") as screen:
        server.add_citizen("Karen Jensen", device_id, "anne")
        screen.wait_for("idle", 120, "the idle screen of the assigned unit")
        page = login(browser, server, "sara")
        page.goto(f"{server.console}/units/{device_id}")
        answers = {}
        for answer in ("yes", "no"):
            with page.expect_navigation(timeout=120_000):  # reloaded once the unit answered
                page.click("button[data-command=screenshot]")
            screen.wait_for(f"answered-{answer}", 30, f"the citizen's {answer} on the window")
            answers[answer] = page.inner_text("#look")
            if answer == "yes":
                assert "borgeren sagde ja" in answers["yes"]
                image = page.locator("#look-image")
                assert image.evaluate("i => i.naturalWidth") == 1280, "the screen's own picture"
                accessible(page, "unit with a look")
                shot(page, "support-look")
        assert "borgeren sagde nej" in answers["no"] and page.locator("#look-image").count() == 0
        assert "Karen" not in page.content()
    looks = [e for e in server.cli_json("audit", "list", "--limit", "500")
             if e["action"] == "command-result" and e["detail"].get("kind") == "screenshot"]
    assert [e["detail"]["answer"] for e in looks] == ["yes", "no"] and not any("png" in e["detail"] for e in looks)
