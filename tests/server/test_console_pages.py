"""The console's server-rendered pages over HTTP: a login page for strangers, each role's
home and navigation, 403 pages outside the role (logged), plain 404 and error pages without
a stack trace, Danish by default and English on request, every page under the strict CSP."""

from __future__ import annotations

import re
import urllib.error
import urllib.request

import pytest

from kiosk.server import console_pages, pages
from tests.harness import Console, ServerProcess


def get(console: Console, path: str) -> tuple[int, str, str]:
    """(status, final path, HTML) of a page, with the person's session cookie."""
    try:
        with console.opener.open(console.base + path, timeout=20) as resp:
            return resp.status, resp.url.removeprefix(console.base), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, path, exc.read().decode()


@pytest.fixture
def people(server: ServerProcess) -> dict[str, Console]:
    consoles = {}
    for name, role in (("anne", "caregiver"), ("lis", "logistics"), ("sara", "support"), ("root", "admin"),
                       ("mette", "management")):
        server.add_admin(name, role)
        consoles[role] = Console(server.console)
        assert consoles[role].login(name) == 200
    return consoles


def test_strangers_get_the_login_page_in_danish(server: ServerProcess) -> None:
    for path in ("/", "/care", "/units"):
        status, _, html = get(Console(server.console), path)
        assert status == 200 and 'id="login"' in html and "Log ind" in html and '<html lang="da">' in html


def test_each_role_lands_on_its_own_page_with_its_own_navigation(people: dict[str, Console]) -> None:
    homes = {"caregiver": "/care", "logistics": "/units", "support": "/units", "admin": "/care",
             "management": "/figures"}
    navigation = {"caregiver": ["Mine borgere"], "logistics": ["Enheder", "Nyt parti"], "support": ["Enheder"],
                  "admin": ["Mine borgere", "Enheder", "Nyt parti", "Tal", "Revisionslog"], "management": ["Tal"]}
    for role, console in people.items():
        status, landed, html = get(console, "/")
        assert status == 200 and landed == homes[role], role
        nav = re.search(r"<nav.*?</nav>", html, re.S)
        assert nav and re.findall(r'<a href="[^"]+"[^>]*>([^<]+)</a>', nav[0]) == navigation[role], role
        assert "Log ud" in html and 'id="logout"' in html


def test_pages_outside_the_role_are_refused_and_logged(server: ServerProcess, people: dict[str, Console]) -> None:
    for role, path in (("caregiver", "/units"), ("support", "/batches/new"), ("logistics", "/care"),
                       ("support", "/care")):
        status, _, html = get(people[role], path)
        assert status == 403 and "Denne side er ikke for din rolle." in html, (role, path)
    refused = [e for e in server.cli_json("audit", "list") if e["action"] == "access-refused"]
    assert [(e["actor"], e["detail"]["route"]) for e in refused] == [
        ("anne", "/units"), ("sara", "/batches/new"), ("lis", "/care"), ("sara", "/care")]


def test_management_sees_figures_with_a_chart_and_administrators_the_audit_log(people: dict[str, Console]) -> None:
    status, _, html = get(people["management"], "/figures?period=day")
    assert status == 200 and '<svg' in html and 'id="figures"' in html and "Alle teams" in html
    assert 'href="/api/figures.csv?period=day"' in html
    assert get(people["management"], "/audit")[0] == 403 and get(people["logistics"], "/figures")[0] == 403
    status, _, html = get(people["admin"], "/audit?actor=anne&check=1")
    assert status == 200 and 'id="chain" class="ok"' in html
    assert re.findall(r"<tr><td>\d+</td><td>[^<]+</td><td>([^<]+)</td><td>([^<]+)</td>", html) == [("anne", "login")]
    status, _, html = get(people["management"], "/figures?period=year")
    assert status == 200 and 'class="error"' in html and "Traceback" not in html


def test_unknown_things_are_a_plain_404_never_a_trace(people: dict[str, Console]) -> None:
    for role, path in (("support", "/units/no-such-unit"), ("caregiver", "/citizens/no-such-citizen")):
        status, _, html = get(people[role], path)
        assert status == 404 and "Siden findes ikke." in html and "Traceback" not in html


def test_english_on_request_is_remembered(people: dict[str, Console]) -> None:
    console = people["logistics"]
    status, _, html = get(console, "/units?lang=en")
    assert status == 200 and '<html lang="en">' in html and "Log out" in html and "Units" in html
    assert "Enheder" not in html
    status, _, html = get(console, "/batches/new")
    assert '<html lang="en">' in html and "New batch" in html, "the choice is kept in a cookie"
    assert get(console, "/units?lang=da")[2].count("Enheder") >= 1


def test_every_page_is_served_under_the_strict_csp_with_no_inline_script(people: dict[str, Console]) -> None:
    console = people["admin"]
    for path in ("/care", "/units", "/batches/new"):
        with console.opener.open(console.base + path, timeout=20) as resp:
            csp = resp.headers["Content-Security-Policy"]
            html = resp.read().decode()
        assert "default-src 'self'" in csp and "unsafe-inline" not in csp
        scripts = re.findall(r"<script([^>]*)>(.*?)</script>", html, re.S)
        assert scripts and all('src="/static/' in attrs or 'type="application/json"' in attrs
                               for attrs, _ in scripts), path


def test_every_string_of_the_pages_has_a_danish_translation() -> None:
    """A string added to a page without its translation would show English on a Danish page."""
    danish = pages.catalog("da")
    english = [p.title for p in pages.PAGES] + list(console_pages.COMMAND_WORDS.values())
    english += list(console_pages.REPEAT_WORDS.values())
    for template in pages.TEMPLATES.glob("*.html"):
        english += re.findall(r"""_\((?:"([^"]+)"|'([^']+)')""", template.read_text())
    texts = {t if isinstance(t, str) else t[0] or t[1] for t in english}
    untranslated = sorted(t for t in texts if danish.gettext(t) == t and t not in ("Ping",))
    assert untranslated == []


def _unit_page(look: object) -> str:
    from kiosk.server.fleet_api import UnitDetail
    from kiosk.server.units import UnitOut
    unit = UnitOut(id="a2545e77-6592-4e45-ae25-b6101bf9ccfa", state="assigned", connection="online", online=True,
                   online_since=1.0, last_seen=2.0, ui_alive=True, agent_version="0.1.0", enrolled_at=1.0,
                   revoked=False)
    detail = UnitDetail(unit=unit, diagnostics=None, diagnostics_at=None, logs=None, logs_at=None, commands=[],
                        wipe=None, look=look)  # type: ignore[arg-type]
    return pages.environment("da").get_template("unit.html").render(
        lang="da", other_lang="en", other_lang_name="English", user=None, nav=[], title="Enhed", path="/units/x",
        detail=detail, can=lambda _p: False, actions=[], command_words=console_pages.COMMAND_WORDS)


def test_a_look_at_the_screen_shows_the_picture_only_after_a_yes() -> None:
    from kiosk.server.fleet_api import LookOut
    shown = _unit_page(LookOut("yes", 3.0, "iVBORw0KGgo="))
    assert "borgeren sagde ja." in shown and 'src="data:image/png;base64,iVBORw0KGgo="' in shown
    refused = _unit_page(LookOut("no", 3.0, None))
    assert "borgeren sagde nej: intet billede." in refused and "<img" not in refused
    assert 'id="look"' not in _unit_page(None)
