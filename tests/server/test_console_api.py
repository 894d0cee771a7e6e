"""The console's JSON API as people use it: log in, act within their role, get clear refusals."""

from __future__ import annotations

from kiosk.protocol import messages as m
from tests.harness import AgentProcess, Console, ServerProcess


def test_login_is_required_and_wrong_passwords_are_refused(server: ServerProcess) -> None:
    server.add_admin()
    console = Console(server.console)
    assert console.request("GET", "/api/devices")[0] == 401
    status, body = console.request("POST", "/api/login", {"username": "admin", "password": "wrong password"})
    assert status == 401 and body["error"] == "bad-credentials"
    status, body = console.request("POST", "/api/login", {"username": "nobody", "password": "wrong password"})
    assert status == 401 and body["error"] == "bad-credentials", "unknown users look like wrong passwords"
    assert console.login() == 200
    assert console.request("GET", "/api/me") == (200, {"username": "admin", "role": "admin"})
    assert console.request("POST", "/api/logout")[0] == 204
    assert console.request("GET", "/api/me")[0] == 401
    actions = [e["action"] for e in server.cli_json("audit", "list")]
    assert actions.count("login-failed") == 2 and "login" in actions


def test_roles_limit_what_people_may_do(server: ServerProcess, online_agent: tuple[AgentProcess, str]) -> None:
    _, device_id = online_agent
    server.add_admin()
    server.add_admin("sara", "support")
    server.add_admin("lars", "logistics")
    server.add_admin("carla", "caregiver")
    support, logistics, caregiver = Console(server.console), Console(server.console), Console(server.console)
    assert support.login("sara") == logistics.login("lars") == caregiver.login("carla") == 200

    status, queued = support.request("POST", f"/api/devices/{device_id}/commands", {"kind": "diagnostics"})
    assert status == 202 and queued["state"] in ("pending", "delivered")
    status, body = support.request("POST", f"/api/devices/{device_id}/commands", {"kind": "wipe"})
    assert status == 403 and "may not send wipe" in body["message"]
    assert support.request("POST", "/api/enroll-tokens", {"server_url": server.url})[0] == 403
    assert caregiver.request("GET", "/api/devices")[0] == 403
    # Support rings a unit to test it (logistics may not); a ring outside 3-60 s is refused at once.
    status, body = support.request("POST", f"/api/devices/{device_id}/commands",
                                   {"kind": "test-ring", "args": {"ring_seconds": 600}})
    assert status == 400 and "ring_seconds" in body["message"], body
    status, body = logistics.request("POST", f"/api/devices/{device_id}/commands", {"kind": "test-ring"})
    assert status == 403 and "may not send test-ring" in body["message"]

    status, created = logistics.request("POST", "/api/enroll-tokens", {"server_url": server.url, "count": 2})
    assert status == 201 and len(created["files"]) == 2 and "token:" in created["files"][0]["content"]
    status, devices = logistics.request("GET", "/api/devices")
    assert status == 200 and devices[0]["id"] == device_id and devices[0]["online"] is True
    assert devices[0]["online_since"] is not None
    assert logistics.request("GET", "/api/devices?offset=1")[1] == [], "a page at a time: past the one unit, none"
    status, body = logistics.request("GET", "/api/devices?limit=0")
    assert (status, body["error"]) == (400, "invalid"), body

    command = server.wait_command(queued["id"])
    status, shown = support.request("GET", f"/api/commands/{queued['id']}")
    assert status == 200 and shown["state"] == command["state"] == "done" and shown["result_verified"]
    status, audit = support.request("GET", f"/api/audit?device_id={device_id}")
    assert status == 200 and {"device-enrolled", "command-queued", "command-result"} <= {e["action"] for e in audit}


def test_bad_requests_get_clear_errors(server: ServerProcess, online_agent: tuple[AgentProcess, str]) -> None:
    _, device_id = online_agent
    server.add_admin()
    console = Console(server.console)
    console.login()
    cases = [
        ("POST", f"/api/devices/{device_id}/commands", b"{not json", 400, "malformed"),
        ("POST", f"/api/devices/{device_id}/commands", b'{"kind": "ping", "extra": 1}', 400, "invalid"),
        ("POST", f"/api/devices/{device_id}/commands", b'{"kind": "teleport"}', 400, "unknown-kind"),
        ("POST", f"/api/devices/{device_id}/commands", b'{"kind": "logs", "args": {"lines": "x"}}', 400,
         "invalid"),
        ("POST", f"/api/devices/{device_id}/commands", b'{"kind": "ping", "expires_in": -5}', 400, "invalid"),
        ("POST", "/api/devices/00000000-0000-0000-0000-000000000000/commands", b'{"kind": "ping"}', 404,
         "unknown-device"),
        ("POST", "/api/enroll-tokens", b'{"server_url": "http://plain", "count": 1}', 400, "invalid"),
        ("POST", "/api/enroll-tokens", b'{"server_url": "https://x", "count": 100000}', 400, "invalid"),
        ("GET", "/api/commands/nope", None, 404, "unknown-command"),
        ("GET", "/api/audit?limit=lots", None, 400, "invalid"),
    ]
    for method, path, raw, status, code in cases:
        got, body = console.request(method, path, raw=raw)
        assert (got, body["error"]) == (status, code), (path, raw, body)
    got, body = console.request("POST", f"/api/devices/{device_id}/commands", raw=b"{" + b" " * 70_000 + b"}")
    assert (got, body["error"]) == (413, "oversized")
    assert console.request("GET", "/api/me")[0] == 200, "the session survives bad requests"


