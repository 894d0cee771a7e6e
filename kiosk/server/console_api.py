"""The console port's JSON API for people: login, devices, commands, tokens, audit.

Every route states in the route table the permission it needs and what it may answer;
the middleware refuses, in this order, a request from another site's page (or not JSON,
if it changes anything), no session (cookie, or the same token as a Bearer header for
scripts), no permission, and only then does the handler read the input. The OpenAPI
document is built from the same table, so it states the statuses the server really sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec
from aiohttp import web

from kiosk.protocol import messages as m
from kiosk.protocol import provisioning
from kiosk.protocol.errors import ProtocolError
from kiosk.server import api_schema as s
from kiosk.server import audit, auth, calls, commands, photos, schedule
from kiosk.server.ca import Authority
from kiosk.server.device_api import AUTHORITY, DESK, HUB, STORE, error, json_response
from kiosk.server.hub import Hub
from kiosk.server.login_guard import LoginGuard, Scope
from kiosk.server.store import CitizenRow, CommandRow, DeviceRow, Store, StoreUnavailable, UserRow

Q = TypeVar("Q")

SESSION_COOKIE = "kiosk_session"
MAX_BODY_BYTES = 64 * 1024
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
USER: web.RequestKey[UserRow] = web.RequestKey("user", UserRow)
SECURE_COOKIE: web.AppKey[bool] = web.AppKey("secure_cookie", bool)
#: Origins besides the console's own (scheme://Host) whose pages may act, e.g. behind a reverse proxy.
EXTRA_ORIGINS: web.AppKey[frozenset[str]] = web.AppKey("extra_origins", frozenset)
LOGIN_GUARD: web.AppKey[LoginGuard] = web.AppKey("login_guard", LoginGuard)
#: Reverse proxies in front of the console, whose X-Forwarded-For names the real client.
TRUSTED_PROXIES: web.AppKey[frozenset[str]] = web.AppKey("trusted_proxies", frozenset)

PUBLIC = "public"  # the permission of a route anyone may call (only logging in)
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class RouteInfo(msgspec.Struct, frozen=True):
    """One route: what it needs and what it may answer. The guard and the OpenAPI document read it."""

    method: str
    path: str
    #: None means "any logged-in person"; a ``command:*`` permission means "some command"
    permission: str | None
    summary: str
    body: Any
    response: Any
    handler: Any
    status: int  # the status of success
    query: Any  # a struct of the query parameters, or None
    errors: frozenset[int]  # refusals beyond those that follow from the rest
    websocket: bool
    media_type: str = "application/json"  # of the success's body (text/csv for a download)

    @property
    def error_statuses(self) -> list[int]:
        """Every refusal this route may answer, each with a JSON ErrorResponse."""
        refusals = set(self.errors)
        if self.body is not None or self.query is not None:
            refusals.add(400)
        if self.body is not None:
            refusals.add(413)
        if self.permission != PUBLIC:
            refusals.add(401)
        if self.permission not in (PUBLIC, None) or self.method in STATE_CHANGING or self.websocket:
            refusals.add(403)  # a role without the permission, or a page of another origin
        if self.method in STATE_CHANGING:
            refusals.add(415)
        if "{" in self.path:
            refusals.add(404)
        if self.websocket:
            refusals.add(426)
        return sorted(refusals)


ROUTES: list[RouteInfo] = []


def route(method: str, path: str, permission: str | None, summary: str, body: Any = None,
          response: Any = None, *, status: int = 200, query: Any = None, errors: tuple[int, ...] = (),
          websocket: bool = False, media_type: str = "application/json") -> Callable[[Handler], Handler]:
    """Register a handler with what it needs; the guard and the OpenAPI document read this table."""
    def wrap(handler: Handler) -> Handler:
        ROUTES.append(RouteInfo(method, path, permission, summary, body, response, handler, status, query,
                                frozenset(errors), websocket, media_type))
        return handler
    return wrap


def _route_of(request: web.Request) -> RouteInfo | None:
    resource = request.match_info.route.resource
    path = resource.canonical if resource else ""
    return next((r for r in ROUTES if r.method == request.method and r.path == path), None)


async def read_body(request: web.Request, body_type: Any) -> Any:
    return decode(body_type, await read_raw(request))


async def read_raw(request: web.Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The body, at most ``limit`` bytes (413 beyond); an empty body is an empty object."""
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, "oversized", f"request body over {limit} bytes")
    raw = await request.content.read(limit + 1)
    if len(raw) > limit:
        raise ApiError(413, "oversized", f"request body over {limit} bytes")
    return raw or b"{}"


