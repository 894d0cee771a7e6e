"""The console page in a real Chromium: it passes the origin check, says how long to wait
after too many wrong passwords, and logs in and out with JSON requests."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.test_browser_call import CHROMIUM, CHROMIUM_FLAGS
from tests.harness import ADMIN_PASSWORD, ServerProcess

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]
playwright_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture
def page() -> Iterator[Any]:
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        yield browser.new_context().new_page()
        browser.close()


def submit(page: Any, password: str) -> None:
    page.fill("#username", "anne")
    page.fill("#password", password)
    page.click("#login button[type=submit]")


def test_the_page_says_how_long_to_wait_and_then_lets_the_owner_in(server: ServerProcess, page: Any) -> None:
    server.add_admin("anne", "caregiver")
    page.goto(server.console + "/")
    wait = re.compile(r"Prøv igen om (\d+) sekunder")
    for i in range(12):
        with page.expect_response("**/api/login") as answer:
            submit(page, f"wrong {i}")
        if answer.value.status == 429:
            break
        page.wait_for_function("document.querySelector('#login-error').textContent.length > 0")
    else:
        raise AssertionError("no 429 after 12 wrong passwords")
    shown = wait.search(page.text_content("#login-error") or "")
    assert shown and int(shown[1]) >= 1, page.text_content("#login-error")

    for _ in range(5):  # the right password, waiting as long as the page says each time
        page.wait_for_timeout(int(shown[1]) * 1000)
        with page.expect_response("**/api/login") as answer:
            submit(page, ADMIN_PASSWORD)
        if answer.value.status == 200:
            break
        page.wait_for_function("/Prøv igen/.test(document.querySelector('#login-error').textContent)")
        shown = wait.search(page.text_content("#login-error") or "")
        assert shown
    page.wait_for_selector("#citizens:not([hidden])")

    with page.expect_response("**/api/logout") as logout:
        page.click("#logout")
    assert logout.value.status == 204, "the page's own JSON request passes the origin check"
    page.wait_for_selector("#login:not([hidden])")
