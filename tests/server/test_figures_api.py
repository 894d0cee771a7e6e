"""Management's figures on a real server: calls placed by a caregiver through the call socket
to a real unit and visits planned through the API show up in the figures of the day and of
the caregiver's team; the CSV holds the same cells; only management and administrators see them."""

from __future__ import annotations

import asyncio
import csv
import io
import urllib.request
from datetime import datetime, time
from zoneinfo import ZoneInfo

from kiosk.protocol import messages as m
from tests.harness import ADMIN_PASSWORD, AgentProcess, Console, ServerProcess
from tests.staff_client import StaffClient

CALLS = 6
TZ = ZoneInfo("Europe/Copenhagen")


def test_figures_match_the_calls_made_and_the_csv_matches_the_page(
        server: ServerProcess, online_agent: tuple[AgentProcess, str]) -> None:
    _, device_id = online_agent
    server.cli("user", "add", "anne", "--role", "caregiver", "--team", "Hjemmeplejen Nord", "--password-stdin",
               stdin=ADMIN_PASSWORD + "\n")
    server.cli("user", "add", "mette", "--role", "management", "--password-stdin", stdin=ADMIN_PASSWORD + "\n")
    citizen_id = server.add_citizen("Karen Jensen", device_id, "anne")

    async def calls() -> list[str]:
        """No screen app runs on the unit: each call ends at once, 'screen not running'."""
        reasons = []
        async with StaffClient(server.console) as anne:
            await anne.login("anne")
            await anne.connect()
            for _ in range(CALLS):
                await anne.send(m.CallStart(citizen_id=citizen_id))
                await anne.expect(m.CallPlaced)
                reasons.append((await anne.expect(m.CallEnded, timeout=10)).reason)
        return reasons

    assert asyncio.run(calls()) == ["screen_not_running"] * CALLS
    today = datetime.now(TZ).date()
    caregiver = Console(server.console)
    assert caregiver.login("anne") == 200
    for i in range(5):  # five visits later today, planned on the console
        at = datetime.combine(today, time(20, i), tzinfo=TZ).timestamp()
        status, _ = caregiver.request("POST", f"/api/citizens/{citizen_id}/visits",
                                      {"at": at, "staff_name": "Anne", "staff_role": "Sygeplejerske"},
                                      headers={"Origin": server.console})
        assert status == 201
    assert caregiver.request("GET", "/api/figures")[0] == 403, "a caregiver sees no figures"

    manager = Console(server.console)
    assert manager.login("mette") == 200
    status, body = manager.request("GET", f"/api/figures?period=day&from={today}&to={today}")
    assert (status, body["error"]) == (400, "invalid"), "'from' must come before 'to', and says so"
    query = f"?period=day&from={today}"
    status, found = manager.request("GET", "/api/figures" + query)
    assert status == 200, found
    rows = {(r["period"], r["team"]): r for r in found["rows"]}
    for team in ("*", "Hjemmeplejen Nord"):
        row = rows[today.isoformat(), team]
        assert (row["planned"], row["made"], row["failed"]) == (5, "< 5", CALLS), row
        assert row["failed_by_cause"]["screen_not_running"] == CALLS and row["unanswered"] == "< 5"
        assert row["mean_minutes"] is None and row["share_on_screen"] == "< 5"
    assert found["citizens_with_unit"] == {"*": "< 5", "Hjemmeplejen Nord": "< 5"}, "one citizen: hidden"

    request = urllib.request.Request(server.console + "/api/figures.csv" + query)
    with manager.opener.open(request, timeout=20) as answer:
        assert answer.headers["Content-Type"].startswith("text/csv")
        assert "attachment" in answer.headers["Content-Disposition"]
        table = list(csv.DictReader(io.StringIO(answer.read().decode())))
    assert [(r["period"], r["team"], r["planned"], r["made"], r["failed"], r["failed_screen_not_running"])
            for r in table] == [(r["period"], r["team"], str(r["planned"]), str(r["made"]), str(r["failed"]),
                                 str(r["failed_by_cause"]["screen_not_running"])) for r in found["rows"]]
