"""Signed commands through the real server to a real agent, and the refusals the agent makes.

Replays, expired and misaddressed commands cannot come from an honest server, so these
tests play a compromised server: they write signed envelopes straight into its database.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
import urllib.request
import uuid

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from kiosk.protocol import messages as m
from kiosk.protocol import signing
from kiosk.server.store import commands
from tests.harness import AgentProcess, ServerProcess, wait_until

pytestmark = pytest.mark.both_databases  # the server on SQLite, and again on PostgreSQL


def test_diagnostics_round_trip_with_verified_result(
        server: ServerProcess, online_agent: tuple[AgentProcess, str]) -> None:
    _, device_id = online_agent
    view = server.wait_command(server.send(device_id, "diagnostics"))
    assert view["state"] == "done" and view["result_verified"] is True
    checks = {c["name"]: c for c in view["result"]["detail"]["checks"]}
    assert {"versions", "uptime", "memory", "disk", "network", "server-link", "clock-sync", "camera",
            "microphone", "ui", "cpu-temperature", "wifi"} <= set(checks)
    assert all(c["status"] in ("OK", "WARN", "FAIL") and c["detail"] for c in checks.values())
    assert checks["server-link"]["status"] in ("OK", "WARN")
    assert checks["ui"]["status"] == "FAIL", "no UI runs in this test; the check must say so"


def test_logs_set_config_restart_and_reboot_are_recorded_not_done(
        server: ServerProcess, online_agent: tuple[AgentProcess, str]) -> None:
    agent, device_id = online_agent
    logs = server.wait_command(server.send(device_id, "logs", "lines=5"))
    assert logs["state"] == "done" and 0 < len(logs["result"]["detail"]["lines"]) <= 5
    assert all(json.loads(line)["msg"] for line in logs["result"]["detail"]["lines"])

    done = server.wait_command(server.send(device_id, "set-config", "volume=4", "language=en", "staff_pin=0246"))
    assert done["state"] == "done", done
    # ui.json, for the screen: "0246" stays a PIN (text), "4" is a volume (a number)
    assert json.loads((agent.state / "ui.json").read_text()) == {"volume": 4, "language": "en", "staff_pin": "0246"}
    for bad, words in (("volume=400", "volume"), ("colour=red", "unknown setting 'colour'"),
                       ("staff_pin=12", "staff_pin")):
        refused = server.cli("command", "send", device_id, "set-config", "--arg", bad, check=False)
        assert refused.returncode != 0 and words in refused.stderr, refused  # refused before it is signed
    for kind in ("restart-ui", "reboot"):
        assert server.wait_command(server.send(device_id, kind))["state"] == "done"
    actions = wait_until(lambda: (agent.state / "system-actions.log").exists()
                         and [json.loads(x)["action"]
                              for x in (agent.state / "system-actions.log").read_text().splitlines()],
                         10, what="recorded system actions")
    assert "restart-ui" in actions
    wait_until(lambda: "reboot" in (agent.state / "system-actions.log").read_text(), 10, what="reboot recorded")


def test_bad_arguments_are_refused_at_the_cli(server: ServerProcess, online_agent: tuple[AgentProcess, str]) -> None:
    _, device_id = online_agent
    for args, expect in ((["nonsense"], "unknown command"), (["logs", "--arg", "lines=many"], "arguments for logs"),
                         (["assign"], "citizen_name"), (["ping", "--arg", "novalue"], "KEY=VALUE")):
        result = server.cli("command", "send", device_id, *args, check=False)
        assert result.returncode != 0 and expect in result.stderr, (args, result.stderr)
    unknown = server.cli("command", "send", str(uuid.uuid4()), "ping", check=False)
    assert unknown.returncode != 0 and "no device" in unknown.stderr


def test_command_to_offline_unit_waits_then_expires(
        server: ServerProcess, online_agent: tuple[AgentProcess, str]) -> None:
    agent, device_id = online_agent
    agent.stop()
    short = server.send(device_id, "ping", expires="4s")
    later = server.send(device_id, "ping", expires="1h")
    # Only the long-lived one is sure to be still pending here: on a loaded machine the
    # CLI alone can take 4 s. (The exact expiry moment is tested on a set clock in
    # tests/server/test_store.py and test_hub.py.)
    assert server.show(later)["state"] == "pending"
    assert server.wait_command(short, ("expired",), timeout=30)["state"] == "expired"
    assert server.show(later)["state"] == "pending"
    agent.start()
    assert server.wait_command(later)["state"] == "done"
    assert server.show(short)["state"] == "expired", "an expired command is never delivered"
    assert not any(e.get("command_id") == short for e in agent.audit())


def _inject(server: ServerProcess, device_id: str, envelope: m.SignedEnvelope, command_id: str | None = None) -> str:
    """Put a signed envelope in the server's queue, as a compromised server could."""
    store = server.store()
    row_id = command_id or str(uuid.uuid4())
    with store.tx() as conn:
        store.add_command(conn, row_id, device_id, "ping", m.encode(envelope), "attacker", time.time() + 3600)
    store.close()
    return row_id


def _command_key(server: ServerProcess) -> ed25519.Ed25519PrivateKey:
    key = serialization.load_pem_private_key((server.data / "command.key").read_bytes(), None)
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    return key


def _refusals(agent: AgentProcess) -> list[str]:
    return [e["reason"] for e in agent.audit() if e["event"] == "command-refused"]


