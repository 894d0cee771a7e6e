"""A staff member's photo, given through the CLI or the JSON API, rings with their calls on the unit.

Real server and agent; the unit's screen is played by the screen's own agent client on the
agent's socket, so the test sees exactly what the screen is sent.
"""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

from kiosk.caregiver import CaregiverClient, TestMedia
from kiosk.protocol import messages as m
from kiosk.protocol import png
from kiosk.protocol.agent_socket import socket_path
from kiosk.ui.agent_client import AgentClient
from tests.harness import ADMIN_PASSWORD, AgentProcess, Console, ServerProcess, wait_until
from tests.server.test_photos import encoded, portrait


async def ring_seen_by_the_screen(server: ServerProcess, agent: AgentProcess, citizen_id: str,
                                  admin: Console, device_id: str) -> m.CallRing:
    client = AgentClient(socket_path(agent.state))
    events = aiter(client.events())
    try:
        while not isinstance(await anext(events), m.AgentStatus):  # connected, said hello
            pass
        await asyncio.to_thread(wait_until, lambda: admin.request("GET", f"/api/devices/{device_id}")[1]["ui_alive"],
                                20, 0.2, what="the server to know the screen is alive")
        async with CaregiverClient(server.console, media=TestMedia(160, 120, 5)) as anne:
            await anne.login("anne", ADMIN_PASSWORD)
            placed = await anne.place_call(citizen_id)
            try:
                while not isinstance(event := await anext(events), m.CallRing):
                    pass
                return event
            finally:
                await placed.hang_up()
    finally:
        await client.close()


def test_a_photo_given_by_cli_or_api_rings_with_the_call(server: ServerProcess, online_agent: tuple[AgentProcess, str],
                                                         tmp_path: Path) -> None:
    agent, device_id = online_agent
    server.add_admin()
    server.add_admin("anne", "caregiver", "Anne, sygeplejerske")
    citizen_id = server.add_citizen("Karen Jensen", device_id, "anne")
    admin = Console(server.console)
    assert admin.login() == 200

    def ring_now() -> m.CallRing:
        return asyncio.run(asyncio.wait_for(ring_seen_by_the_screen(server, agent, citizen_id, admin, device_id), 60))

    ring = ring_now()
    assert ring.caller_photo is None  # no photo given: the name and role alone

    photo = tmp_path / "anne.jpg"
    photo.write_bytes(encoded(portrait(), "JPEG"))
    out = server.cli("user", "photo", "anne", str(photo))
    assert "photo stored" in out.stdout
    ring = ring_now()
    assert ring.caller_photo is not None
    assert png.check(ring.caller_photo, m.MAX_CALLER_PHOTO_BYTES, m.CALLER_PHOTO_SIDE) == (180, 240)

    refused = server.cli("user", "photo", "anne", str(tmp_path / "missing.jpg"), check=False)
    assert refused.returncode != 0 and "missing.jpg" in refused.stderr

    square = encoded(portrait(600, 600), "PNG")
    status, _ = admin.request("PUT", "/api/users/anne/photo", {"image": base64.b64encode(square).decode()})
    assert status == 204
    ring = ring_now()
    assert ring.caller_photo is not None
    assert png.check(ring.caller_photo, m.MAX_CALLER_PHOTO_BYTES, m.CALLER_PHOTO_SIDE) == (240, 240)

    status, error = admin.request("PUT", "/api/users/anne/photo", {"image": base64.b64encode(b"GIF89a").decode()})
    assert status == 400 and error["error"] == "bad-photo" and "PNG, JPEG or WebP" in error["message"]
    status, error = admin.request("PUT", "/api/users/nobody/photo", {"image": base64.b64encode(square).decode()})
    assert status == 404
    anne = Console(server.console)
    assert anne.login("anne") == 200
    status, _ = anne.request("PUT", "/api/users/anne/photo", {"image": base64.b64encode(square).decode()})
    assert status == 403  # only administrators set photos

    actions = [e["action"] for e in server.cli_json("audit", "list", "--limit", "500")]
    assert actions.count("user-photo-set") == 2