def decode(body_type: Any, raw: bytes) -> Any:
    """A JSON body as ``body_type``, or 400 with the reason."""
    try:
        return m.convert(_whole_numbers(msgspec.json.decode(raw)), body_type)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise ApiError(400, "malformed", f"the body is not JSON: {str(exc)[:200]}") from None
    except ProtocolError as exc:
        raise ApiError(400, exc.reason, exc.detail) from None


def _whole_numbers(value: Any) -> Any:
    """JSON knows numbers, not integers: ``1.0`` is the integer 1, as in the OpenAPI document."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_whole_numbers(v) for v in value]
    if isinstance(value, dict):
        return {k: _whole_numbers(v) for k, v in value.items()}
    return value


def read_query(request: web.Request, query_type: type[Q]) -> Q:
    """The query as ``query_type``, each parameter read as its type ("5" a number); a parameter
    given twice, or given as "null" (lax reading's None: absent is how a query says none), is refused."""
    if len(request.query) != len(set(request.query)):
        repeated = next(k for k in request.query if len(request.query.getall(k)) > 1)
        raise ApiError(400, "repeated-parameter", f"the query names {repeated[:40]!r} more than once")
    try:
        query: Q = m.convert(dict(request.query), query_type, strict=False)
    except ProtocolError as exc:
        raise ApiError(400, exc.reason, exc.detail) from None
    if nulls := [k for k in request.query if getattr(query, k, "") is None]:
        raise ApiError(400, "invalid", f"{nulls[0]!r}: {request.query[nulls[0]][:40]!r} is not a value; leave it out")
    return query


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.headers = status, code, headers or {}


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse in this order: another origin, no session, no permission; only then read input."""
    info = _route_of(request)
    try:
        if info is not None:
            if info.method in STATE_CHANGING or info.websocket:
                refuse_cross_site(request, json_required=info.method in STATE_CHANGING)
            if info.permission != PUBLIC:
                user = await session_user(request)
                if user is None:
                    raise ApiError(401, "login-required", "please log in")
                request[USER] = user
                if info.permission is not None and not auth.may(user.role, info.permission):
                    raise ApiError(403, "forbidden", f"the role {user.role} may not do this ({info.permission})")
        return await handler(request)
    except ApiError as exc:
        if exc.status == 403 and USER in request:  # every 403 of a logged-in person, wherever raised
            await refused(request, request[USER], exc.code)
        response = error(exc.status, exc.code, str(exc))
        response.headers.update(exc.headers)
        return response
    except commands.CommandError as exc:
        return error(exc.status, exc.code, str(exc))
    except StoreUnavailable as exc:  # nothing was saved, and the person is told so
        response = error(503, "database-unavailable", str(exc))
        response.headers["Retry-After"] = "5"
        return response


async def refused(request: web.Request, user: UserRow, reason: str) -> None:
    """A logged-in person refused outside their role (an API route or a page): the route's
    pattern (never the ids in the path, which may name a citizen) and why go to the audit log."""
    resource = request.match_info.route.resource
    await request.app[STORE].run(audited, user.username, "access-refused", role=user.role, method=request.method,
                                 route=resource.canonical if resource else "", reason=reason)


def audited(store: Store, /, actor: str, action: str, **detail: Any) -> None:
    """One audit entry (of no device) in a transaction of its own."""
    with store.tx() as conn:
        store.append_audit(conn, actor, action, None, **detail)


def refuse_cross_site(request: web.Request, json_required: bool) -> None:
    """A page of another site may make a browser send requests with our cookie; refuse them.

    Browsers name the page's origin in ``Origin`` on every POST and WebSocket and say how it
    relates to us in ``Sec-Fetch-Site``; programs send neither, and need a session they got by
    logging in. ``SameSite`` alone is not enough: other hosts of the same domain are same-site.
    A body that must be ``application/json`` cannot be sent by a plain HTML form.
    """
    origin = request.headers.get("Origin")
    own = request.app[EXTRA_ORIGINS] | {f"{request.scheme}://{request.host}"}
    if origin is not None and origin not in own:
        raise ApiError(403, "cross-origin", f"requests from pages of {origin[:100]} are refused")
    if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
        raise ApiError(403, "cross-origin", "requests from pages of other sites are refused")
    if json_required and request.content_type != "application/json":
        raise ApiError(415, "json-required", "send the request as Content-Type: application/json")


async def session_user(request: web.Request) -> UserRow | None:
    token = request.cookies.get(SESSION_COOKIE)
    header = request.headers.get("Authorization", "")
    if not token and header.startswith("Bearer "):
        token = header[7:]
    return await request.app[STORE].run(Store.session_user, token, auth.SESSION_IDLE_SECONDS) if token else None


def client_address(request: web.Request) -> str:
    """Who is asking: the peer, or behind a trusted reverse proxy the client it names.

    Behind a proxy every request comes from the proxy's address; without this, one guesser
    would hold back everyone. Only the entry the proxy itself added is believed.
    """
    peer = request.remote or "unknown"
    forwarded = request.headers.get("X-Forwarded-For", "")
    if peer in request.app[TRUSTED_PROXIES] and forwarded:
        named = forwarded.rsplit(",", 1)[-1].strip()
        with contextlib.suppress(ValueError):
            return str(ipaddress.ip_address(named))
    return peer


def actor(request: web.Request) -> str:
    return str(request[USER].username)


# ------------------------------------------------------------------------- session
@route("POST", "/api/login", PUBLIC, "Log in; sets the session cookie. Failed logins make the next "
       "attempt from that address, and then for that account, wait (429 with Retry-After)",
       s.LoginRequest, s.Me, errors=(401, 429))
async def login(request: web.Request) -> web.StreamResponse:
    store, login_guard = request.app[STORE], request.app[LOGIN_GUARD]
    req: s.LoginRequest = await read_body(request, s.LoginRequest)
    address = client_address(request)
    user = await store.run(Store.user, req.username)
    account = user.username if user else None  # a typed name that is no account is kept nowhere
    await admit_login(request, address, account)
    # argon2 takes ~150 ms of CPU on purpose: off the event loop, so devices are not held up
    if not await asyncio.to_thread(auth.check_password, user.password_hash if user else None, req.password) \
            or user is None:  # check_password already refused it; this tells the type checker
        await login_failed(request, address, account, method="password")
        return error(401, "bad-credentials", "wrong user name or password")
    await login_guard.run(LoginGuard.succeeded, address, user.username)
    if auth.needs_rehash(user.password_hash):
        rehashed = await asyncio.to_thread(auth.hash_password, req.password)
        await store.run(Store.set_password_hash, user.username, rehashed)
    return await open_session(request, json_response(s.Me(user.username, user.role)), user.username, address,
                              method="password")


async def admit_login(request: web.Request, address: str, account: str | None) -> None:
    """Every login path asks first: 429 while this address (or account) must wait."""
    refusal = await request.app[LOGIN_GUARD].run(LoginGuard.admit, address, account)
    if refusal is not None:
        raise ApiError(429, "too-many-attempts",
                       f"too many failed logins; try again in {refusal.retry_after} seconds",
                       {"Retry-After": str(refusal.retry_after)})


async def login_failed(request: web.Request, address: str, account: str | None, **detail: str) -> None:
    """Every login path's failure: counted against the address (and account), and audited."""
    failures, throttles = await request.app[LOGIN_GUARD].run(LoginGuard.failed, address, account)

    def record(store: Store) -> None:
        with store.tx() as conn:
            store.append_audit(conn, audit.ANONYMOUS, "login-failed", None, peer=address,
                               failures_from_peer=failures, **({"account": account} if account else {}), **detail)
            for throttle in throttles:
                store.append_audit(conn, audit.SERVER, "login-throttled", None,
                                   **{throttle.scope.kind: throttle.scope.value},
                                   failures=throttle.failures, retry_after=throttle.retry_after)
    await request.app[STORE].run(record)


async def open_session(request: web.Request, response: web.StreamResponse, username: str, address: str,
                       method: str) -> web.StreamResponse:
    """Every login path ends here: a new session, its audit entry, and its cookie on ``response``."""
    def begin(store: Store) -> str:
        token = store.create_session(username, auth.SESSION_TTL_SECONDS)
        audited(store, username, "login", peer=address, method=method)
        return token
    token = await request.app[STORE].run(begin)
    response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="Strict",
                        secure=request.app[SECURE_COOKIE], max_age=int(auth.SESSION_TTL_SECONDS), path="/")
    return response


