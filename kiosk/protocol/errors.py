"""The one error type for bad input at any protocol boundary."""

from __future__ import annotations


class ProtocolError(ValueError):
    """Input that does not follow the protocol.

    ``reason`` is a short stable code (``malformed``, ``oversized``, ``unknown-type``,
    ``invalid``, ...) that programs and the audit trail use; ``detail`` says it in words.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
