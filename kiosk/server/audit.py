"""The audit log's one entry type, and what each of its fields may hold.

The log is append-only and hash-chained: whatever is written stays for good. So
nothing typed by someone who is not logged in may reach it — above all not the user
name typed into a failed login, which may be a password typed into the wrong box.
The entry's format says so field by field, the store checks every entry against it
before writing, and the console API and the CLI show entries in this same shape.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

import msgspec

#: Who acted. Only these forms: an existing account's name (the store checks that it
#: exists), ``cli:<unix user>`` for the host's command line, ``device:<device id>``,
#: ``server`` for the server's own doing, ``anonymous`` for someone not logged in.
ACTOR_PATTERN = (r"^(?:[A-Za-z0-9._@-]{1,64}|cli:[A-Za-z0-9._$-]{1,64}|"
                 r"device:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|server|anonymous)$")
SERVER = "server"
ANONYMOUS = "anonymous"

Actor = Annotated[str, msgspec.Meta(
    pattern=ACTOR_PATTERN,
    description="an existing account, cli:<unix user>, device:<id>, 'server' or 'anonymous'; "
                "never a name typed by someone not logged in")]
Action = Annotated[str, msgspec.Meta(pattern=r"^[a-z]+(?:-[a-z]+)*$", max_length=64,
                                     description="what happened, in kebab-case (login-failed, command-queued...)")]
DetailKey = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z_]*$", max_length=64)]
Hash = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$",
                                   description="sha256 over the previous entry's hash and this entry")]


class AuditEntry(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One entry of the audit log."""

    seq: int
    at: float
    actor: Actor
    action: Action
    #: the device concerned, if any
    device_id: str | None
    #: facts about the action: ids, kinds, reasons, counts, addresses. Never personal data
    #: (a citizen's name) and never text typed by someone not logged in.
    detail: dict[DetailKey, Any]
    hash: Hash


_ACCOUNT = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")


def is_account(actor: str) -> bool:
    """Whether this actor names an account (which must then exist), not a device, CLI or server."""
    return actor not in (SERVER, ANONYMOUS) and _ACCOUNT.fullmatch(actor) is not None


def checked(fields: dict[str, Any]) -> AuditEntry:
    """The entry of these fields if each holds what its format allows; ValueError (a bug of ours) if not."""
    try:
        return msgspec.convert(fields, AuditEntry)
    except msgspec.ValidationError as exc:
        raise ValueError(f"audit entry {fields.get('action')!r} breaks the audit format: {exc}") from None