@route("POST", "/api/logout", None, "End the session", s.Empty, status=204)
async def logout(request: web.Request) -> web.StreamResponse:
    await read_body(request, s.Empty)
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        await request.app[STORE].run(Store.end_session, token)
    response = web.Response(status=204)
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


@route("GET", "/api/me", None, "Who is logged in", response=s.Me)
async def me(request: web.Request) -> web.StreamResponse:
    user = request[USER]
    return json_response(s.Me(user.username, user.role))


@route("GET", "/api/login-backoff", "users.unlock", "Addresses and accounts with failed logins on record",
       response=list[s.BackoffOut])
async def login_backoff(request: web.Request) -> web.StreamResponse:
    return json_response([s.BackoffOut(scope.kind, scope.value, state.failures, state.blocked_until)
                          for scope, state in await request.app[LOGIN_GUARD].run(LoginGuard.held)])


@route("POST", "/api/login-backoff/unlock", "users.unlock",
       "Lift the login wait of an account or a client address", s.UnlockRequest, status=204, errors=(404,))
async def unlock(request: web.Request) -> web.StreamResponse:
    req: s.UnlockRequest = await read_body(request, s.UnlockRequest)
    scope = Scope("account", req.account) if isinstance(req, s.UnlockAccount) else Scope("address", req.address)
    if not await request.app[LOGIN_GUARD].run(LoginGuard.unlock, scope, actor(request)):
        raise ApiError(404, "not-held", "no failed logins on record for that")
    return web.Response(status=204)


