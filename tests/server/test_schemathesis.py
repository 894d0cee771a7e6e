"""Schemathesis, a third-party fuzzer, against a live server and its own OpenAPI document.

It runs with every check it has, as each role and as a stranger, with a bounded number of
examples per operation; any 5xx, any answer that breaks the document (an undocumented
status, a body of the wrong shape, a header missing), data the document calls invalid but
the server takes, or valid data it refuses, fails the test with schemathesis's own report.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from kiosk.server import app as _app  # noqa: F401 (registers every route, the staff socket's too)
from kiosk.server.console_api import ROUTES, SESSION_COOKIE
from tests.harness import BIN, Console, ServerProcess, run

ROLES = ("admin", "support", "logistics", "caregiver", "management")
EXAMPLES_PER_OPERATION = 12
# A WebSocket handshake is more than OpenAPI can state: a plain GET of the call socket is
# refused with 426 (documented); the handshake itself is tested in test_hardening.py.
# No cache between runs (each run starts from the same seed and the same nothing).
CONFIG = """
[cache]
enabled = false

[[operations]]
include-path = "/api/calls/socket"
checks.positive_data_acceptance.expected-statuses = ["101", "401", "403", "426"]

# The figures' 'from' must come before 'to', at most three years apart: more than OpenAPI can
# state of two parameters, so a well-formed pair may be refused with 400 (and the reason).
[[operations]]
include-path-regex = "^/api/figures"
checks.positive_data_acceptance.expected-statuses = ["200", "400", "401", "403", "429"]

# A photo must be a PNG, JPEG or WebP picture that can be read: more than OpenAPI can state of
# base64 bytes, so well-formed bytes that are no picture are refused with 400 (and the reason).
[[operations]]
include-path-regex = "/photo$"
checks.positive_data_acceptance.expected-statuses = ["204", "400", "401", "403", "404", "429"]
"""


@pytest.fixture(scope="module")
def sessions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, dict[str, str]]]:
    """A server with one person of each role, all logged in before any guessing starts."""
    srv = ServerProcess(tmp_path_factory.mktemp("fuzz") / "server").start()
    tokens: dict[str, str] = {}
    for role in ROLES:
        srv.add_admin(role, role)
        console = Console(srv.console)
        assert console.login(role) == 200
        token = next(c.value for c in console.cookies() if c.name == SESSION_COOKIE)
        assert token is not None
        tokens[role] = token
    yield srv, tokens
    srv.stop()


@pytest.mark.slow
@pytest.mark.parametrize("role", [*ROLES, None], ids=lambda r: r or "stranger")
def test_schemathesis_finds_nothing(sessions: tuple[ServerProcess, dict[str, str]], role: str | None,
                                    tmp_path: Path) -> None:
    server, tokens = sessions
    # the session as the document's security scheme, so schemathesis also tries without it
    config = tmp_path / "schemathesis.toml"
    config.write_text((f'[auth.openapi.session]\napi_key = "{tokens[role]}"\n' if role else "") + CONFIG)
    result = run(
        BIN / "st", "--config-file", str(config), "run", f"{server.console}/openapi.json", "--checks", "all",
        "--max-examples", str(EXAMPLES_PER_OPERATION), "--seed", "7", "--workers", "1",
        "--phases", "examples,coverage,fuzzing", "--request-timeout", "20", "--no-color",
        # the session must outlive the run; logging out is tested on its own
        "--exclude-path", "/api/logout",
        "--report", "junit", "--report-dir", str(tmp_path),
        check=False, timeout=400, env={"COLUMNS": "160"},
    )
    assert result.returncode == 0, result.stdout[-12000:] + result.stderr[-3000:]
    counts = re.search(r"(\d+) generated, (\d+) passed", result.stdout)
    assert counts and int(counts[1]) == int(counts[2]) > 100, result.stdout[-3000:]
    assert re.search(r"Tested: (\d+)", result.stdout)[1] == str(len(ROUTES) - 1)  # type: ignore[index]
