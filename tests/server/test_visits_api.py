"""The console API for planned visits: caregivers plan for their own citizens only, every
change goes to the citizen's screen as a signed command, bad input is refused whole."""

from __future__ import annotations

import time
from typing import Any

from tests.harness import AgentProcess, Console, ServerProcess


def _schedule_commands(server: ServerProcess) -> list[str]:
    return [e["detail"]["command_id"] for e in server.cli_json("audit", "list", "--limit", "500")
            if e["action"] == "command-queued" and e["detail"].get("kind") == "schedule"]


def test_caregivers_plan_visits_for_their_own_citizens_and_the_screen_gets_each_change(
        server: ServerProcess, online_agent: tuple[AgentProcess, str]) -> None:
    _, device_id = online_agent
    server.add_admin("anne", "caregiver", "Anne, sygeplejerske")
    server.add_admin("bo", "caregiver")
    server.add_admin("sara", "support")
    citizen_id = server.add_citizen("Karen Jensen", device_id, "anne")
    anne, bo, sara = Console(server.console), Console(server.console), Console(server.console)
    assert anne.login("anne") == bo.login("bo") == sara.login("sara") == 200
    path = f"/api/citizens/{citizen_id}/visits"
    at = round(time.time()) + 3600.0
    visit: dict[str, Any] = {"at": at, "staff_name": "Anne", "staff_role": "natsygeplejerske", "repeat": "daily"}

    status, added = anne.request("POST", path, visit)
    assert status == 201 and added["at"] == at and added["citizen_id"] == citizen_id and added["kind"] == ""
    sent = _schedule_commands(server)
    assert len(sent) == 1 and server.wait_command(sent[0])["state"] == "done"

    # Not in Bo's care: to him the citizen and the visit do not exist. Support has no say.
    for method, where, body in (("GET", path, None), ("POST", path, visit),
                                ("PATCH", f"/api/visits/{added['id']}", {"at": at}),
                                ("POST", f"/api/visits/{added['id']}/cancel", {})):
        status, refused = bo.request(method, where, body)
        assert status == 404 and refused["error"] in ("unknown-citizen", "unknown-visit"), (method, refused)
        assert sara.request(method, where, body)[0] == 403

    for bad in ({**visit, "staff_name": ""}, {**visit, "repeat": "hourly"}, {**visit, "at": -1},
                {**visit, "colour": "red"}, {"at": at}):
        status, refused = anne.request("POST", path, bad)
        assert status == 400 and refused["message"], (bad, refused)
    assert anne.request("POST", "/api/citizens/nobody/visits", visit)[0] == 404

    status, moved = anne.request("PATCH", f"/api/visits/{added['id']}", {"at": at + 600})
    assert status == 200 and moved["at"] == at + 600
    assert [v["id"] for v in anne.request("GET", path)[1]] == [added["id"]]
    assert anne.request("POST", f"/api/visits/{added['id']}/cancel", {})[0] == 204
    assert anne.request("GET", path) == (200, [])
    sent = _schedule_commands(server)
    assert len(sent) == 3 and all(server.wait_command(c)["state"] == "done" for c in sent)

    audit = server.cli("audit", "list", "--limit", "500", "--json").stdout
    assert all(f'"{a}"' in audit for a in ("visit-added", "visit-moved", "visit-cancelled"))
    assert "Karen" not in audit and "natsygeplejerske" not in audit, "personal data in the audit log"
