"""Many real agents in one process, standing in for as many units (a process each would cost
the loaded test machine a minute of start-up and gigabytes).

Each unit is the real :class:`kiosk.provision.agent.Agent` with a state directory of its own:
its own key and certificate (enrolled with the real ``enroll_until_done``), its own replay
memory and audit trail, its own connection with its own backoff. Only the screen is missing,
as on a unit whose screen program is not running. Every half second the fleet writes
``fleet.json`` in its directory: each unit's device id and whether its link is up; and
``receipts.json``: when (time.time()) each command's frame reached its unit's link, before
the agent's own work on it (bench/cluster.py measures delivery with it).

    python -m tests.cluster.fleet DIR PROVISIONING_FILE...
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from kiosk.protocol import messages as m
from kiosk.protocol.errors import ProtocolError
from kiosk.provision.agent import Agent, enroll_until_done
from kiosk.provision.state import StateDir
from kiosk.provision.system_actions import RecordingActions

BACKOFF_CAP_SECONDS = 1.0  # as the tests' single agents (tests/harness.py AgentProcess)
OnMessage = Callable[[m.ServerToDevice], Awaitable[None]]


Receipts = dict[str, float]


def _noting_receipts(handle: OnMessage, receipts: Receipts) -> OnMessage:
    async def noted(message: m.ServerToDevice) -> None:
        if isinstance(message, m.CommandDelivery):
            with contextlib.suppress(ProtocolError):
                receipts.setdefault(m.COMMAND.decode(message.envelope.payload).id, time.time())
        await handle(message)
    return noted


async def _unit(state: StateDir, provisioning: Path, agents: dict[Path, Agent], receipts: Receipts) -> None:
    state.create()
    if not state.enrolled:
        await enroll_until_done(state, provisioning, retry_cap=BACKOFF_CAP_SECONDS)
    agent = Agent(state, RecordingActions(state.root / "system-actions.log"), backoff_cap=BACKOFF_CAP_SECONDS)
    agent.link._on_message = _noting_receipts(agent.link._on_message, receipts)
    agents[state.root] = agent
    await agent.run()


def _write(path: Path, value: object) -> None:
    path.with_suffix(".new").write_text(json.dumps(value))
    path.with_suffix(".new").replace(path)


async def _report(root: Path, agents: dict[Path, Agent], receipts: Receipts) -> None:
    while True:
        _write(root / "fleet.json", {str(path): {"device_id": agent.device_id, "connected": agent.link.connected}
                                     for path, agent in agents.items()})
        _write(root / "receipts.json", receipts)
        await asyncio.sleep(0.5)


async def main(root: Path, provisioning: list[Path]) -> None:
    agents: dict[Path, Agent] = {}
    receipts: Receipts = {}
    await asyncio.gather(_report(root, agents, receipts),
                         *(_unit(StateDir(root / f"unit{i:03d}"), p, agents, receipts)
                           for i, p in enumerate(provisioning)))


if __name__ == "__main__":
    out = Path(sys.argv[1])
    logging.basicConfig(filename=out / "fleet.log", level=logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    asyncio.run(main(out, [Path(p) for p in sys.argv[2:]]))
