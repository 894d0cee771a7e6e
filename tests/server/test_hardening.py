"""The console port against hostile clients, on a real server: password guessing, pages of
other sites, strangers' typing in the audit log, malformed requests, and response headers."""

from __future__ import annotations

import asyncio
import json
import math
import re
import socket
import ssl
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import aiohttp
import pytest

from kiosk.server import app as _app  # noqa: F401 (registers every route, the staff socket's too)
from kiosk.server import auth
from kiosk.server.console_api import PUBLIC, ROUTES, STATE_CHANGING
from tests.harness import ADMIN_PASSWORD, AgentProcess, Console, ServerProcess

FOREIGN = "http://evil.example"


def login_until_admitted(console: Console, password: str, rounds: int = 5) -> int:
    """Log in, waiting each time as long as the server's Retry-After says."""
    for _ in range(rounds):
        status = console.login(password=password)
        if status != 429:
            return status
        time.sleep(int(console.headers["Retry-After"]))
    return 429


def test_thirty_wrong_passwords_get_429_and_the_right_one_waits_its_turn(server: ServerProcess) -> None:
    server.add_admin()
    guesser = Console(server.console)
    answers = []
    for i in range(30):
        status, body = guesser.request("POST", "/api/login", {"username": "admin", "password": f"guess {i}"})
        answers.append((status, body["error"], guesser.headers.get("Retry-After")))
    assert answers[:5] == [(401, "bad-credentials", None)] * 5, "a few typos are free"
    refused = [a for a in answers if a[0] == 429]
    assert len(refused) >= 20, answers
    assert all(code == "too-many-attempts" and retry is not None and int(retry) >= 1 for _, code, retry in refused)

    owner = Console(server.console)
    status, body = owner.request("POST", "/api/login", {"username": "admin", "password": ADMIN_PASSWORD})
    assert status == 429 and int(owner.headers["Retry-After"]) >= 1, "the right password waits its turn"
    assert login_until_admitted(owner, ADMIN_PASSWORD) == 200
    assert owner.request("GET", "/api/me")[0] == 200

    audit = server.cli_json("audit", "list", "--limit", "500")
    failed = [e for e in audit if e["action"] == "login-failed"]
    assert failed and all(e["actor"] == "anonymous" and e["detail"]["account"] == "admin" for e in failed)
    assert [e["detail"]["failures_from_peer"] for e in failed][:3] == [1, 2, 3]
    throttled = [e for e in audit if e["action"] == "login-throttled"]
    assert throttled and throttled[0]["actor"] == "server" and throttled[0]["detail"]["address"] == "127.0.0.1"


def test_names_that_are_no_account_never_reach_the_audit_log(server: ServerProcess) -> None:
    server.add_admin()
    typed = "Sommer2026-secret"  # a password typed into the user-name box
    console = Console(server.console)
    for _ in range(3):
        assert console.request("POST", "/api/login", {"username": typed, "password": "whatever it is"})[0] == 401
    entries = server.cli_json("audit", "list", "--limit", "500")
    failed = [e for e in entries if e["action"] == "login-failed"]
    # a counter per address (and which login path) instead of the name typed
    assert [e["detail"] for e in failed] == [
        {"peer": "127.0.0.1", "failures_from_peer": n, "method": "password"} for n in (1, 2, 3)]
    assert typed not in json.dumps(entries)
    import sqlite3
    with sqlite3.connect(server.data / "kiosk.db") as db:
        dump = "\n".join(db.iterdump())
    assert typed not in dump, "kept nowhere in the database"


def test_an_administrator_lifts_the_wait_from_the_cli_and_the_api(server: ServerProcess) -> None:
    server.add_admin()
    server.add_admin("sara", "support")
    guesser = Console(server.console)
    for i in range(12):
        guesser.request("POST", "/api/login", {"username": "sara", "password": f"guess {i}"})
    assert Console(server.console).login("sara") == 429
    held = {(h["kind"], h["value"]) for h in server.cli_json("user", "held")}
    assert ("address", "127.0.0.1") in held and ("account", "sara") in held

    out = server.cli("user", "unlock", "sara", "--address", "127.0.0.1").stdout
    assert "account sara: unlocked" in out and "address 127.0.0.1: unlocked" in out
    assert Console(server.console).login("sara") == 200, "unlocked at once"

    for i in range(8):
        guesser.request("POST", "/api/login", {"username": "sara", "password": f"again {i}"})
    admin = Console(server.console)
    assert login_until_admitted(admin, ADMIN_PASSWORD) == 200
    support = Console(server.console)
    unlock_address = {"kind": "address", "address": "127.0.0.1"}
    assert support.request("POST", "/api/login-backoff/unlock", unlock_address)[0] == 401
    assert admin.request("POST", "/api/login-backoff/unlock", unlock_address)[0] == 204
    assert admin.request("POST", "/api/login-backoff/unlock", unlock_address)[0] == 404
    assert support.login("sara") == 200
    assert support.request("POST", "/api/login-backoff/unlock", {"kind": "account", "account": "sara"})[0] == 403
    unlocks = [e for e in server.cli_json("audit", "list", "--limit", "500") if e["action"] == "login-unlocked"]
    assert [(e["actor"].startswith("cli:"), e["detail"]) for e in unlocks] == [
        (True, {"account": "sara"}), (True, {"address": "127.0.0.1"}), (False, {"address": "127.0.0.1"})]


