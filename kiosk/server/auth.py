"""People: roles, what each role may do, password hashing and sessions.

The role names are the ones the municipality's identity provider is mapped to
(:mod:`kiosk.server.oidc`) and the columns of the authorization table
(:mod:`kiosk.server.authorization`, ``docs/authorization.md``).
"""

from __future__ import annotations

import functools

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

ROLES = ("caregiver", "support", "logistics", "management", "admin")

#: What each role may do. ``command:<kind>`` covers sending that command to a device.
PERMISSIONS: dict[str, frozenset[str]] = {
    # whom a caregiver may call is decided per citizen, by the care team
    # and plans the visits of the citizens in their care team
    "caregiver": frozenset({"calls.make", "citizens.read", "visits.read", "visits.plan"}),
    "support": frozenset({
        "devices.read", "audit.read", "command:ping", "command:diagnostics", "command:logs",
        "command:restart-ui", "command:reboot", "command:screenshot",  # the citizen is asked first
        "command:test-ring",  # rings like a call, says it is a test; never interrupts one
    }),
    "logistics": frozenset({
        "devices.read", "audit.read", "tokens.create", "devices.approve", "devices.revoke", "command:ping",
        "command:assign", "command:wipe", "command:set-config", "citizens.read",
    }),
    # figures that identify no citizen and no single employee (kiosk.server.figures)
    "management": frozenset({"figures.read"}),
}

#: The permission of sending some command (each kind then needs its own ``command:<kind>``).
ANY_COMMAND = "command:*"

#: A session ends this long after login whatever happens (a working day and some)...
SESSION_TTL_SECONDS = 12 * 3600.0
#: ...and sooner when nobody used it this long (a PC left unlocked in a shared office).
SESSION_IDLE_SECONDS = 30 * 60.0
MIN_PASSWORD_LENGTH = 10

_hasher = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """Verifying against this keeps a login for an unknown user as slow as for a known one."""
    return _hasher.hash("not a real password, only for timing")


def may(role: str, permission: str) -> bool:
    if role == "admin":
        return True
    granted = PERMISSIONS.get(role, frozenset())
    if permission == ANY_COMMAND:
        return any(p.startswith("command:") for p in granted)
    return permission in granted


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValueError(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
    return _hasher.hash(password)


def check_password(stored_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(stored_hash or _dummy_hash(), password) and stored_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(stored_hash: str) -> bool:
    return _hasher.check_needs_rehash(stored_hash)
