"""A caregiver's call client in Python: the console's login and call socket, as the page uses them."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from kiosk.protocol import messages as m
from tests.harness import ADMIN_PASSWORD


class StaffClient:
    def __init__(self, console: str) -> None:
        self.console = console
        self.session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))  # cookies for 127.0.0.1
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.received: list[m.ServerToStaff] = []

    async def __aenter__(self) -> "StaffClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self.ws is not None:
            await self.ws.close()
        await self.session.close()

    async def login(self, username: str, password: str = ADMIN_PASSWORD) -> None:
        async with self.session.post(f"{self.console}/api/login",
                                     json={"username": username, "password": password}) as resp:
            assert resp.status == 200, await resp.text()

    async def citizens(self) -> list[dict[str, Any]]:
        async with self.session.get(f"{self.console}/api/citizens") as resp:
            return list(await resp.json())

    async def connect(self) -> None:
        self.ws = await self.session.ws_connect(f"{self.console}/api/calls/socket")

    async def send(self, message: m.StaffToServer) -> None:
        assert self.ws is not None
        await self.ws.send_str(m.encode(message).decode())

    async def next(self, timeout: float = 15.0) -> m.ServerToStaff:
        assert self.ws is not None
        frame = await asyncio.wait_for(self.ws.receive(), timeout)
        assert frame.type == aiohttp.WSMsgType.TEXT, frame
        message = m.SERVER_TO_STAFF.decode(frame.data)
        self.received.append(message)
        return message

    async def expect(self, kind: type, timeout: float = 15.0) -> Any:
        message = await self.next(timeout)
        assert isinstance(message, kind), f"expected {kind.__name__}, got {message}"
        return message