def _path(template: str, device_id: str) -> str:
    """The route's path with its parameters filled: the device given, anything else unknown."""
    return re.sub(r"\{(\w+)\}", lambda p: device_id if p[1] == "device_id" else f"no-such-{p[1]}", template)


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Console]]:
    """One server and a logged-in administrator for the tests generated per route."""
    srv = ServerProcess(tmp_path_factory.mktemp("csrf") / "server").start()
    srv.add_admin()
    admin = Console(srv.console)
    assert admin.login() == 200
    yield srv, admin
    srv.stop()


@pytest.mark.parametrize("route", [r for r in ROUTES if r.method in STATE_CHANGING], ids=lambda r: r.path)
def test_no_state_changing_route_takes_a_request_from_another_site(
        shared_server: tuple[ServerProcess, Console], route: Any) -> None:
    """Generated from the route table: every POST refuses a foreign Origin, a cross-site fetch and
    a body that a plain HTML form could send, before it does anything."""
    server, admin = shared_server
    path = _path(route.path, "00000000-0000-4000-8000-000000000000")
    body = json.dumps({"server_url": server.url, "kind": "ping"}).encode()
    before = len(server.cli_json("audit", "list", "--limit", "1000"))
    attacks = [
        ({"Origin": FOREIGN}, "application/json", 403, "cross-origin"),
        ({"Origin": "null"}, "application/json", 403, "cross-origin"),
        ({"Sec-Fetch-Site": "same-site"}, "application/json", 403, "cross-origin"),
        ({"Origin": server.console}, "text/plain", 415, "json-required"),
        ({}, "application/x-www-form-urlencoded", 415, "json-required"),
    ]
    for headers, content_type, status, code in attacks:
        got, answer = admin.request(route.method, path, raw=body, headers={**headers, "Content-Type": content_type})
        assert (got, answer["error"]) == (status, code), (route.path, headers, content_type)
    assert len(server.cli_json("audit", "list", "--limit", "1000")) == before, "nothing happened"
    assert admin.request("GET", "/api/me")[0] == 200, "the session is still there"
    if route.path != "/api/logout":  # that one would end the shared session
        same_origin, _ = admin.request(route.method, path, raw=body, headers={"Origin": server.console})
        assert same_origin not in (403, 415), "the console's own pages may"


@pytest.mark.parametrize("route", [r for r in ROUTES if r.permission not in (PUBLIC, None)
                                   and not auth.may("caregiver", r.permission)], ids=lambda r: f"{r.method} {r.path}")
def test_a_role_without_the_permission_is_refused_before_its_input_is_read(
        shared_server: tuple[ServerProcess, Console], route: Any) -> None:
    """Generated from the route table: garbage from a role that may not use the route gets 403, never 400."""
    server, _ = shared_server
    caregiver = Console(server.console)
    if caregiver.login("carla") != 200:
        server.add_admin("carla", "caregiver")
        assert caregiver.login("carla") == 200
    path = _path(route.path, "not-a-device") + ("?limit=lots&after=-1" if route.query else "")
    status, body = caregiver.request(route.method, path, raw=b"\x00{garbage" if route.method != "GET" else None)
    assert (status, body["error"]) == (403, "forbidden"), (route.path, body)


def test_the_staff_call_socket_refuses_pages_of_other_sites(server: ServerProcess) -> None:
    server.add_admin()
    admin = Console(server.console)
    admin.login()
    session = {c.name: c.value for c in admin.cookies() if c.value is not None}

    async def upgrade(origin: str | None) -> int:
        async with aiohttp.ClientSession(cookies=session) as http:
            try:
                async with http.ws_connect(f"{server.console}/api/calls/socket", origin=origin) as ws:
                    await ws.close()
                    return 101
            except aiohttp.WSServerHandshakeError as exc:
                return exc.status

    assert asyncio.run(upgrade(FOREIGN)) == 403
    assert asyncio.run(upgrade(server.console)) == 101
    assert asyncio.run(upgrade(None)) == 101, "a program with a session it got by logging in"
    status, body = admin.request("GET", "/api/calls/socket")
    assert (status, body["error"]) == (426, "websocket-required")


