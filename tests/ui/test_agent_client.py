"""The UI's client of the agent socket against a fake agent on a real Unix socket."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kiosk.protocol import messages as m
from kiosk.protocol.call import EndReason
from kiosk.ui.agent_client import AgentClient, AgentEvent
from kiosk.ui.controller import AgentConnected, AgentLost

from .fake_agent import FakeAgent, status

pytestmark = pytest.mark.timeout(30)


class Events:
    """Reads the client's events in the background."""

    def __init__(self, client: AgentClient) -> None:
        self.client = client
        self.queue: asyncio.Queue[AgentEvent] = asyncio.Queue()
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for event in self.client.events():
            self.queue.put_nowait(event)

    async def next(self, timeout: float = 5.0) -> AgentEvent:
        return await asyncio.wait_for(self.queue.get(), timeout)

    async def close(self) -> None:
        await self.client.close()
        await asyncio.wait_for(self.task, 5)


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[AgentClient]:
    c = AgentClient(tmp_path / "agent.sock", heartbeat_interval=0.1, retry_cap=0.1)
    yield c
    await c.close()


async def test_waits_for_the_agent_then_says_hello_and_beats(client: AgentClient) -> None:
    events = Events(client)
    await asyncio.sleep(0.3)  # the agent is not there yet: the client keeps trying
    assert events.queue.empty()
    agent = await FakeAgent(client.path).start()
    try:
        assert await events.next() == AgentConnected()
        assert await events.next() == status()  # the agent's answer to our hello
        await agent.wait_for(m.UiHeartbeat, count=2, timeout=3)
        assert agent.received[0] == m.UiHello(ui_version=client.ui_version)
        assert m.UiHeartbeat(screen_awake=True) in agent.received
    finally:
        await events.close()
        await agent.stop()


async def test_bad_lines_are_skipped_and_the_connection_stays(client: AgentClient) -> None:
    agent = await FakeAgent(client.path).start()
    events = Events(client)
    try:
        assert await events.next() == AgentConnected()
        assert await events.next() == status()
        for line in (b"not json\n", b'{"type": "launch-missiles"}\n', b'{"type": "status"}\n',
                     b"\xff\xfe\n", b"[]\n", b"x" * (m.MAX_MESSAGE_BYTES + 10) + b"\n"):
            await agent.send_raw(line)
        ended = m.CallEnded(call_id="c1", reason=EndReason.HUNG_UP_BY_STAFF)
        await agent.send(ended)
        assert await events.next() == ended  # nothing bad came through; the good one did
        assert client.bad_lines >= 6
        assert client.connected and agent.connections == 1
    finally:
        await events.close()
        await agent.stop()


async def test_agent_restart_is_lost_then_connected_again(client: AgentClient) -> None:
    agent = await FakeAgent(client.path).start()
    events = Events(client)
    try:
        assert await events.next() == AgentConnected()
        assert await events.next() == status()
        await agent.stop()
        assert await events.next() == AgentLost()
        assert not await client.send(m.GetStatus())  # dropped, not queued for a stale link
        agent = await FakeAgent(client.path).start()
        assert await events.next() == AgentConnected()
        assert await events.next() == status()
        await agent.wait_for(m.UiHello)  # a new hello on the new connection
    finally:
        await events.close()
        await agent.stop()


async def test_close_ends_the_events_while_still_retrying(client: AgentClient) -> None:
    events = Events(client)
    await asyncio.sleep(0.2)
    await events.close()
    assert events.task.done()


async def test_against_the_real_agent_socket(client: AgentClient) -> None:
    """The agent's own UiServer: hello makes the UI alive, call messages go upstream."""
    from kiosk.provision.local_api import UiServer

    upstream: list[m.UiToAgent] = []

    async def to_server(message: m.UiToAgent) -> None:
        upstream.append(message)

    online = [True]
    liveness_changes: list[bool] = []

    async def liveness_changed() -> None:
        liveness_changes.append(server.ui_alive)

    server = UiServer(client.path, lambda: status(server_online=online[0]), to_server, liveness_changed)
    await server.start()
    events = Events(client)
    try:
        assert await events.next() == AgentConnected()
        assert await events.next() == status()
        assert server.ui_alive
        assert liveness_changes == [True], "the agent is told at once, to tell the server"
        ringing = m.CallRinging(call_id="c1", screen_awake=True)
        assert await client.send(ringing)
        await asyncio.sleep(0.3)  # a few heartbeats too
        assert upstream == [ringing]
        assert server.screen_awake is True
        ring = m.CallRing(call_id="c2", caller_name="Anne", caller_role="caregiver", ice_servers=[])
        server.send(ring)
        while (event := await events.next()) == status():  # the answers to our get-status
            pass
        assert event == ring
        # The agent does not push a dropped server link; the UI's asking finds it.
        online[0] = False
        while (event := await events.next()) == status():
            pass
        assert event == status(server_online=False)
    finally:
        await events.close()
        await server.stop()
