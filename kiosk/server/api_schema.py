"""Request and response bodies of the console's JSON API (the OpenAPI document is built from these)."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

Count = Annotated[int, msgspec.Meta(ge=1, le=1000)]
Seconds = Annotated[float, msgspec.Meta(gt=0, le=30 * 24 * 3600)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._@-]+$")]


class LoginRequest(msgspec.Struct, forbid_unknown_fields=True):
    username: Name
    password: Annotated[str, msgspec.Meta(max_length=1024)]


class Me(msgspec.Struct):
    username: str
    role: str


class CommandRequest(msgspec.Struct, forbid_unknown_fields=True):
    kind: str
    args: dict[str, Any] = {}
    expires_in: Seconds = 24 * 3600.0


class CommandQueued(msgspec.Struct):
    id: str
    state: str
    expires_at: float


class TokenRequest(msgspec.Struct, forbid_unknown_fields=True):
    server_url: str
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


class AuditOut(msgspec.Struct):
    seq: int
    at: float
    actor: str
    action: str
    device_id: str | None
    detail: dict[str, Any]
    hash: str


class CitizenOut(msgspec.Struct):
    id: str
    name: str
    online: bool


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
