"""Enrollment and pinning, with the real server and agents as processes on loopback."""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.harness import BIN, AgentProcess, ServerProcess, run, wait_until

pytestmark = pytest.mark.both_databases  # the server on SQLite, and again on PostgreSQL


def test_unit_enrolls_connects_and_forgets_its_token(server: ServerProcess,
                                                     start_agent: Callable[..., AgentProcess]) -> None:
    agent = start_agent()
    device_id = agent.wait_online()

    status = agent.status()
    assert status["state"] == "enrolled-unassigned"
    assert status["municipality"] == "Testby Kommune"
    assert status["server"] == server.url
    prov = yaml.safe_load(agent.provision.read_text())  # type: ignore[union-attr]
    assert prov["token"] is None, "the one-time token must be destroyed in the provisioning file"
    assert status["ca_sha256"] == prov["ca_sha256"]
    key = (agent.state / "identity" / "device.key")
    assert key.stat().st_mode & 0o077 == 0, "the device key is readable by others"

    devices = wait_until(lambda: [d for d in server.cli_json("device", "list") if d["online"]], 10,
                         what="device listed online")
    assert [d["id"] for d in devices] == [device_id]
    actions = [e["action"] for e in json.loads(server.cli("audit", "list", "--json").stdout)]
    assert "device-enrolled" in actions
    for name in ("ca.key", "server.key", "command.key") + (("kiosk.db",) if server.database is None else ()):
        assert (server.data / name).stat().st_mode & 0o077 == 0, f"{name} is readable by others"


def _csr() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kiosk-device")]))
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def _enroll_once(state: Path, provision: Path) -> subprocess.CompletedProcess[str]:
    return run(BIN / "kiosk-agent", "enroll", "--state", state, "--provision", provision, check=False)


def test_token_works_once(server: ServerProcess, tmp_path: Path) -> None:
    prov = server.provisioning_file(tmp_path / "prov")
    copy = tmp_path / "copy.yaml"
    shutil.copy(prov, copy)  # someone kept a copy of the file before it was used

    first = _enroll_once(tmp_path / "unit1", prov)
    assert first.returncode == 0, first.stderr
    second = _enroll_once(tmp_path / "unit2", copy)  # another unit, so another key
    assert second.returncode == 2
    assert "token-used" in second.stderr and "already been used by another unit" in second.stderr
    assert not (tmp_path / "unit2" / "identity" / "device.crt").exists()
    assert copy.exists() and yaml.safe_load(copy.read_text())["token"], "a refused file is left as it was"
    assert len(server.cli_json("device", "list")) == 1
    refusals = [e["detail"]["reason"] for e in json.loads(server.cli("audit", "list", "--json").stdout)
                if e["action"] == "enrollment-refused"]
    assert refusals == ["token-used"]


def test_expired_token_is_held_for_approval_not_refused(server: ServerProcess, tmp_path: Path) -> None:
    prov = server.expired_provisioning_file(tmp_path / "prov")
    result = _enroll_once(tmp_path / "unit", prov)
    assert result.returncode == 3, "not refused for good: a retry after approval can cure it"
    assert "awaiting-approval" in result.stderr and "approve" in result.stderr
    assert yaml.safe_load(prov.read_text())["token"], "a waiting unit keeps its token"


def test_unit_given_a_certificate_but_never_connected_is_listed_as_such(server: ServerProcess, tmp_path: Path) -> None:
    result = _enroll_once(tmp_path / "unit", server.provisioning_file(tmp_path / "prov"))  # then the power goes
    assert result.returncode == 0, result.stderr
    [device] = server.cli_json("device", "list")
    assert device["connection"] == "offline", "not stranded yet: it was enrolled a moment ago"
    wait_until(lambda: server.cli_json("device", "list", "--never-connected-after", "1s")[0]["connection"]
               == "never connected", 15, 0.2, what="the unit listed as never connected")
    assert "never connected" in server.cli("device", "list", "--never-connected-after", "1s").stdout


def test_server_answers_bad_enrollment_requests_with_4xx(server: ServerProcess) -> None:
    ctx = ssl.create_default_context(cafile=str(server.data / "ca.crt"))
    cases = [
        (b"not json", 400, "malformed"),
        (b'{"token": "x"}', 400, "invalid"),
        (json.dumps({"token": "A" * 43, "csr_pem": "junk", "agent_version": "1"}).encode(), 400, "invalid-csr"),
        (json.dumps({"token": "A" * 43, "csr_pem": _csr(), "agent_version": "1"}).encode(), 403, "token-unknown"),
        (b"{" + b" " * 40000 + b"}", 400, "oversized"),
    ]
    for body, status, code in cases:
        req = urllib.request.Request(server.url + "/api/v1/enroll", data=body, method="POST")
        try:
            urllib.request.urlopen(req, context=ctx, timeout=10)
            raise AssertionError("accepted a bad enrollment request")
        except urllib.error.HTTPError as exc:
            assert exc.code == status, (body[:40], exc.code)
            assert json.loads(exc.read())["error"] == code


