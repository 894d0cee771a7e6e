"""The console API for logistics, support and caregivers, on a real server with a real unit:
units by state with search, batches with their printable sheet, assignment, a unit's page
for support (without the citizen), a citizen's calls, and the pre-visit warnings."""

from __future__ import annotations

import base64
import contextlib
import re
import subprocess
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import zxingcpp
from PIL import Image

from kiosk.server import sheet
from tests.harness import AgentProcess, Console, ServerProcess, wait_until


def _people(server: ServerProcess) -> tuple[Console, Console, Console]:
    server.add_admin("lis", "logistics")
    server.add_admin("sara", "support")
    server.add_admin("anne", "caregiver", "Anne, sygeplejerske")
    logistics, support, caregiver = Console(server.console), Console(server.console), Console(server.console)
    assert logistics.login("lis") == support.login("sara") == caregiver.login("anne") == 200
    return logistics, support, caregiver


def page_text(pdf: bytes) -> Iterator[bytes]:
    """The PDF's drawing streams, unpacked (the QR codes' images are read by scanning them)."""
    for stream in re.findall(rb"stream\r?\n(.*?)\r?\nendstream", pdf, re.S):
        with contextlib.suppress(zlib.error):
            yield zlib.decompress(stream)


def scanned_qr_codes(pdf: bytes, tmp_path: Path) -> list[str]:
    """The sheet as a printer sees it (poppler at 150 dpi), read by a barcode scanner (ZXing)."""
    (tmp_path / "sheet.pdf").write_bytes(pdf)
    subprocess.run(["pdftoppm", "-r", "150", "-png", str(tmp_path / "sheet.pdf"), str(tmp_path / "page")],
                   check=True, timeout=60)
    qr = zxingcpp.BarcodeFormats(zxingcpp.BarcodeFormat.QRCode)
    return [code.text for page in sorted(tmp_path.glob("page*.png"))
            for code in zxingcpp.read_barcodes(Image.open(page), formats=qr)]


def test_a_batch_gives_provisioning_files_and_a_sheet_with_one_qr_code_per_unit(
        server: ServerProcess, tmp_path: Path) -> None:
    logistics, support, _ = _people(server)
    status, batch = logistics.request("POST", "/api/enroll-batches", {"server_url": server.url, "count": 3})
    assert status == 201 and len(batch["files"]) == 3
    assert all("token:" in f["content"] for f in batch["files"])
    pdf = base64.b64decode(batch["sheet_pdf"])
    assert pdf.startswith(b"%PDF-")
    drawn = b"".join(page_text(pdf))
    for n in (1, 2, 3):
        assert f"Enhed {n} af 3".encode() in drawn
    assert sorted(scanned_qr_codes(pdf, tmp_path)) == sorted(f["content"] for f in batch["files"]), \
        "printed and scanned, each unit's QR code gives back its own provisioning file"
    assert batch["expires_at"] > time.time() + 6 * 24 * 3600

    status, refused = logistics.request("POST", "/api/enroll-batches", {"server_url": "http://plain", "count": 2})
    assert status == 400 and "server_url" in refused["message"]
    for count in (0, sheet.MAX_UNITS + 1):
        status, refused = logistics.request("POST", "/api/enroll-batches", {"server_url": server.url, "count": count})
        assert status == 400 and "count" in refused["message"]
    assert support.request("POST", "/api/enroll-batches", {"server_url": server.url})[0] == 403
    [refusal] = [e for e in server.cli_json("audit", "list") if e["action"] == "access-refused"]
    assert refusal["actor"] == "sara" and refusal["detail"]["route"] == "/api/enroll-batches", "403s are logged"


