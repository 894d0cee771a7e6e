"""The console port's JSON API for people: login, devices, commands, tokens, audit.

Every route states the permission it needs; the middleware finds the person from the
session cookie (or the same token as a Bearer header, for scripts) and refuses the rest.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from aiohttp import web

from kiosk.protocol import messages as m
from kiosk.protocol import provisioning
from kiosk.protocol.errors import ProtocolError
from kiosk.server import api_schema as s
from kiosk.server import auth, calls, commands
from kiosk.server.ca import Authority
from kiosk.server.device_api import AUTHORITY, HUB, STORE, error, json_response
from kiosk.server.hub import Hub
from kiosk.server.store import DeviceRow, Store, UserRow

SESSION_COOKIE = "kiosk_session"
MAX_BODY_BYTES = 64 * 1024
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
USER: web.RequestKey[UserRow] = web.RequestKey("user", UserRow)
SECURE_COOKIE: web.AppKey[bool] = web.AppKey("secure_cookie", bool)

PUBLIC = "public"  # the permission of a route anyone may call (only logging in)
# (method, path) -> permission; None means "any logged-in person".
_PERMISSION: dict[tuple[str, str], str | None] = {}


def route(method: str, path: str, permission: str | None, summary: str,
          body: type | None = None, response: Any = None) -> Callable[[Handler], Handler]:
    """Register a handler with what it needs; the OpenAPI document is built from this table."""
    def wrap(handler: Handler) -> Handler:
        _PERMISSION[(method, path)] = permission
        ROUTES.append(RouteInfo(method, path, permission, summary, body, response, handler))
        return handler
    return wrap


class RouteInfo(msgspec.Struct):
    method: str
    path: str
    permission: str | None
    summary: str
    body: Any
    response: Any
    handler: Any


ROUTES: list[RouteInfo] = []


async def read_body(request: web.Request, body_type: type[Any]) -> Any:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise ApiError(413, "oversized", f"request body over {MAX_BODY_BYTES} bytes")
    raw = await request.content.read(MAX_BODY_BYTES + 1)
    try:
        return m.Codec(body_type, max_bytes=MAX_BODY_BYTES).decode(raw or b"{}")
    except ProtocolError as exc:
        raise ApiError(400, exc.reason, exc.detail) from None


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    info = request.match_info.route.resource
    key = (request.method, info.canonical if info else "")
    try:
        if key in _PERMISSION and _PERMISSION[key] != PUBLIC:
            user = _session_user(request)
            if user is None:
                raise ApiError(401, "login-required", "please log in")
            permission = _PERMISSION[key]
            if permission is not None and not auth.may(user.role, permission):
                raise ApiError(403, "forbidden", f"the role {user.role} may not do this ({permission})")
            request[USER] = user
        return await handler(request)
    except ApiError as exc:
        return error(exc.status, exc.code, str(exc))
    except commands.CommandError as exc:
        return error(exc.status, exc.code, str(exc))


def _session_user(request: web.Request) -> UserRow | None:
    token = request.cookies.get(SESSION_COOKIE)
    header = request.headers.get("Authorization", "")
    if not token and header.startswith("Bearer "):
        token = header[7:]
    return request.app[STORE].session_user(token) if token else None


def _actor(request: web.Request) -> str:
    return str(request[USER].username)


# ------------------------------------------------------------------------- session
@route("POST", "/api/login", PUBLIC, "Log in; sets the session cookie", s.LoginRequest, s.Me)
async def login(request: web.Request) -> web.StreamResponse:
    store = request.app[STORE]
    req: s.LoginRequest = await read_body(request, s.LoginRequest)
    user = store.user(req.username)
    # argon2 takes ~150 ms of CPU on purpose: off the event loop, so devices are not held up
    if not await asyncio.to_thread(auth.check_password, user.password_hash if user else None, req.password) \
            or user is None:  # check_password already refused it; this tells the type checker
        with store.tx() as conn:
            store.append_audit(conn, req.username, "login-failed", None, peer=request.remote)
        return error(401, "bad-credentials", "wrong user name or password")
    if auth.needs_rehash(user.password_hash):
        store.set_password_hash(user.username, await asyncio.to_thread(auth.hash_password, req.password))
    token = store.create_session(user.username, auth.SESSION_TTL_SECONDS)
    with store.tx() as conn:
        store.append_audit(conn, user.username, "login", None, peer=request.remote)
    response = json_response(s.Me(user.username, user.role))
    response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="Strict",
                        secure=request.app[SECURE_COOKIE], max_age=int(auth.SESSION_TTL_SECONDS), path="/")
    return response


@route("POST", "/api/logout", None, "End the session")
async def logout(request: web.Request) -> web.StreamResponse:
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        request.app[STORE].end_session(token)
    response = web.Response(status=204)
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


@route("GET", "/api/me", None, "Who is logged in", response=s.Me)
async def me(request: web.Request) -> web.StreamResponse:
    user = request[USER]
    return json_response(s.Me(user.username, user.role))


# ------------------------------------------------------------------------- devices
def device_out(row: DeviceRow, hub: Hub) -> s.DeviceOut:
    link = hub.links.get(row.id)
    return s.DeviceOut(
        id=row.id, state=link.state if link else row.state, online=link is not None,
        online_since=link.connected_at if link else None,
        last_seen=link.last_seen if link else row.last_seen,
        ui_alive=link.ui_alive if link else None, agent_version=row.agent_version,
        enrolled_at=row.enrolled_at, revoked=row.revoked_at is not None,
    )


@route("GET", "/api/devices", "devices.read", "All enrolled devices", response=list[s.DeviceOut])
async def list_devices(request: web.Request) -> web.StreamResponse:
    hub = request.app[HUB]
    return json_response([device_out(r, hub) for r in request.app[STORE].devices()])


@route("GET", "/api/devices/{device_id}", "devices.read", "One device", response=s.DeviceOut)
async def get_device(request: web.Request) -> web.StreamResponse:
    row = request.app[STORE].device(request.match_info["device_id"])
    if row is None:
        raise ApiError(404, "unknown-device", "no such device")
    return json_response(device_out(row, request.app[HUB]))


@route("POST", "/api/devices/{device_id}/revoke", "devices.revoke", "Revoke a device for good")
async def revoke_device(request: web.Request) -> web.StreamResponse:
    device_id = request.match_info["device_id"]
    if not request.app[STORE].revoke_device(device_id, _actor(request)):
        raise ApiError(404, "unknown-device", "no such device, or already revoked")
    await request.app[HUB].disconnect(device_id)
    return web.Response(status=204)


@route("POST", "/api/devices/{device_id}/commands", None, "Queue a signed command",
       s.CommandRequest, s.CommandQueued)
async def send_command(request: web.Request) -> web.StreamResponse:
    req: s.CommandRequest = await read_body(request, s.CommandRequest)
    permission = f"command:{req.kind}"
    if not auth.may(request[USER].role, permission):
        raise ApiError(403, "forbidden", f"the role {request[USER].role} may not send {req.kind}")
    action = commands.parse_action(req.kind, req.args)
    command = commands.queue(request.app[STORE], request.app[AUTHORITY], request.match_info["device_id"],
                             action, _actor(request), req.expires_in)
    await request.app[HUB].deliver_pending(command.device_id)
    row = request.app[STORE].command(command.id)
    assert row is not None  # just stored; commands are never deleted
    return json_response(s.CommandQueued(command.id, row.state, command.expires_at), status=202)


@route("GET", "/api/commands/{command_id}", "devices.read", "A command's state and verified result",
       response=s.CommandOut)
async def get_command(request: web.Request) -> web.StreamResponse:
    store = request.app[STORE]
    row = store.command(request.match_info["command_id"])
    if row is None:
        raise ApiError(404, "unknown-command", "no such command")
    device = store.device(row.device_id)
    return json_response(commands.view(row, device.cert_pem if device else None))


# --------------------------------------------------------------- citizens and calls
@route("GET", "/api/citizens", "citizens.read", "The citizens I may call (all, for administrators)",
       response=list[s.CitizenOut])
async def my_citizens(request: web.Request) -> web.StreamResponse:
    user, hub = request[USER], request.app[HUB]
    rows = request.app[STORE].citizens_of(user.username, everyone=user.role in ("admin", "logistics"))
    return json_response([s.CitizenOut(r.id, r.name, r.device_id is not None and r.device_id in hub.links)
                          for r in rows])


@route("GET", "/api/calls", "calls.read", "Call records, newest first (no media is ever recorded)",
       response=list[s.CallRecordOut])
async def call_records(request: web.Request) -> web.StreamResponse:
    return json_response([calls.record_view(r) for r in request.app[STORE].call_records()])


# -------------------------------------------------------------- tokens and audit
@route("POST", "/api/enroll-tokens", "tokens.create", "Create provisioning files with one-time tokens",
       s.TokenRequest, s.TokensCreated)
async def create_tokens(request: web.Request) -> web.StreamResponse:
    req: s.TokenRequest = await read_body(request, s.TokenRequest)
    files = make_provisioning_files(request.app[STORE], request.app[AUTHORITY], req.server_url,
                                    req.count, req.expires_in, _actor(request))
    return json_response(s.TokensCreated([s.ProvisioningFileOut(n, c) for n, c in files]), status=201)


def make_provisioning_files(store: Store, authority: Authority, server_url: str, count: int, ttl: float,
                            actor: str) -> list[tuple[str, str]]:
    """One function for the CLI and the API: validated URL, N tokens, N YAML files."""
    try:
        provisioning.parse(provisioning.render(provisioning.Provisioning(
            server_url=server_url, ca_sha256=authority.ca_fingerprint, token=None,
            municipality=authority.municipality)))
    except ProtocolError as exc:
        raise ApiError(400, exc.reason, exc.detail) from None
    tokens = store.create_tokens(count, ttl, actor)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(store.clock()))
    return [
        (f"kiosk-provision-{stamp}-{i + 1:03d}.yaml", provisioning.render(provisioning.Provisioning(
            server_url=server_url, ca_sha256=authority.ca_fingerprint, token=token,
            municipality=authority.municipality)))
        for i, token in enumerate(tokens)
    ]


@route("GET", "/api/audit", "audit.read", "The audit log, newest last (?device_id=&limit=&after=)",
       response=list[s.AuditOut])
async def get_audit(request: web.Request) -> web.StreamResponse:
    try:
        limit = min(max(int(request.query.get("limit", "200")), 1), 1000)
        after = int(request.query.get("after", "0"))
    except ValueError:
        raise ApiError(400, "invalid", "limit and after must be whole numbers") from None
    entries = request.app[STORE].audit_entries(request.query.get("device_id"), limit, after)
    return json_response([s.AuditOut(e.seq, e.at, e.actor, e.action, e.device_id, e.detail, e.hash)
                          for e in entries])


def routes() -> list[web.RouteDef]:
    return [web.route(r.method, r.path, r.handler) for r in ROUTES]