def test_replayed_command_is_refused(server: ServerProcess, online_agent: tuple[AgentProcess, str]) -> None:
    agent, device_id = online_agent
    first = server.send(device_id, "ping")
    assert server.wait_command(first)["state"] == "done"
    store = server.store()
    with store.tx() as conn:  # the server is made to send the very same signed bytes again
        conn.execute(sa.update(commands).where(commands.c.id == first).values(
            state="pending", outcome=None, result=None, result_envelope=None, finished_at=None))
    store.close()
    agent.stop()  # on the next connection the server delivers everything pending
    agent.start()
    view = server.wait_command(first)
    assert view["state"] == "failed" and view["outcome"] == "refused"
    assert view["reason"].startswith("replay") and view["result_verified"]
    assert "replay" in _refusals(agent)


def test_expired_and_misaddressed_commands_are_refused(
        server: ServerProcess, online_agent: tuple[AgentProcess, str]) -> None:
    agent, device_id = online_agent
    key, now = _command_key(server), time.time()
    stale = m.Command(id=str(uuid.uuid4()), device_id=device_id, issued_at=now - 7200, expires_at=now - 3600,
                      action=m.Ping())
    view = server.wait_command(_inject(server, device_id, signing.seal(key, stale), stale.id))
    assert view["outcome"] == "refused" and view["reason"].startswith("expired")

    other = m.Command(id=str(uuid.uuid4()), device_id=str(uuid.uuid4()), issued_at=now, expires_at=now + 600,
                      action=m.Wipe())
    view = server.wait_command(_inject(server, device_id, signing.seal(key, other), other.id))
    assert view["outcome"] == "refused" and view["reason"].startswith("wrong-device")
    assert agent.status()["state"] == "enrolled-unassigned", "a wipe for another unit must not run"
    assert {"expired", "wrong-device"} <= set(_refusals(agent))


def test_forged_command_is_refused_and_never_runs(
        server: ServerProcess, online_agent: tuple[AgentProcess, str]) -> None:
    agent, device_id = online_agent
    assert server.wait_command(server.send(device_id, "assign", "citizen_name=Test Borger"))["state"] == "done"
    forger = ed25519.Ed25519PrivateKey.generate()
    now = time.time()
    forged = m.Command(id=str(uuid.uuid4()), device_id=device_id, issued_at=now, expires_at=now + 600,
                       action=m.Wipe())
    row = _inject(server, device_id, signing.seal(forger, forged), forged.id)
    wait_until(lambda: "bad-signature" in _refusals(agent), 15, what="forged command refused")
    assert server.show(row)["state"] == "pending", "no result is sent for a command not from our server"
    assert agent.status()["state"] == "assigned"
    assert "rejected our message" not in server.log()


def _device_tls(agent: AgentProcess) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(agent.state / "identity" / "ca.pem"))
    ctx.load_cert_chain(agent.state / "identity" / "device.crt", agent.state / "identity" / "device.key")
    return ctx


def test_bad_messages_are_rejected_and_the_connection_survives(
        server: ServerProcess, online_agent: tuple[AgentProcess, str]) -> None:
    agent, _ = online_agent
    agent.stop()  # we speak for the unit ourselves, with its real certificate

    async def talk() -> list[m.ServerToDevice]:
        replies: list[m.ServerToDevice] = []
        url = server.url.replace("https", "wss") + "/api/v1/socket"
        async with connect(url, ssl=_device_tls(agent), max_size=None) as ws:
            # offered (the client's default), declined: ~300 KiB of zlib state a unit saved
            assert ws.response is not None and "Sec-WebSocket-Extensions" not in ws.response.headers
            assert isinstance(m.SERVER_TO_DEVICE.decode(await ws.recv()), m.Welcome)
            for bad in ("not json", '{"type": "launch-missiles"}', '{"type": "heartbeat"}',
                        json.dumps({"type": "hello", "agent_version": "x" * 300_000, "state": "assigned",
                                    "ui_alive": True})):
                await ws.send(bad)
                replies.append(m.SERVER_TO_DEVICE.decode(await asyncio.wait_for(ws.recv(), 10)))
            await ws.send(m.encode(m.Heartbeat(seq=7, sent_at=time.time(), state="enrolled-unassigned",
                                               ui_alive=False)).decode())
            replies.append(m.SERVER_TO_DEVICE.decode(await asyncio.wait_for(ws.recv(), 10)))
        return replies

    replies = asyncio.run(talk())
    assert [r.reason for r in replies[:4] if isinstance(r, m.Rejected)] == ["malformed", "unknown-type", "invalid",
                                                                           "oversized"]
    assert isinstance(replies[4], m.HeartbeatAck) and replies[4].seq == 7


def test_socket_without_certificate_is_refused(server: ServerProcess) -> None:
    async def attempt() -> int:
        ctx = ssl.create_default_context(cafile=str(server.data / "ca.crt"))
        try:
            async with connect(server.url.replace("https", "wss") + "/api/v1/socket", ssl=ctx):
                return 101
        except InvalidStatus as exc:
            return int(getattr(getattr(exc, "response", None), "status_code", 0))

    assert asyncio.run(attempt()) == 401


def test_ca_is_public_on_the_device_port(server: ServerProcess) -> None:
    ctx = ssl.create_default_context(cafile=str(server.data / "ca.crt"))
    with urllib.request.urlopen(server.url + "/ca.pem", context=ctx, timeout=10) as resp:
        assert resp.read() == (server.data / "ca.crt").read_bytes()