def test_units_by_state_assignment_and_what_support_sees(
        server: ServerProcess, online_agent: tuple[AgentProcess, str]) -> None:
    _, device_id = online_agent
    logistics, support, caregiver = _people(server)

    status, ready = logistics.request("GET", "/api/units?state=enrolled-unassigned")
    assert status == 200 and [u["id"] for u in ready] == [device_id] and ready[0]["connection"] == "online"
    assert logistics.request("GET", "/api/units?state=assigned")[1] == []
    assert logistics.request("GET", f"/api/units?q={device_id[:6].upper()}")[1][0]["id"] == device_id
    assert logistics.request("GET", "/api/units?q=no-such-unit")[1] == []
    assert logistics.request("GET", "/api/units?state=enrolled-unassigned&offset=1")[1] == [], "a page at a time"
    for query in ("state=lost-in-the-post", "state=null", "state=assigned&state=wiped"):
        status, refused = logistics.request("GET", f"/api/units?{query}")
        assert status == 400 and "state" in refused["message"], query

    body = {"citizen_name": "Karen Jensen", "caregivers": ["anne"]}
    assert support.request("POST", f"/api/units/{device_id}/assign", body)[0] == 403
    status, refused = logistics.request("POST", f"/api/units/{device_id}/assign", {**body, "caregivers": ["nobody"]})
    assert status == 404 and "nobody" in refused["message"]
    status, assigned = logistics.request("POST", f"/api/units/{device_id}/assign", body)
    assert status == 201
    assert server.wait_command(assigned["command_id"])["state"] == "done"
    status, again = logistics.request("POST", f"/api/units/{device_id}/assign", body)
    assert status == 409 and "wipe it first" in again["message"]
    wait_until(lambda: logistics.request("GET", "/api/units?state=assigned")[1], 10, 0.2, what="the unit assigned")

    # the caregiver now has the citizen; a planned visit goes to the screen
    assert [c["name"] for c in caregiver.request("GET", "/api/citizens")[1]] == ["Karen Jensen"]
    assert caregiver.request("GET", "/api/citizens?offset=1")[1] == [], "a page at a time"
    caregiver.request("POST", f"/api/citizens/{assigned['citizen_id']}/visits",
                      {"at": time.time() + 3600, "staff_name": "Anne", "staff_role": "sygeplejerske"})

    diag = support.request("POST", f"/api/devices/{device_id}/commands", {"kind": "diagnostics"})[1]
    server.wait_command(diag["id"])
    status, detail = support.request("GET", f"/api/units/{device_id}")
    assert status == 200 and detail["unit"]["state"] == "assigned"
    assert {c["name"] for c in detail["diagnostics"]} >= {"camera", "microphone", "ui"}
    assert all(c["status"] in ("OK", "WARN", "FAIL") and c["detail"] for c in detail["diagnostics"])
    kinds = [c["kind"] for c in detail["commands"]]
    assert "diagnostics" in kinds and "assign" in kinds and "schedule" not in kinds, "no trace of the visit plan"
    assert "Karen" not in str(detail) and "Anne" not in str(detail), "support never sees whom a unit belongs to"
    assert support.request("GET", "/api/units/not-a-unit")[0] == 404

    # collect and wipe: the receipt is on the unit's page, verified against the unit's certificate
    wipe = logistics.request("POST", f"/api/devices/{device_id}/commands", {"kind": "wipe"})[1]
    server.wait_command(wipe["id"])
    receipt = logistics.request("GET", f"/api/units/{device_id}")[1]["wipe"]
    assert receipt["state"] == "done" and receipt["result_verified"] is True
    assert "citizen-data" in receipt["result"]["detail"]["erased"]


def test_approve_and_reject_are_for_units_awaiting_approval_only(
        server: ServerProcess, online_agent: tuple[AgentProcess, str]) -> None:
    _, device_id = online_agent
    logistics, support, _ = _people(server)
    assert support.request("POST", f"/api/units/{device_id}/approve", {})[0] == 403
    status, refused = logistics.request("POST", f"/api/units/{device_id}/approve", {})
    assert status == 404 and refused["error"] == "not-awaiting"


def test_a_citizens_calls_are_for_their_care_team(server: ServerProcess,
                                                   online_agent: tuple[AgentProcess, str]) -> None:
    _, device_id = online_agent
    _, support, caregiver = _people(server)
    server.add_admin("bo", "caregiver")
    citizen_id = server.add_citizen("Karen Jensen", device_id, "anne")
    bo = Console(server.console)
    bo.login("bo")
    assert caregiver.request("GET", f"/api/citizens/{citizen_id}/calls") == (200, [])
    assert bo.request("GET", f"/api/citizens/{citizen_id}/calls")[0] == 404
    assert support.request("GET", f"/api/citizens/{citizen_id}/calls")[0] == 403


def test_the_pre_visit_check_warns_when_the_screen_is_off(
        server: ServerProcess, online_agent: tuple[AgentProcess, str]) -> None:
    agent, device_id = online_agent
    _, _, caregiver = _people(server)
    citizen_id = server.add_citizen("Karen Jensen", device_id, "anne")
    caregiver.request("POST", f"/api/citizens/{citizen_id}/visits",
                      {"at": time.time() + 300, "staff_name": "Anne", "staff_role": "sygeplejerske"})
    # online: the server asks the unit for fresh diagnostics before the visit; this unit has no
    # screen app running and no camera or microphone, and the caregiver is told each of these
    wait_until(lambda: [e for e in server.cli_json("audit", "list") if e["action"] == "command-queued"
                        and e["actor"] == "server" and e["detail"]["kind"] == "diagnostics"], 90, 0.5,
               what="the server's own diagnostics before the visit")
    warned = wait_until(lambda: [w for w in caregiver.request("GET", "/api/pre-visit-warnings")[1]
                                 if "no-camera" in w["reasons"]], 30, 0.3, what="the unit's diagnostics judged")
    assert warned[0]["reasons"] == ["screen-app-down", "no-camera", "no-microphone"]

    agent.stop()
    warnings = wait_until(lambda: [w for w in caregiver.request("GET", "/api/pre-visit-warnings")[1]
                                   if w["reasons"] == ["offline"]], 20, 0.2, what="a warning once the unit is off")
    assert warnings[0]["citizen_id"] == citizen_id and warnings[0]["last_seen"] is not None
