"""The authorization table, generated from the route table: every route for every role is
either allowed or refused with 403 on a real server, each refusal is in the audit log, and
docs/authorization.md is the table as it is now."""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from pathlib import Path

from kiosk.server import app as _app  # noqa: F401 (registers every route)
from kiosk.server import auth, authorization
from kiosk.server.console_api import ROUTES, STATE_CHANGING
from tests.harness import ADMIN_PASSWORD, Console, ServerProcess

DOC = Path(__file__).parents[2] / "docs" / "authorization.md"


def test_the_document_is_the_table_of_the_routes_as_they_are() -> None:
    assert DOC.read_text() == authorization.markdown(ROUTES), \
        "run: python -m kiosk.server.authorization > docs/authorization.md (and review who may do what)"


def status_of(console: Console, method: str, path: str, origin: str) -> tuple[int, bytes]:
    """One request as the console's own page would send it (any answer, JSON or not)."""
    body = b"{}" if method in STATE_CHANGING else None
    req = urllib.request.Request(console.base + path, data=body, method=method,
                                 headers={"Content-Type": "application/json", "Origin": origin})
    try:
        with console.opener.open(req, timeout=20) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_every_route_for_every_role_is_allowed_or_refused_as_the_table_says(server: ServerProcess) -> None:
    for role in auth.ROLES:
        server.cli("user", "add", f"{role}-person", "--role", role, "--password-stdin", stdin=ADMIN_PASSWORD + "\n")
    # the session ends last: logging out would end it for the routes after
    cells = sorted(authorization.table(ROUTES), key=lambda c: c.path == "/api/logout")
    refused: dict[str, int] = {}
    for role in auth.ROLES:
        console = Console(server.console)
        assert console.login(f"{role}-person") == 200
        refused[role] = 0
        for cell in cells:
            path = re.sub(r"\{(\w+)\}", lambda p: f"no-such-{p[1]}", cell.path)
            status, body = status_of(console, cell.method, path, server.console)
            if cell.allowed[role]:
                assert status not in (401, 403), (role, cell.method, cell.path, status, body)
            else:
                assert status == 403 and b'"forbidden"' in body, (role, cell.method, cell.path, status, body)
                refused[role] += 1
    admin = Console(server.console)
    assert admin.login("admin-person") == 200
    for role, count in refused.items():
        status, entries = admin.request("GET", f"/api/audit?actor={role}-person&action=access-refused&limit=1000")
        assert status == 200 and len(entries) == count, (role, count, entries)
        assert all(e["detail"]["role"] == role and e["detail"]["route"].startswith("/api/") for e in entries)
        assert all("no-such" not in e["detail"]["route"] for e in entries), "the route's pattern, never its ids"
    assert refused["admin"] == 0 and refused["management"] > 0 and refused["caregiver"] > 0