#: A photo arrives as base64 in JSON: within the server's 1 MiB request limit.
PHOTO_BODY_BYTES = 960 * 1024


@route("PUT", "/api/users/{username}/photo", "users.manage",
       "Set the photo the citizen's screen shows when this person calls (PNG, JPEG or WebP, made small)",
       s.PhotoIn, status=204, errors=(404, 413))
async def set_user_photo(request: web.Request) -> web.StreamResponse:
    req = decode(s.PhotoIn, await read_raw(request, PHOTO_BODY_BYTES))
    try:
        photo = await asyncio.to_thread(photos.normalize, req.image)  # decoding a phone's photo: not on the loop
    except photos.PhotoError as exc:
        raise ApiError(400, "bad-photo", str(exc)) from None
    if not await request.app[STORE].run(Store.set_user_photo, request.match_info["username"], photo, actor(request)):
        raise ApiError(404, "unknown-user", "no such user")
    return web.Response(status=204)


# ------------------------------------------------------------------------- devices
def device_out(row: DeviceRow, hub: Hub) -> s.DeviceOut:
    link = hub.reach(row.id)
    return s.DeviceOut(
        id=row.id, state=link.state if link else row.state, online=link is not None,
        online_since=link.connected_at if link else None,
        last_seen=link.last_seen if link else row.last_seen,
        ui_alive=link.ui_alive if link else None, agent_version=row.agent_version,
        enrolled_at=row.enrolled_at, revoked=row.revoked_at is not None,
    )


@route("GET", "/api/devices", "devices.read", "Enrolled devices, oldest first, a page at a time",
       response=list[s.DeviceOut], query=s.PageQuery)
async def list_devices(request: web.Request) -> web.StreamResponse:
    q, hub = read_query(request, s.PageQuery), request.app[HUB]
    return json_response([device_out(r, hub) for r in await request.app[STORE].run(Store.devices, q.limit, q.offset)])


@route("GET", "/api/devices/{device_id}", "devices.read", "One device", response=s.DeviceOut)
async def get_device(request: web.Request) -> web.StreamResponse:
    row = await request.app[STORE].run(Store.device, request.match_info["device_id"])
    if row is None:
        raise ApiError(404, "unknown-device", "no such device")
    return json_response(device_out(row, request.app[HUB]))


@route("POST", "/api/devices/{device_id}/revoke", "devices.revoke", "Revoke a device for good", s.Empty,
       status=204)
async def revoke_device(request: web.Request) -> web.StreamResponse:
    await read_body(request, s.Empty)
    device_id = request.match_info["device_id"]
    if not await request.app[STORE].run(Store.revoke_device, device_id, actor(request)):
        raise ApiError(404, "unknown-device", "no such device, or already revoked")
    await request.app[HUB].disconnect(device_id)
    return web.Response(status=204)


@route("POST", "/api/devices/{device_id}/commands", auth.ANY_COMMAND, "Queue a signed command",
       s.CommandRequest, s.CommandQueued, status=202, errors=(409,))
async def send_command(request: web.Request) -> web.StreamResponse:
    raw = await _command_body(request)
    req = decode(s.CommandRequest, raw)
    command = await request.app[DESK].send(request.match_info["device_id"], s.command_action(req),
                                           actor(request), req.expires_in)
    row = await request.app[STORE].run(Store.command, command.id)
    assert row is not None  # just stored; commands are never deleted
    return json_response(s.CommandQueued(command.id, row.state, command.expires_at), status=202)


