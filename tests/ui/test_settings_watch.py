"""The screen follows ui.json without a restart: read again when the agent pushes its status."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from kiosk.protocol import screen_settings
from kiosk.ui import controller as ui
from kiosk.ui.agent_client import AgentClient
from kiosk.ui.call_peer import open_device_media
from kiosk.ui.session import UiSession
from kiosk.ui.settings import SettingsWatch

from .fake_agent import FakeAgent


async def until(predicate: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_new_settings_reach_the_running_screen_and_a_wipe_brings_back_the_defaults(tmp_path: Path) -> None:
    ui_json = tmp_path / screen_settings.UI_FILE
    ui_json.write_text(json.dumps({"staff_pin": "2468"}))
    agent = await FakeAgent(tmp_path / "agent.sock").start()
    watch = SettingsWatch(tmp_path, serial="S1")
    volumes: list[int] = []
    session = UiSession(AgentClient(agent.path), lambda: open_device_media(demo=True), settings=watch.load(),
                        settings_changed=watch.changed)
    session.effects = type(session.effects)(set_volume=volumes.append)
    runner = asyncio.create_task(session.run())
    try:
        await until(lambda: session.state.status is not None)
        assert session.state.settings.staff_pin == "2468" and session.state.settings.serial == "S1"

        # What the agent does for set-config: write ui.json whole, then push its status.
        ui_json.write_bytes(screen_settings.encode(screen_settings.ScreenSettings(volume=2, language="en",
                                                                                  night_start_hour=21)))
        await agent.send(agent.status)
        await until(lambda: session.state.settings.language == "en")
        assert (session.state.settings.volume, session.state.settings.night_start_hour) == (2, 21)
        settings = session.state.settings  # read afresh: the earlier asserts narrowed the old one's type
        assert settings.staff_pin is None and settings.serial == "S1"
        await until(lambda: volumes == [2])  # the speaker follows at once

        ui_json.write_text("{broken")  # a torn file: the defaults, the screen goes on
        await agent.send(agent.status)
        await until(lambda: session.state.settings.language == "da")

        ui_json.write_bytes(screen_settings.encode(screen_settings.ScreenSettings(language="en")))
        await agent.send(agent.status)
        await until(lambda: session.state.settings.language == "en")
        ui_json.unlink()  # a wipe
        await agent.send(agent.status)
        await until(lambda: session.state.settings == ui.Settings(serial="S1"))
    finally:
        session.stop()
        await asyncio.wait_for(runner, 10)
        await agent.stop()
