"""What the server does with an enrollment request: pure, decided from what the store knows.

A token works once, but a unit may repeat its own request: when the answer was lost, or
the power went after the server's commit, the unit sends the same key again and gets
the same device id and certificate. Any other key is refused. A well-formed token that
expired on the shelf, never used, does not strand the unit: it is held as "awaiting
approval" until logistics approve or reject it (``kiosk-server device approve/reject``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

#: How long after its token's expiry (or its use, whichever is later) a unit may repeat
#: its enrollment and get the same answer.
RETRY_GRACE_SECONDS = 7 * 24 * 3600.0

AWAITING, APPROVED, REJECTED, ENROLLED = "awaiting-approval", "approved", "rejected", "enrolled"


# ------------------------------------------------------------------- what is known


@dataclass(frozen=True)
class Token:
    expires_at: float
    used_at: float | None


@dataclass(frozen=True)
class Issued:
    """The device a used token enrolled."""

    device_id: str
    key_sha256: str
    revoked: bool


@dataclass(frozen=True)
class Held:
    """A unit held for approval under this token."""

    device_id: str
    key_sha256: str
    state: str  # AWAITING, APPROVED, REJECTED or ENROLLED


# ------------------------------------------------------------------------ decisions


@dataclass(frozen=True)
class Issue:
    """Enroll now: use the token, sign the certificate (under a new id unless one was reserved)."""

    device_id: str | None
    approved: bool


@dataclass(frozen=True)
class Repeat:
    """The same unit again: answer the same device id and certificate."""

    device_id: str


@dataclass(frozen=True)
class Wait:
    """Hold the unit (first time: under a new id) until logistics decide."""

    device_id: str | None


@dataclass(frozen=True)
class Refuse:
    code: str
    message: str


Decision = Issue | Repeat | Wait | Refuse


def decide(token: Token | None, issued: Issued | None, held: Held | None, key_sha256: str, now: float) -> Decision:
    if token is None:
        return Refuse("token-unknown", "This enrollment token is not known to this server. Check that the "
                      "provisioning file was made by this server (kiosk-server enroll-token create).")
    if token.used_at is not None:
        if issued is None or issued.key_sha256 != key_sha256:
            return Refuse("token-used", "This enrollment token has already been used by another unit; "
                          "create a new one.")
        if issued.revoked:
            return Refuse("device-revoked", "This unit was enrolled and then revoked; "
                          "it needs a factory reset and a new provisioning file.")
        if now > max(token.expires_at, token.used_at) + RETRY_GRACE_SECONDS:
            return Refuse("token-used", "This enrollment token was used by this unit too long ago to repeat "
                          "the enrollment; create a new one.")
        return Repeat(issued.device_id)
    if held is not None:
        if held.key_sha256 != key_sha256:
            return Refuse("token-held", "This enrollment token is held for another unit awaiting approval; "
                          "create a new one.")
        if held.state == APPROVED:
            return Issue(held.device_id, approved=True)
        if held.state == REJECTED:
            return Refuse("enrollment-rejected", "The municipality's logistics rejected this unit's enrollment. "
                          "Ask them (kiosk-server device approve), or give it a new provisioning file.")
        return Wait(held.device_id)
    if now < token.expires_at:
        return Issue(None, approved=False)
    return Wait(None)


def held_message(device_id: str, serial_number: str) -> str:
    return (f"This unit's enrollment token expired before it was first used. The unit ({serial_number or 'no serial'}) "
            f"is waiting for the municipality's logistics to approve it as {device_id} "
            "(kiosk-server device approve); it keeps trying meanwhile.")


def batch_label(created_at: float, created_by: str) -> str:
    """Tokens made by one ``enroll-token create`` share their creation time: that is their batch."""
    return f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(created_at))} by {created_by}"
