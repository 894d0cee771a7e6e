"""What the agent may do to the machine, behind one small interface.

On a unit the agent runs with ``--system-actions systemd``; everywhere else (tests, the
demo, a developer's laptop) the default only records what it would have done, so no
test can ever reboot the host.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Protocol

UI_UNIT = "kiosk-ui.service"


class SystemActions(Protocol):
    async def restart_ui(self) -> None: ...
    async def reboot(self) -> None: ...


class SystemdActions:
    async def _systemctl(self, *args: str) -> None:
        proc = await asyncio.create_subprocess_exec("systemctl", *args)
        if await proc.wait() != 0:
            raise RuntimeError(f"systemctl {' '.join(args)} failed")

    async def restart_ui(self) -> None:
        await self._systemctl("restart", UI_UNIT)

    async def reboot(self) -> None:
        await self._systemctl("reboot")


class RecordingActions:
    """Writes each action as a JSON line instead of doing it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    async def _record(self, action: str) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps({"at": time.time(), "action": action}) + "\n")

    async def restart_ui(self) -> None:
        await self._record("restart-ui")

    async def reboot(self) -> None:
        await self._record("reboot")