@route("POST", "/api/commands", auth.ANY_COMMAND, "Queue the same signed command for many units at once "
       "(each unit's command is its own, audited and delivered as if sent alone)",
       s.BulkCommandRequest, s.BulkQueued, status=202)
async def send_commands(request: web.Request) -> web.StreamResponse:
    raw = await _command_body(request)
    req = decode(s.BulkCommandRequest, raw)
    if len(set(req.device_ids)) != len(req.device_ids):
        raise ApiError(400, "duplicate-device", "a unit is named twice; name each once")
    action, who, desk = s.command_action(req), actor(request), request.app[DESK]
    commands.check_arguments(action)  # the same for every unit: one 400, not a refusal per unit
    outcomes = await desk.send_many(req.device_ids, action, who, req.expires_in)
    queued, refusals = [], []
    for device_id, outcome in zip(req.device_ids, outcomes, strict=True):
        if isinstance(outcome, commands.CommandError):
            refusals.append(s.RefusedFor(device_id, outcome.code, str(outcome)))
        elif isinstance(outcome, BaseException):
            raise outcome
        else:
            queued.append(s.QueuedFor(device_id, outcome.id, outcome.expires_at))
    return json_response(s.BulkQueued(queued, refusals), status=202)


async def _command_body(request: web.Request) -> bytes:
    """A command request's body, once its kind is known to be one this person may send.

    The permission for the kind comes first: a refusal must not depend on, or tell, what
    else is wrong.
    """
    role = request[USER].role
    raw = await read_raw(request)
    with contextlib.suppress(msgspec.DecodeError):
        kind = msgspec.json.decode(raw, type=s.CommandKind).kind
        if kind in m.COMMAND_KINDS and not auth.may(role, f"command:{kind}"):
            raise ApiError(403, "forbidden", f"the role {role} may not send {kind}")
        if kind not in m.COMMAND_KINDS:
            mine = ", ".join(k for k in m.COMMAND_KINDS if auth.may(role, f"command:{k}"))
            raise ApiError(400, "unknown-kind", f"unknown command {kind[:40]!r}; choose one of {mine}")
    return raw


@route("GET", "/api/commands/{command_id}", "devices.read", "A command's state and verified result",
       response=s.CommandOut)
async def get_command(request: web.Request) -> web.StreamResponse:
    def with_certificate(store: Store, command_id: str) -> tuple[CommandRow, DeviceRow | None] | None:
        row = store.command(command_id)
        return (row, store.device(row.device_id)) if row is not None else None
    found = await request.app[STORE].run(with_certificate, request.match_info["command_id"])
    if found is None:
        raise ApiError(404, "unknown-command", "no such command")
    row, device = found
    return json_response(commands.view(row, device.cert_pem if device else None))


# --------------------------------------------------------------- citizens and calls
@route("GET", "/api/citizens", "citizens.read", "The citizens I may call (all, for administrators), by name, "
       "a page at a time", response=list[s.CitizenOut], query=s.PageQuery)
async def my_citizens(request: web.Request) -> web.StreamResponse:
    q, user, hub = read_query(request, s.PageQuery), request[USER], request.app[HUB]
    rows = await request.app[STORE].run(Store.citizens_of, user.username,
                                        everyone=user.role in ("admin", "logistics"), limit=q.limit, offset=q.offset)
    return json_response([s.CitizenOut(r.id, r.name, r.device_id is not None and hub.reach(r.device_id) is not None)
                          for r in rows])


@route("GET", "/api/calls", "calls.read", "Call records, newest first (no media is ever recorded)",
       response=list[s.CallRecordOut])
async def call_records(request: web.Request) -> web.StreamResponse:
    return json_response([calls.record_view(r) for r in await request.app[STORE].run(Store.call_records)])


# ------------------------------------------------------------------ planned visits
async def own_citizen(request: web.Request, citizen_id: str) -> str:
    """The citizen, if this person plans their visits: administrators all, caregivers their own.
    Anyone else's citizen is "unknown", so the answer tells nothing of who exists."""
    if await request.app[STORE].run(citizen_planned_by, request[USER], citizen_id) is None:
        raise ApiError(404, "unknown-citizen", "no such citizen among yours")
    return citizen_id