def test_a_bulk_command_reaches_each_named_unit_once_and_says_who_got_none(
        server: ServerProcess, online_agent: tuple[AgentProcess, str]) -> None:
    agent, device_id = online_agent
    server.add_admin()
    server.add_admin("sara", "support")
    console, support = Console(server.console), Console(server.console)
    assert console.login() == support.login("sara") == 200
    unknown = "00000000-0000-0000-0000-000000000000"

    status, answer = console.request("POST", "/api/commands",
                                     {"kind": "ping", "device_ids": [device_id, unknown], "expires_in": 600})
    assert status == 202, answer
    (queued,) = answer["queued"]
    assert queued["device_id"] == device_id
    assert answer["refused"] == [{"device_id": unknown, "error": "unknown-device",
                                  "message": f"no device with id {unknown}"}]
    assert server.wait_command(queued["id"])["state"] == "done"
    pings = [e for e in agent.audit() if e.get("command_id") == queued["id"]]
    assert [e["event"] for e in pings] == ["command-accepted"], pings  # delivered once: no replay refused
    queued_audit = [e for e in server.cli_json("audit", "list") if e["action"] == "command-queued"]
    assert [e["detail"]["command_id"] for e in queued_audit] == [queued["id"]]

    for body, status, code in (
        ({"kind": "ping", "device_ids": [device_id, device_id]}, 400, "duplicate-device"),
        ({"kind": "ping", "device_ids": []}, 400, "invalid"),
        ({"kind": "ping", "device_ids": [f"unit-{i}" for i in range(1001)]}, 400, "invalid"),
        ({"kind": "teleport", "device_ids": [device_id]}, 400, "unknown-kind"),
        # arguments wrong for every unit alike: one 400, nothing queued for any
        ({"kind": "set-config", "device_ids": [device_id], "args": {"settings": {"volume": 99}}},
         400, "invalid-arguments"),
        ({"kind": "set-config", "device_ids": [device_id], "args": {"settings": {"brightness": 3}}},
         400, "invalid-arguments"),
    ):
        got, refused = console.request("POST", "/api/commands", body)
        assert (got, refused["error"]) == (status, code), (body, refused)
    got, refused = support.request("POST", "/api/commands", {"kind": "wipe", "device_ids": [device_id]})
    assert got == 403 and "may not send wipe" in refused["message"]


def test_openapi_document_states_real_statuses_enums_and_patterns(server: ServerProcess) -> None:
    status, spec = Console(server.console).request("GET", "/openapi.json")
    assert status == 200 and spec["openapi"].startswith("3.")
    paths, schemas = spec["paths"], spec["components"]["schemas"]
    statuses = {(method.upper(), path): set(op["responses"])
                for path, ops in paths.items() for method, op in ops.items()}
    assert {"202", "403", "409", "415"} <= statuses[("POST", "/api/devices/{device_id}/commands")]
    assert "201" in statuses[("POST", "/api/enroll-tokens")]
    assert "204" in statuses[("POST", "/api/logout")] and "204" in statuses[("POST", "/api/devices/{device_id}/revoke")]
    assert {"401", "429"} <= statuses[("POST", "/api/login")]
    assert {"101", "426"} <= statuses[("GET", "/api/calls/socket")]
    assert not any(code.endswith("XX") for codes in statuses.values() for code in codes), "no vague ranges"
    login_refused = paths["/api/login"]["post"]["responses"]["429"]
    assert login_refused["headers"]["Retry-After"]["required"] is True
    assert "security" not in paths["/api/login"]["post"]

    body = paths["/api/devices/{device_id}/commands"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    variants = [schemas[v["$ref"].rsplit("/", 1)[-1]] for v in body["anyOf"]]
    assert sorted(k for v in variants for k in v["properties"]["kind"]["enum"]) == sorted(m.COMMAND_KINDS)
    assign = next(v for v in variants if v["properties"]["kind"]["enum"] == ["assign"])
    assert "args" in assign["required"], "an assignment needs its arguments"
    token = schemas["TokenRequest"]["properties"]["server_url"]
    assert token["pattern"].startswith("^https://")
    assert [p["name"] for p in paths["/api/audit"]["get"]["parameters"]] == \
        ["device_id", "actor", "action", "since", "until", "limit", "after"]  # the filters: which unit, who, what, when
    assert "never a name typed" in schemas["AuditEntry"]["properties"]["actor"]["description"]


def test_tampering_with_the_audit_log_is_detected(server: ServerProcess) -> None:
    server.add_admin()
    import sqlalchemy as sa

    from kiosk.server.store import Store, audit
    store = Store.in_directory(server.data)
    with store.tx() as conn:
        conn.execute(sa.update(audit).where(audit.c.seq == 1).values(actor="someone else"))
    store.close()
    result = server.cli("audit", "verify", check=False)
    assert result.returncode == 3 and "altered at entry 1" in result.stderr