def test_permission_is_checked_before_the_input(server: ServerProcess, online_agent: tuple[AgentProcess, str]) -> None:
    _, device_id = online_agent
    server.add_admin("carla", "caregiver")
    server.add_admin("sara", "support")
    caregiver, support = Console(server.console), Console(server.console)
    assert caregiver.login("carla") == support.login("sara") == 200
    commands = f"/api/devices/{device_id}/commands"
    status, body = caregiver.request("POST", commands, {"kind": "teleport"})
    assert (status, body["error"]) == (403, "forbidden") and "ping" not in body["message"]
    assert caregiver.request("POST", commands, raw=b"{not json")[0] == 403
    status, body = support.request("POST", commands, {"kind": "wipe", "args": {"bogus": 1}})
    assert (status, body["error"]) == (403, "forbidden")
    status, body = support.request("POST", commands, {"kind": "teleport"})
    assert (status, body["error"]) == (400, "unknown-kind") and "wipe" not in body["message"]
    assert caregiver.request("POST", "/api/enroll-tokens", raw=b"\x00garbage")[0] == 403


def test_malformed_requests_make_one_warning_line_without_traceback(server: ServerProcess) -> None:
    started = time.monotonic()
    for _ in range(25):
        with socket.create_connection(("127.0.0.1", server.console_port), timeout=10) as raw:
            raw.sendall(b"GET /api/me HTTP/1.1\r\nHost: x\r\nX-Evil: a\x00b\r\n\r\n")
            assert raw.recv(100).split(b" ")[1] == b"400"
    assert Console(server.console).request("GET", "/api/me")[0] == 401, "the server carries on"
    elapsed = time.monotonic() - started
    lines = [line for line in server.log().splitlines() if "malformed HTTP request" in line]
    assert 1 <= len(lines) <= 1 + elapsed / 10, lines
    assert " WARNING " in lines[0]
    assert "Traceback" not in server.log() and " ERROR " not in server.log()


def test_api_answers_are_not_cached_and_the_page_may_not_be_reframed(server: ServerProcess) -> None:
    console = Console(server.console)
    console.request("GET", "/api/me")
    assert console.headers["Cache-Control"] == "no-store"
    with urllib.request.urlopen(server.console + "/", timeout=10) as page:
        csp = page.headers["Content-Security-Policy"]
        assert page.headers.get("Strict-Transport-Security") is None, "HSTS only over HTTPS"
    assert "base-uri 'none'" in csp and "form-action 'self'" in csp and "frame-ancestors 'none'" in csp


def test_https_console_sends_hsts(tmp_path: Any) -> None:
    srv = ServerProcess(tmp_path / "server", extra_args=["--console-https"]).start()
    try:
        tls = ssl.create_default_context(cafile=str(next(srv.data.rglob("ca.crt"))))
        tls.check_hostname = False  # the server certificate names the host it was made for
        with urllib.request.urlopen(f"https://127.0.0.1:{srv.console_port}/openapi.json", context=tls,
                                    timeout=10) as answer:
            assert answer.headers["Strict-Transport-Security"].startswith("max-age=")
            assert answer.headers["Cache-Control"] == "no-store"
    finally:
        srv.stop()


def test_behind_a_trusted_proxy_the_guesser_is_held_not_everyone(tmp_path: Any) -> None:
    srv = ServerProcess(tmp_path / "server", extra_args=["--trusted-proxy", "127.0.0.1"]).start()
    try:
        srv.add_admin()
        guesser, colleague = Console(srv.console), Console(srv.console)
        for i in range(8):
            guesser.request("POST", "/api/login", {"username": "admin", "password": f"guess {i}"},
                            headers={"X-Forwarded-For": f"198.51.100.{i}, 203.0.113.9"})
        assert guesser.request("POST", "/api/login", {"username": "admin", "password": "one more"},
                               headers={"X-Forwarded-For": "203.0.113.9"})[0] == 429
        assert colleague.request("POST", "/api/login", {"username": "admin", "password": ADMIN_PASSWORD},
                                 headers={"X-Forwarded-For": "203.0.113.10"})[0] == 200
        peers = {e["detail"]["peer"] for e in srv.cli_json("audit", "list") if e["action"] == "login-failed"}
        assert peers == {"203.0.113.9"}, "only the entry the proxy added is believed"
    finally:
        srv.stop()


def test_without_a_trusted_proxy_a_forged_forwarded_for_changes_nothing(server: ServerProcess) -> None:
    server.add_admin()
    guesser = Console(server.console)
    answers = [guesser.request("POST", "/api/login", {"username": "admin", "password": f"guess {i}"},
                               headers={"X-Forwarded-For": f"203.0.113.{i}"})[0] for i in range(8)]
    assert 429 in answers


def test_parallel_guessers_share_one_budget(server: ServerProcess) -> None:
    """Four guessers at once get what one would: attempts are counted before the password is checked."""
    server.add_admin()

    def guess(worker: int) -> list[int]:
        console = Console(server.console)
        return [console.request("POST", "/api/login", {"username": "admin", "password": f"w{worker} g{i}"})[0]
                for i in range(10)]

    started = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        answers = [status for statuses in pool.map(guess, range(4)) for status in statuses]
    elapsed = time.monotonic() - started
    assert set(answers) == {401, 429}
    # 5 free, then one admitted at 0, 1, 3, 7, 15 ... seconds: 1 + log2(1 + elapsed) more at most
    assert answers.count(401) <= 5 + 2 + math.log2(1 + elapsed), (answers.count(401), elapsed)
