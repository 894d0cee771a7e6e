"""What the server writes to its log at its most talkative (``serve --log-level DEBUG``, as
support would run it to follow a problem): its own debug lines, and no library's."""

from __future__ import annotations

from pathlib import Path

from tests.harness import BIN, Console, ServerProcess, run


def test_debug_is_the_servers_own_and_no_library_writes_its_statements(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "server", extra_args=["--log-level", "DEBUG"]).start()
    try:
        server.add_admin("anne", "caregiver", "Anne, sygeplejerske")
        anne = Console(server.console)
        assert anne.login("anne") == 200
        assert anne.request("GET", "/api/citizens")[0] == 200
        assert Console(server.console).login("karenjensen", "a guess") == 401  # a name that is no account
        log = server.log()
    finally:
        server.stop()
    # aiosqlite logs every statement with its parameters at DEBUG: one line per statement
    assert "aiosqlite" not in log, [line for line in log.splitlines() if "aiosqlite" in line][:3]
    assert "karenjensen" not in log, "a name typed at the login in the server's log"
    assert " DEBUG kiosk." in log or " INFO kiosk." in log, log[-2000:]


def test_a_log_level_that_does_not_exist_is_refused_plainly(tmp_path: Path) -> None:
    proc = run(BIN / "kiosk-server", "serve", "--data", str(tmp_path / "server"), "--log-level", "LOUD", check=False)
    assert proc.returncode == 2
    assert "invalid choice: 'LOUD'" in proc.stderr
    assert not (tmp_path / "server").exists()
