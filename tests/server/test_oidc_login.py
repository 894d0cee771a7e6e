"""Login with the municipality's identity provider, end to end: a real OpenID Connect provider
(node-oidc-provider) on loopback, the real server with --oidc settings, and Debian's Chromium
clicking through the console's login page, the provider's login form and its consent page."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kiosk.server import oidc
from tests.e2e.test_browser_call import ARTIFACTS, CHROMIUM, CHROMIUM_FLAGS
from tests.harness import ADMIN_PASSWORD, Console, ServerProcess, free_port, terminate

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]
playwright_api = pytest.importorskip("playwright.sync_api")

IDP_DIR = Path(__file__).parent / "oidc_idp"
CLIENT_ID, CLIENT_SECRET = "skaermbesoeg-test", "a client secret only this test knows"
GROUPS = {"SG-Skaerm-Omsorg": "caregiver", "SG-Skaerm-Ledelse": "management"}
ACCOUNTS = {
    "anne": {"preferred_username": "anne", "name": "Anne Sygeplejerske",
             "groups": ["SG-Skaerm-Omsorg", "SG-Hjemmepleje-Nord", "SG-Alle-Ansatte"]},
    "mette": {"preferred_username": "mette", "groups": ["SG-Skaerm-Ledelse"]},
    "bent": {"preferred_username": "bent", "groups": ["SG-Alle-Ansatte"]},  # no role here
    "admin": {"preferred_username": "admin", "groups": ["SG-Skaerm-Omsorg"]},  # a local account's name
}


@pytest.fixture
def oidc_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """The provider on a loopback port, and the server using it for staff logins."""
    if shutil.which("node") is None or not (IDP_DIR / "node_modules" / "oidc-provider").is_dir():
        pytest.fail("the test OIDC provider is not installed: run `make setup` (scripts/setup.sh runs npm ci)")
    idp_port, console_port = free_port(), free_port()
    issuer, callback = f"http://127.0.0.1:{idp_port}", f"http://127.0.0.1:{console_port}/api/login/oidc/callback"
    config = tmp_path / "idp.json"
    config.write_text(json.dumps({"issuer": issuer, "port": idp_port, "accounts": ACCOUNTS,
                                  "client": {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
                                             "redirect_uris": [callback]}}))
    log = tmp_path / "idp.log"
    with log.open("w") as err:
        proc = subprocess.Popen(["node", str(IDP_DIR / "idp.mjs"), str(config)], stdout=subprocess.PIPE,
                                stderr=err, text=True, env={**os.environ, "NODE_ENV": "test"})
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready", log.read_text()
    secret = tmp_path / "oidc-secret"
    secret.write_text(CLIENT_SECRET + "\n")
    settings = tmp_path / "oidc.yaml"
    settings.write_text(yaml.safe_dump({
        "issuer": issuer, "client_id": CLIENT_ID, "client_secret_file": str(secret), "redirect_uri": callback,
        "scopes": ["openid", "profile", "groups"], "roles": GROUPS,
        "teams": {"SG-Hjemmepleje-Nord": "Hjemmeplejen Nord"}, "label": "Testby login",
    }, sort_keys=False))
    srv = ServerProcess(tmp_path / "server", console_port=console_port, extra_args=["--oidc", str(settings)])
    srv.start()
    srv.add_admin()  # a local account remains, and its name cannot be taken over from the provider
    yield srv
    srv.stop()
    terminate(proc)


@pytest.fixture
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        yield b
        b.close()


def log_in_at_the_provider(page: Any, console: str, login: str) -> None:
    """What a person does: the console's login page, its municipal-login link, the provider's
    own login form and its consent page."""
    page.goto(console + "/")
    page.click("#oidc-link")
    page.wait_for_selector("input[name=login]")
    page.fill("input[name=login]", login)
    page.fill("input[name=password]", "the provider checks this, not us")
    page.click("button[type=submit]")
    page.wait_for_selector("button[autofocus], button[type=submit]")
    page.click("button[type=submit]")  # consent: "Continue"
    page.wait_for_url(f"{console}/**")


def me(page: Any) -> tuple[int, Any]:
    answer = page.evaluate("fetch('/api/me', {credentials: 'same-origin'}).then(async r => [r.status, await r.json()])")
    return int(answer[0]), answer[1]


def test_staff_log_in_with_the_municipality_login_and_get_role_and_team(oidc_server: ServerProcess,
                                                                        browser: Any) -> None:
    page = browser.new_context().new_page()
    log_in_at_the_provider(page, oidc_server.console, "anne")
    assert me(page) == (200, {"username": "anne", "role": "caregiver"})
    page.wait_for_selector("#citizens:not([hidden])")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "oidc-logged-in.png"))
    assert [c["name"] for c in page.context.cookies() if c["name"] == "kiosk_oidc"] == [], "the binding is gone"

    manager = browser.new_context().new_page()
    log_in_at_the_provider(manager, oidc_server.console, "mette")
    assert me(manager) == (200, {"username": "mette", "role": "management"})

    audit = oidc_server.cli_json("audit", "list", "--limit", "100")
    logins = [e for e in audit if e["action"] == "login" and e["detail"]["method"] == "oidc"]
    assert [e["actor"] for e in logins] == ["anne", "mette"]
    assert [e["detail"]["user"] for e in audit if e["action"] == "user-added" and e["actor"] == "server"] == \
        ["anne", "mette"]
    local = Console(oidc_server.console)
    assert local.login("admin", ADMIN_PASSWORD) == 200, "local accounts remain"
    assert local.login("anne", "any password at all") == 401, "an account from the provider has no password here"


def test_a_login_with_no_known_role_is_refused_and_told_plainly(oidc_server: ServerProcess, browser: Any) -> None:
    page = browser.new_context().new_page()
    log_in_at_the_provider(page, oidc_server.console, "bent")
    assert "Du har ikke adgang til Skærmbesøg" in page.inner_text("h1")
    assert "ingen rolle i Skærmbesøg" in page.inner_text("#reason")
    assert "bent has no role in Skærmbesøg" in page.inner_text("main")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "oidc-no-role.png"))
    assert me(page)[0] == 401
    refused = [e for e in oidc_server.cli_json("audit", "list") if e["action"] == "login-failed"]
    assert [(e["actor"], e["detail"]["method"], e["detail"]["reason"]) for e in refused] == \
        [("anonymous", "oidc", "no-role")]
    assert oidc_server.cli("user", "held", "--json").stdout.count("127.0.0.1") == 1, "it counts toward the lock-out"


def test_a_local_account_cannot_be_taken_over_from_the_provider(oidc_server: ServerProcess, browser: Any) -> None:
    page = browser.new_context().new_page()
    log_in_at_the_provider(page, oidc_server.console, "admin")
    assert "belongs to another account" in page.inner_text("main")
    assert me(page)[0] == 401


def test_an_answer_not_started_in_this_browser_is_refused(oidc_server: ServerProcess) -> None:
    stranger = Console(oidc_server.console)
    status, body = stranger.request("GET", "/api/login/oidc/callback?state=made-up&code=stolen")
    assert (status, body["error"]) == (401, "login-expired")
    status, body = stranger.request("GET", "/api/login/oidc", headers={"Sec-Fetch-Site": "cross-site"})
    assert (status, body["error"]) == (403, "cross-origin"), "another site's page cannot start a login"


def test_settings_with_an_unknown_role_or_plain_http_are_refused(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("x")
    base = {"issuer": "https://login.example", "client_id": "c", "client_secret_file": str(secret),
            "redirect_uri": "https://console.example/api/login/oidc/callback", "roles": {"G": "caregiver"}}
    for change, said in (({"roles": {"G": "superuser"}}, "unknown role 'superuser'"),
                         ({"issuer": "http://login.example"}, "must use https"),
                         ({"teams": {"G": "<script>"}}, "unfit team name")):
        path = tmp_path / "oidc.yaml"
        path.write_text(yaml.safe_dump({**base, **change}))
        with pytest.raises(ValueError, match=said):
            oidc.load_settings(path)
    path.write_text(yaml.safe_dump(base))
    assert oidc.load_settings(path).roles == {"G": "caregiver"}
