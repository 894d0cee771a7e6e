"""Call signaling through the real server and agent, where no media is needed:
who may call, an unanswered call, an offline screen, and what the caller is told."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from kiosk.protocol import messages as m
from tests.harness import AgentProcess, ServerProcess
from tests.staff_client import StaffClient

pytestmark = pytest.mark.both_databases  # the server on SQLite, and again on PostgreSQL


@pytest.fixture
def server(tmp_path: Path, database: str | None) -> Iterator[ServerProcess]:  # conftest's, with a short ring
    srv = ServerProcess(tmp_path / "server", extra_args=["--ring-timeout", "3s"], database=database).start()
    yield srv
    srv.stop()


@pytest.fixture
def care(server: ServerProcess, online_agent: tuple[AgentProcess, str]) -> tuple[AgentProcess, str]:
    agent, device_id = online_agent
    server.add_admin("anne", "caregiver", "Anne Hansen")
    server.add_admin("bo", "caregiver", "Bo Berg")
    citizen_id = server.add_citizen("Karen Jensen", device_id, "anne")
    return agent, citizen_id


def test_caregiver_sees_only_her_citizens(server: ServerProcess, care: tuple[AgentProcess, str]) -> None:
    _, citizen_id = care

    async def scenario() -> None:
        async with StaffClient(server.console) as anne, StaffClient(server.console) as bo:
            await anne.login("anne")
            await bo.login("bo")
            assert [c["id"] for c in await anne.citizens()] == [citizen_id]
            assert await bo.citizens() == []

    asyncio.run(scenario())


def test_caller_outside_the_care_team_is_refused(server: ServerProcess, care: tuple[AgentProcess, str]) -> None:
    _, citizen_id = care

    async def scenario() -> m.Rejected:
        async with StaffClient(server.console) as bo:
            await bo.login("bo")
            await bo.connect()
            await bo.send(m.CallStart(citizen_id=citizen_id))
            return await bo.expect(m.Rejected)  # type: ignore[no-any-return]

    refused = asyncio.run(scenario())
    assert refused.reason == "forbidden"
    assert any(e["action"] == "call-refused" and e["actor"] == "bo" for e in server.cli_json("audit", "list"))
    assert server.cli_json("call", "list") == []


def test_a_call_to_a_unit_whose_screen_app_is_not_running_says_so_at_once(
        server: ServerProcess, care: tuple[AgentProcess, str]) -> None:
    """The unit is online but no screen app runs: the call cannot ring, and the caller is
    told so at once (not "did not answer" after the ring timeout)."""
    _, citizen_id = care

    async def scenario() -> m.CallEnded:
        async with StaffClient(server.console) as anne:
            await anne.login("anne")
            await anne.connect()
            await anne.send(m.CallStart(citizen_id=citizen_id))
            placed = await anne.expect(m.CallPlaced)
            assert placed.citizen_name == "Karen Jensen" and placed.ice_servers == []
            return await anne.expect(m.CallEnded, timeout=5)  # type: ignore[no-any-return]

    ended = asyncio.run(scenario())
    assert ended.reason == "screen_not_running"
    assert ended.facts is not None and ended.facts.online and ended.facts.online_since is not None
    assert ended.facts.ui_alive is False, "no screen app runs here, and the caller is told"
    assert ended.facts.rang_for_seconds is None
    records = server.cli_json("call", "list")
    assert len(records) == 1 and records[0]["end_reason"] == "screen_not_running"
    assert records[0]["rang_at"] is None
    assert records[0]["caller"] == "anne" and records[0]["talk_seconds"] is None
    assert "Karen" not in server.log() and "Karen" not in json.dumps(server.cli_json("audit", "list"))


def test_call_to_an_offline_screen_ends_at_once(server: ServerProcess, care: tuple[AgentProcess, str]) -> None:
    agent, citizen_id = care
    agent.stop()

    async def scenario() -> m.CallEnded:
        async with StaffClient(server.console) as anne:
            await anne.login("anne")
            await anne.connect()
            await anne.send(m.CallStart(citizen_id=citizen_id))
            await anne.expect(m.CallPlaced)
            return await anne.expect(m.CallEnded, timeout=5)  # type: ignore[no-any-return]

    ended = asyncio.run(scenario())
    assert ended.reason == "device_offline"
    assert ended.facts is not None and not ended.facts.online and ended.facts.last_seen is not None


def test_bad_frames_on_the_call_socket_are_rejected(server: ServerProcess, care: tuple[AgentProcess, str]) -> None:
    async def scenario() -> list[m.ServerToStaff]:
        async with StaffClient(server.console) as anne:
            await anne.login("anne")
            await anne.connect()
            assert anne.ws is not None
            for bad in ("{", '{"type": "call-start"}', '{"type": "call-accept", "call_id": "x", "sdp": "' +
                        "a" * 70000 + '"}', '{"type": "call-start", "citizen_id": "nobody"}'):
                await anne.ws.send_str(bad)
                await anne.next()
            return anne.received

    replies = asyncio.run(scenario())
    assert [r.reason for r in replies if isinstance(r, m.Rejected)] == ["malformed", "invalid", "oversized",
                                                                       "unknown-citizen"]