def test_retries_racing_their_first_request_get_the_same_identity(server: ServerProcess, tmp_path: Path) -> None:
    """The same unit (same key) asking four times at once, as an impatient retry would: one device."""
    token = yaml.safe_load(server.provisioning_file(tmp_path / "prov").read_text())["token"]
    body = json.dumps({"token": token, "csr_pem": _csr(), "agent_version": "1"}).encode()
    ctx = ssl.create_default_context(cafile=str(server.data / "ca.crt"))

    def ask(_: int) -> tuple[int, dict[str, Any]]:
        req = urllib.request.Request(server.url + "/api/v1/enroll", data=body, method="POST")
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=30) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(ask, range(4)))
    assert all(status in (200, 503) for status, _ in answers), answers  # 503: "try again", never a refusal
    issued = {(a["device_id"], a["certificate_pem"]) for status, a in answers if status == 200}
    assert len(issued) == 1, "every answer names the same device and certificate"
    assert [d["id"] for d in server.cli_json("device", "list")] == [next(iter(issued))[0]]


def test_valid_token_with_a_bad_csr_is_not_used_up(server: ServerProcess, tmp_path: Path) -> None:
    prov = yaml.safe_load(server.provisioning_file(tmp_path / "prov").read_text())
    ctx = ssl.create_default_context(cafile=str(server.data / "ca.crt"))
    body = json.dumps({"token": prov["token"], "csr_pem": "-----BEGIN nonsense", "agent_version": "1"}).encode()
    req = urllib.request.Request(server.url + "/api/v1/enroll", data=body, method="POST")
    try:
        urllib.request.urlopen(req, context=ctx, timeout=10)
        raise AssertionError("accepted a bad CSR")
    except urllib.error.HTTPError as exc:
        assert exc.code == 400 and json.loads(exc.read())["error"] == "invalid-csr"
    prov_path = tmp_path / "again.yaml"
    prov_path.write_text(yaml.safe_dump(prov))
    assert _enroll_once(tmp_path / "unit", prov_path).returncode == 0, "the token must survive a refused request"


def test_rogue_server_on_the_same_port_is_refused_before_enrollment(server: ServerProcess, tmp_path: Path) -> None:
    prov = server.provisioning_file(tmp_path / "prov")
    server.stop()
    rogue = ServerProcess(tmp_path / "rogue", server.device_port, server.console_port).start("Falsk Kommune")
    try:
        result = _enroll_once(tmp_path / "unit", prov)
        assert result.returncode == 2
        assert "pin-mismatch" in result.stderr and "not this municipality's server" in result.stderr
        assert yaml.safe_load(prov.read_text())["token"], "the token was not spent on the impostor"
        assert rogue.cli_json("device", "list") == []
    finally:
        rogue.stop()


def test_enrolled_unit_refuses_a_rogue_server_and_returns_to_the_real_one(
        server: ServerProcess, start_agent: Callable[..., AgentProcess], tmp_path: Path) -> None:
    agent = start_agent()
    agent.wait_online()
    server.stop()
    rogue = ServerProcess(tmp_path / "rogue", server.device_port, server.console_port).start("Falsk Kommune")
    try:
        wait_until(lambda: "does not chain to this municipality's pinned root" in agent.log(), 20,
                   what="agent to refuse the rogue server")
        assert not agent.status()["server_online"]
        assert "connected" not in rogue.log().split("device port")[-1]
        assert rogue.cli_json("device", "list") == []
    finally:
        rogue.stop()
    server.start()
    agent.wait_online(30)


def test_revoked_unit_is_cut_off_and_refused(server: ServerProcess, online_agent: tuple[AgentProcess, str]) -> None:
    agent, device_id = online_agent
    server.cli("device", "revoke", device_id)
    wait_until(lambda: not agent.status()["server_online"], 10, what="revoked agent to be disconnected")
    wait_until(lambda: "refuses this unit (HTTP 403)" in agent.log(), 15, what="agent to be refused")
    assert "may have been revoked" in agent.log()
    command = server.cli("command", "send", device_id, "ping", check=False)
    assert command.returncode != 0 and "revoked" in command.stderr