def citizen_planned_by(store: Store, user: UserRow, citizen_id: str) -> CitizenRow | None:
    """The citizen, if ``user`` plans their visits (administrators: every citizen's)."""
    row = store.citizen(citizen_id)
    return row if row is not None and (user.role == "admin" or store.may_call(user.username, row.id)) else None


async def _planned_visit(request: web.Request) -> str:
    row = await request.app[STORE].run(Store.visit, request.match_info["visit_id"])
    if row is None:
        raise ApiError(404, "unknown-visit", "no such planned visit")
    await own_citizen(request, row.citizen_id)
    return row.id


async def _deliver_plan(request: web.Request, citizen_id: str) -> None:
    citizen = await request.app[STORE].run(Store.citizen, citizen_id)
    if citizen is not None and citizen.device_id is not None:
        await request.app[HUB].deliver_pending(citizen.device_id)


@route("GET", "/api/citizens/{citizen_id}/visits", "visits.read", "A citizen's planned visits",
       response=list[s.VisitOut])
async def list_visits(request: web.Request) -> web.StreamResponse:
    citizen_id = await own_citizen(request, request.match_info["citizen_id"])
    return json_response([schedule.view(r) for r in await request.app[STORE].run(Store.visits_of, citizen_id)])


@route("POST", "/api/citizens/{citizen_id}/visits", "visits.plan",
       "Plan a visit; the citizen's screen gets the new plan as a signed command",
       s.VisitIn, s.VisitOut, status=201, errors=(409,))
async def add_visit(request: web.Request) -> web.StreamResponse:
    citizen_id = await own_citizen(request, request.match_info["citizen_id"])
    req: s.VisitIn = await read_body(request, s.VisitIn)
    row = await request.app[STORE].run(schedule.add, request.app[AUTHORITY], citizen_id, msgspec.to_builtins(req),
                                       actor(request))
    await _deliver_plan(request, citizen_id)
    return json_response(schedule.view(row), status=201)


@route("PATCH", "/api/visits/{visit_id}", "visits.plan", "Move a planned visit (and its repeats)",
       s.VisitMove, s.VisitOut)
async def move_visit(request: web.Request) -> web.StreamResponse:
    visit_id = await _planned_visit(request)
    req: s.VisitMove = await read_body(request, s.VisitMove)
    row = await request.app[STORE].run(schedule.move, request.app[AUTHORITY], visit_id, req.at, actor(request))
    await _deliver_plan(request, row.citizen_id)
    return json_response(schedule.view(row))


@route("POST", "/api/visits/{visit_id}/cancel", "visits.plan", "Cancel a planned visit (and its repeats)",
       s.Empty, status=204)
async def cancel_visit(request: web.Request) -> web.StreamResponse:
    visit_id = await _planned_visit(request)
    await read_body(request, s.Empty)
    row = await request.app[STORE].run(schedule.cancel, request.app[AUTHORITY], visit_id, actor(request))
    await _deliver_plan(request, row.citizen_id)
    return web.Response(status=204)


# -------------------------------------------------------------- tokens and audit
@route("POST", "/api/enroll-tokens", "tokens.create", "Create provisioning files with one-time tokens",
       s.TokenRequest, s.TokensCreated, status=201)
async def create_tokens(request: web.Request) -> web.StreamResponse:
    req: s.TokenRequest = await read_body(request, s.TokenRequest)
    files = await request.app[STORE].run(make_provisioning_files, request.app[AUTHORITY], req.server_url,
                                         req.count, req.expires_in, actor(request))
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


@route("GET", "/api/audit", "audit.read", "The audit log, newest last", response=list[s.AuditOut],
       query=s.AuditQuery)
async def get_audit(request: web.Request) -> web.StreamResponse:
    q = read_query(request, s.AuditQuery)
    return json_response(await request.app[STORE].run(Store.audit_entries, q.device_id, q.limit, q.after,
                                                       actor=q.actor, action=q.action, since=q.since, until=q.until))


@route("GET", "/api/audit/chain", "audit.verify", "Check the audit log's hash chain, first entry to last",
       response=s.AuditChainOut)
async def check_audit_chain(request: web.Request) -> web.StreamResponse:
    store = request.app[STORE]
    # a walk over every entry: off the event loop, so devices and calls are not held up
    entries, altered = await asyncio.to_thread(store.check_audit_chain)
    return json_response(s.AuditChainOut(altered is None, entries, altered, store.clock()))


def routes() -> list[web.RouteDef]:
    return [web.route(r.method, r.path, r.handler) for r in ROUTES]
