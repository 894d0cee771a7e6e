"""Request and response bodies of the console's JSON API (the OpenAPI document is built from these)."""

from __future__ import annotations

import functools
from typing import Annotated, Any, Literal, Union, get_args

import msgspec

from kiosk.protocol import messages as m
from kiosk.server.audit import AuditEntry

Count = Annotated[int, msgspec.Meta(ge=1, le=1000)]
Seconds = Annotated[float, msgspec.Meta(gt=0, le=30 * 24 * 3600)]
#: host name or IPv4 address, optional port, plain path (provisioning checks the rest)
HTTPS_URL = r"^https://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?$"
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._@-]+$")]


class Empty(msgspec.Struct, forbid_unknown_fields=True):
    """No arguments: ``{}`` (a change of state still comes as JSON, which no HTML form can send)."""


class LoginRequest(msgspec.Struct, forbid_unknown_fields=True):
    username: Name
    password: Annotated[str, msgspec.Meta(max_length=1024)]


class Me(msgspec.Struct):
    username: str
    role: str


#: Units one bulk request may name (a rollout wave; a fleet goes in several such requests).
MAX_BULK = 1000
DeviceIds = Annotated[list[Annotated[str, msgspec.Meta(min_length=1, max_length=64)]],
                      msgspec.Meta(min_length=1, max_length=MAX_BULK,
                                   description="the units to send the same command to, each once",
                                   extra_json_schema={"uniqueItems": True})]


def _command_request(action: type[m.Message], bulk: bool = False) -> type[msgspec.Struct]:
    """``{"kind": K, "args": {...}, "expires_in": S}`` for one command kind, from its action struct;
    ``bulk`` adds ``"device_ids": [...]``."""
    args = _command_args(action)
    needs_args = any(f.required for f in msgspec.structs.fields(action))
    return msgspec.defstruct(f"{action.__name__}{'Bulk' if bulk else ''}Command", [
        *([("device_ids", DeviceIds)] if bulk else []),
        ("args", args, msgspec.NODEFAULT if needs_args else msgspec.field(default_factory=args)),
        ("expires_in", Seconds, 24 * 3600.0),
    ], tag_field="kind", tag=action.__struct_config__.tag, forbid_unknown_fields=True, module=__name__)


@functools.cache
def _command_args(action: type[m.Message]) -> type[msgspec.Struct]:
    """The arguments of one command kind: one type, shared by the single and the bulk request."""
    return msgspec.defstruct(f"{action.__name__}Args",
                             [(f.name, f.type, _default(f)) for f in msgspec.structs.fields(action)],
                             forbid_unknown_fields=True, module=__name__)


def _default(field: msgspec.structs.FieldInfo) -> Any:
    if field.default_factory is not msgspec.NODEFAULT:
        return msgspec.field(default_factory=field.default_factory)
    return field.default


#: Every action a person may queue; its kind is the tag, its arguments exactly the action's fields.
COMMAND_REQUESTS: dict[str, type[msgspec.Struct]] = {
    str(a.__struct_config__.tag): _command_request(a)
    for a in get_args(m.CommandAction)
}
CommandRequest = Union[tuple(COMMAND_REQUESTS.values())]  # type: ignore[valid-type]  # noqa: UP007 (built at run time)
#: The same, for many units at once (a mass operation: "ping every unit", a rollout wave).
BulkCommandRequest = Union[tuple(_command_request(a, bulk=True)  # type: ignore[valid-type]  # noqa: UP007
                                 for a in get_args(m.CommandAction))]


class CommandKind(msgspec.Struct):
    """Only the kind of a command request, read first: permission is checked before the rest."""

    kind: str


def command_action(request: Any) -> m.CommandAction:
    """The signed action a command request asks for."""
    kind = type(request).__struct_config__.tag
    action: m.CommandAction = msgspec.convert({"type": kind, **msgspec.to_builtins(request.args)}, m.CommandAction)
    return action


class CommandQueued(msgspec.Struct):
    id: str
    state: str
    expires_at: float


class QueuedFor(msgspec.Struct):
    device_id: str
    id: str
    expires_at: float


class RefusedFor(msgspec.Struct):
    device_id: str
    error: str
    message: str


class BulkQueued(msgspec.Struct):
    """Each unit's command, or why it got none; in the order the units were named."""

    queued: list[QueuedFor]
    refused: list[RefusedFor]


