"""A caregiver's call socket for signaling tests: :class:`kiosk.caregiver.CaregiverClient`
(the console's login and call socket, as the page uses them), with test assertions on top."""

from __future__ import annotations

from typing import Any

from kiosk.caregiver import CaregiverClient, LoginFailed
from kiosk.protocol import messages as m
from tests.harness import ADMIN_PASSWORD


class StaffClient(CaregiverClient):
    """Every message the server sends outside a call the client drives is kept in ``received``."""

    def __init__(self, console: str) -> None:
        super().__init__(console)
        self.received: list[m.ServerToStaff] = []

    async def login(self, username: str, password: str = ADMIN_PASSWORD) -> dict[str, Any]:
        try:
            return await super().login(username, password)
        except LoginFailed as exc:
            raise AssertionError(str(exc)) from None

    async def next(self, timeout: float = 15.0) -> m.ServerToStaff:
        message = await self.receive(timeout)
        self.received.append(message)
        return message

    async def expect(self, kind: type, timeout: float = 15.0) -> Any:
        message = await self.next(timeout)
        assert isinstance(message, kind), f"expected {kind.__name__}, got {message}"
        return message
