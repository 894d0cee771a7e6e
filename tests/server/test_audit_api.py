"""The audit log for administrators on a real server: filters (who, what, which unit, when)
that each narrow the answer, and the hash chain's check, which finds an edited entry."""

from __future__ import annotations

import sqlalchemy as sa

from kiosk.server.store import Store, audit
from tests.harness import Console, ServerProcess


def test_filters_narrow_the_log_and_the_chain_check_finds_an_edit(server: ServerProcess) -> None:
    server.add_admin()
    server.add_admin("sara", "support")
    admin, support = Console(server.console), Console(server.console)
    assert admin.login() == 200 and support.login("sara") == 200
    assert support.request("GET", "/api/calls")[0] == 403
    assert support.request("POST", "/api/enroll-tokens", {"server_url": server.url},
                           headers={"Origin": server.console})[0] == 403
    status, everything = admin.request("GET", "/api/audit?limit=1000")
    assert status == 200 and len(everything) >= 5

    status, logins = admin.request("GET", "/api/audit?action=login")
    assert status == 200 and [e["actor"] for e in logins] == ["admin", "sara"]
    status, by_sara = admin.request("GET", "/api/audit?actor=sara")
    assert {e["action"] for e in by_sara} == {"login", "access-refused"}
    middle = logins[1]["at"]
    status, later = admin.request("GET", f"/api/audit?since={middle}")
    assert later and all(e["at"] >= middle for e in later) and len(later) < len(everything)
    status, earlier = admin.request("GET", f"/api/audit?until={middle}")
    assert earlier and all(e["at"] < middle for e in earlier)
    assert len(earlier) + len(later) == len(everything), "since and until split the log without a gap"
    assert admin.request("GET", "/api/audit?device_id=00000000-0000-0000-0000-000000000000")[1] == []
    status, body = admin.request("GET", "/api/audit?since=yesterday")
    assert (status, body["error"]) == (400, "invalid")

    status, chain = admin.request("GET", "/api/audit/chain")
    assert status == 200 and chain["intact"] is True and chain["first_altered"] is None
    assert chain["entries"] == len(admin.request("GET", "/api/audit?limit=1000")[1])
    assert support.request("GET", "/api/audit/chain")[0] == 403, "the check is the administrators'"

    store = Store.in_directory(server.data)
    with store.tx() as conn:
        conn.execute(sa.update(audit).where(audit.c.seq == 3).values(detail='{"peer": "10.9.8.7"}'))
    store.close()
    status, chain = admin.request("GET", "/api/audit/chain")
    assert status == 200 and chain["intact"] is False and chain["first_altered"] == 3
