"""Backup and restore with real agents: a server brought back from its backup on an empty
data directory (and an empty database) takes back its units without anyone touching
them; a wrong passphrase or a damaged backup is refused and nothing is written."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.harness import BIN, AgentProcess, ServerProcess, run

pytestmark = [pytest.mark.slow, pytest.mark.both_databases, pytest.mark.timeout(240)]

PASSPHRASE = "hvidløg og rugbrød 2026"


def restore(backup: Path, data: Path, database: str | None, passphrase: str = PASSPHRASE,
            check: bool = True) -> tuple[int, str]:
    args: list[str | Path] = [BIN / "kiosk-server", "restore", "--in", backup, "--data", data, "--passphrase-stdin"]
    args += ["--database", database] if database else []
    done = run(*args, stdin=passphrase + "\n", check=check)
    return done.returncode, done.stdout + done.stderr


def test_a_restored_server_takes_back_its_units(
        server: ServerProcess, start_agent: Callable[..., AgentProcess], database: str | None,
        request: pytest.FixtureRequest, tmp_path: Path) -> None:
    agents = [start_agent(f"unit{i}") for i in range(2)]
    device_ids = [agent.wait_online() for agent in agents]
    before = server.wait_command(server.send(device_ids[0], "ping"))
    assert before["state"] == "done"

    secret = tmp_path / "passphrase"
    secret.write_text(PASSPHRASE + "\n")
    backup = tmp_path / "kiosk.backup"
    out = server.cli("backup", "--out", str(backup), "--passphrase-file", str(secret)).stdout
    assert "wrote" in out and backup.stat().st_mode & 0o077 == 0
    assert b"BEGIN" not in backup.read_bytes() and device_ids[0].encode() not in backup.read_bytes()  # sealed
    server.stop()  # the machine is lost

    fresh_database = request.getfixturevalue("postgres").new_database() if database else None
    data = tmp_path / "new-machine"

    # A wrong passphrase and a damaged copy are refused, and nothing is written anywhere.
    code, text = restore(backup, data, fresh_database, "not the passphrase", check=False)
    assert code == 1 and "wrong passphrase" in text and "Traceback" not in text
    damaged = tmp_path / "damaged.backup"
    sealed = bytearray(backup.read_bytes())
    sealed[len(sealed) // 2] ^= 0x01
    damaged.write_bytes(bytes(sealed))
    code, text = restore(damaged, data, fresh_database, check=False)
    assert code == 1 and "damaged" in text and "Traceback" not in text
    code, text = restore(tmp_path / "passphrase", data, fresh_database, check=False)  # not a backup at all
    assert code == 1 and "not a kiosk-server backup" in text
    assert not data.exists()
    if fresh_database:  # the database was not touched either
        postgres = request.getfixturevalue("postgres")
        tables = "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        assert postgres.sql(tables, fresh_database.rsplit("/", 1)[1]).strip() == "0"

    target_database = request.getfixturevalue("postgres").new_database() if database else None
    code, text = restore(backup, data, target_database)
    assert "restored the backup" in text
    code, text = restore(backup, data, target_database, check=False)  # never over what is there
    assert code == 1 and "not empty" in text

    restored = ServerProcess(data, device_port=server.device_port, database=target_database)
    # "online" as of the backup is no fact about now: the units count as online once they are back
    assert {d["id"]: d["connection"] for d in restored.cli_json("device", "list")} == dict.fromkeys(
        device_ids, "offline")
    restored.start()
    try:
        for agent in agents:
            agent.wait_online(60)
        for device_id in device_ids:  # a new command, signed by the restored command key, is obeyed
            assert restored.wait_command(restored.send(device_id, "ping"), timeout=40)["state"] == "done"
        assert restored.show(before["id"])["state"] == "done"  # the history came along
        assert "audit log intact" in restored.cli("audit", "verify").stdout
    finally:
        restored.stop()