class TokenRequest(msgspec.Struct, forbid_unknown_fields=True):
    #: the device port as devices reach it
    server_url: Annotated[str, msgspec.Meta(pattern=HTTPS_URL, max_length=200)]
    count: Count = 1
    expires_in: Seconds = 7 * 24 * 3600.0


class ProvisioningFileOut(msgspec.Struct):
    name: str
    content: str


class TokensCreated(msgspec.Struct):
    files: list[ProvisioningFileOut]


class DeviceOut(msgspec.Struct):
    id: str
    state: str
    online: bool
    online_since: float | None
    last_seen: float | None
    ui_alive: bool | None
    agent_version: str
    enrolled_at: float
    revoked: bool


class CommandOut(msgspec.Struct):
    id: str
    device_id: str
    kind: str
    state: str
    created_by: str
    created_at: float
    expires_at: float
    delivered_at: float | None
    finished_at: float | None
    outcome: str | None
    reason: str | None
    result: Any
    result_verified: bool


AuditOut = AuditEntry


class PageQuery(msgspec.Struct, forbid_unknown_fields=False):
    """One page of a long list: ``limit`` rows after the first ``offset`` (a fleet has thousands)."""

    limit: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 500
    offset: Annotated[int, msgspec.Meta(ge=0, le=10_000_000)] = 0


class AuditQuery(msgspec.Struct, forbid_unknown_fields=False):
    """The query of ``GET /api/audit``: every filter given must match (who, what, which unit, when)."""

    device_id: Annotated[str, msgspec.Meta(max_length=36)] | None = None
    actor: Annotated[str, msgspec.Meta(max_length=80)] | None = None
    action: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    since: Annotated[float, msgspec.Meta(ge=0, le=1e11)] = 0.0  # Unix time, inclusive
    until: Annotated[float, msgspec.Meta(ge=0, le=1e11)] = 1e11  # Unix time, exclusive
    limit: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 200
    after: Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)] = 0  # a sequence number: SQL integers end there


class AuditChainOut(msgspec.Struct):
    """The result of checking the audit log's hash chain from its first entry to its last."""

    intact: bool
    entries: int  # how many entries were checked
    first_altered: int | None  # the seq of the first entry whose hash does not match
    checked_at: float


#: Standard base64 with its padding, as the server decodes it (OpenAPI's contentEncoding alone is
#: not checked by clients or fuzzers).
BASE64 = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=|[A-Za-z0-9+/]{4})$"


class PhotoIn(msgspec.Struct, forbid_unknown_fields=True):
    """A person's photo for the citizen's ringing screen: the image file's bytes, in base64."""

    image: Annotated[bytes, msgspec.Meta(min_length=1, extra_json_schema={"pattern": BASE64})]


class UnlockAccount(msgspec.Struct, forbid_unknown_fields=True, tag_field="kind", tag="account"):
    """Lift the login wait of one account."""

    account: Name


class UnlockAddress(msgspec.Struct, forbid_unknown_fields=True, tag_field="kind", tag="address"):
    """Lift the login wait of one client address."""

    address: Annotated[str, msgspec.Meta(min_length=2, max_length=45, pattern=r"^[0-9A-Fa-f.:]+$")]


UnlockRequest = UnlockAccount | UnlockAddress


class CitizenOut(msgspec.Struct):
    id: str
    name: str
    online: bool


VisitText = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
Moment = Annotated[float, msgspec.Meta(gt=0, le=1e11)]  # Unix time


class VisitIn(msgspec.Struct, forbid_unknown_fields=True):
    """A visit to plan; ``repeat: daily`` from a first visit at 8:00 is "every morning at 8:00"."""

    at: Moment
    staff_name: VisitText
    staff_role: VisitText
    kind: Annotated[str, msgspec.Meta(max_length=100)] = ""
    repeat: m.Repeat = "once"


class VisitMove(msgspec.Struct, forbid_unknown_fields=True):
    at: Moment


class VisitOut(msgspec.Struct):
    id: str
    citizen_id: str
    at: float
    staff_name: str
    staff_role: str
    kind: str
    repeat: str


class CallRecordOut(msgspec.Struct):
    id: str
    caller: str
    citizen_id: str
    device_id: str | None
    placed_at: float
    rang_at: float | None
    answered_at: float | None
    connected_at: float | None
    ended_at: float
    end_reason: str
    ring_seconds: float | None
    talk_seconds: float | None
    facts: dict[str, Any] | None
    quality_staff: dict[str, Any] | None
    quality_device: dict[str, Any] | None


class BackoffOut(msgspec.Struct):
    kind: Literal["address", "account"]
    value: str
    failures: int
    blocked_until: float
