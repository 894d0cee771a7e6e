"""Wipe and reissue, including a power cut (SIGKILL) between every two steps of a wipe."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable

import pytest
from cryptography import x509

from kiosk.protocol import messages as m
from kiosk.protocol import signing
from kiosk.protocol.wipe_journal import WipeStep
from kiosk.server.commands import device_public_key
from tests.harness import AgentProcess, ServerProcess, wait_until

pytestmark = pytest.mark.both_databases  # the server on SQLite, and again on PostgreSQL


def _assign(server: ServerProcess, device_id: str, name: str = "Karen Jensen") -> None:
    view = server.wait_command(server.send(device_id, "assign", f"citizen_name={name}",
                                           "contact_staff=Anne (sygeplejerske),Bo (hjemmehjælper)"))
    assert view["state"] == "done", view


def _citizen_files(agent: AgentProcess) -> list[str]:
    return sorted(p.name for p in (agent.state / "citizen").iterdir()) + \
        sorted(p.name for p in (agent.state / "keys").iterdir())


def _verify_receipt(server: ServerProcess, view: dict[str, object]) -> m.WipeReceipt:
    """Check the receipt as an auditor would: signature against the device certificate."""
    store = server.store()
    row, device = store.command(str(view["id"])), store.device(str(view["device_id"]))
    store.close()
    assert row is not None and row.result_envelope is not None and device is not None
    cert_pem = device.cert_pem
    envelope: m.SignedEnvelope = m.Codec(m.SignedEnvelope).decode(row.result_envelope)
    result = signing.open_result(envelope, device_public_key(cert_pem))
    cn = x509.load_pem_x509_certificate(cert_pem.encode()).subject.rfc4514_string()
    assert str(view["device_id"]) in cn
    assert result.kind == "wipe" and result.outcome == "ok"
    return m.convert(result.detail, m.WipeReceipt)


def test_wipe_erases_citizen_data_proves_it_and_unit_is_reissued(
        server: ServerProcess, online_agent: tuple[AgentProcess, str]) -> None:
    agent, device_id = online_agent
    _assign(server, device_id)
    assert agent.status()["state"] == "assigned"
    assert _citizen_files(agent) == ["assignment.bin", "assignment.key"]
    assert b"Karen" not in (agent.state / "citizen" / "assignment.bin").read_bytes(), "stored in the clear"
    assert "Karen" not in agent.log() and "Karen" not in server.log(), "personal data in a log"
    assert "Karen" not in server.cli("audit", "list", "--json").stdout
    assert server.wait_command(server.send(device_id, "set-config", "staff_pin=4711", "volume=9"))["state"] == "done"
    assert (agent.state / "ui.json").exists()

    view = server.wait_command(server.send(device_id, "wipe"))
    assert view["state"] == "done" and view["result_verified"]
    receipt = _verify_receipt(server, view)
    assert "assignment-key" in receipt.erased and "citizen-data" in receipt.erased
    assert receipt.key_fingerprint and not receipt.resumed_after_interruption
    assert receipt.intent_at <= receipt.finished_at

    assert _citizen_files(agent) == []
    assert not (agent.state / "ui.json").exists(), "a wipe resets the screen's settings (the staff PIN too)"
    status = agent.status()
    assert status["state"] == "enrolled-unassigned" and status["server_online"], "stays enrolled and pinned"
    audit = json.loads(server.cli("audit", "list", "--json").stdout)
    assert next(e for e in audit if e["action"] == "wipe-receipt")["detail"]["receipt"]["erased"] == receipt.erased
    assert server.cli("audit", "verify").returncode == 0

    _assign(server, device_id, "Næste Borger")  # reissued from the console, nobody touches the unit
    assert agent.status()["state"] == "assigned"


def test_assigning_an_assigned_unit_is_refused(server: ServerProcess, online_agent: tuple[AgentProcess, str]) -> None:
    _, device_id = online_agent
    _assign(server, device_id)
    view = server.wait_command(server.send(device_id, "assign", "citizen_name=Another"))
    assert view["state"] == "failed" and "wipe it before" in view["reason"]


@pytest.mark.slow
@pytest.mark.parametrize("step", list(WipeStep))
def test_wipe_resumes_after_power_cut(step: WipeStep, server: ServerProcess,
                                      start_agent: Callable[..., AgentProcess]) -> None:
    agent = start_agent(env={"KIOSK_FAILPOINTS": f"wipe:{step}"})
    device_id = agent.wait_online()
    _assign(server, device_id)
    command_id = server.send(device_id, "wipe")
    assert agent.proc is not None
    assert agent.proc.wait(20) == -signal.SIGKILL, "the failpoint should have cut the power"
    journal = (agent.state / "wipe.journal").read_text()
    assert f'"step": "{step}"' in journal

    agent.env = {}
    status = agent.status()  # not running: read from disk
    assert status["state"] == ("wipe-pending" if step is not WipeStep.RECEIPT_SIGNED else "enrolled-unassigned")
    agent.start()
    view = server.wait_command(command_id, timeout=30)
    assert view["state"] == "done" and view["result_verified"], view
    receipt = _verify_receipt(server, view)
    assert receipt.resumed_after_interruption == (step is not WipeStep.RECEIPT_SIGNED)
    assert receipt.key_fingerprint, "the receipt names the destroyed key even after a resume"
    assert _citizen_files(agent) == []
    assert agent.status()["state"] == "enrolled-unassigned"
    wiped = [e for e in agent.audit() if e["event"] == "wiped"]
    assert wiped and wiped[-1]["command_id"] == command_id
    wait_until(lambda: not list((agent.state / "outbox").iterdir()), 10, what="outbox emptied")
