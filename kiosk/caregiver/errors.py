"""What can go wrong for a caregiver's call client; every message says what happened."""

from __future__ import annotations

from kiosk.protocol.call import EndReason

__all__ = ["CallEndedEarly", "CallError", "CallRejected", "CallTimeout", "LoginFailed"]


class CallError(Exception):
    """A call could not go the way it was asked to; the message says what happened."""


class LoginFailed(CallError):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"login refused (HTTP {status}): {text[:200]}")
        self.status = status


class CallRejected(CallError):
    """The server would not place the call (``reason``: the Rejected code, e.g. ``forbidden``)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"call refused: {reason}: {detail}")
        self.reason = reason
        self.detail = detail


class CallEndedEarly(CallError):
    """The call ended before the step that was waited for (``reason`` None: the server refused it)."""

    def __init__(self, waited_for: str, reason: EndReason | None) -> None:
        super().__init__(f"the call ended ({reason or 'refused'}) before {waited_for}")
        self.reason = reason


class CallTimeout(CallError, TimeoutError):
    pass
