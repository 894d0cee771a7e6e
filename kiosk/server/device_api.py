"""The device port: CA certificate, enrollment, and the mutual-TLS WebSocket.

The TLS layer asks every client for a certificate but lets enrollment through without
one (a new unit has none yet); the WebSocket refuses any connection whose certificate
is missing, unknown, superseded or revoked, before the upgrade.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from aiohttp import WSCloseCode, WSMsgType, web
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from kiosk.protocol import messages as m
from kiosk.protocol import signing
from kiosk.protocol.errors import ProtocolError
from kiosk.server import ca, commands, enrollment, rollout
from kiosk.server.ca import Authority
from kiosk.server.calls import CallManager
from kiosk.server.hub import DeviceLink, Hub
from kiosk.server.store import Contended, Store, StoreUnavailable, sha256_hex

log = logging.getLogger("kiosk.server.devices")

HEARTBEAT_INTERVAL_SECONDS = 30.0
#: A result that could not be stored (the database did not answer) is tried again this often,
#: while its unit stays connected; it is acknowledged only once stored, so the unit keeps it.
RESULT_RETRY_SECONDS = 1.0
#: Frames up to this size are read and, if over the protocol limit, refused with a reason
#: while the connection stays; larger ones close the connection (aiohttp's own limit).
WS_FRAME_LIMIT = 4 * 1024 * 1024
REFUSAL_STATUS = {"token-unknown": 403, "token-used": 409, "token-held": 409, "device-revoked": 403,
                  "enrollment-rejected": 403}

AUTHORITY: web.AppKey[Authority] = web.AppKey("authority", Authority)
STORE: web.AppKey[Store] = web.AppKey("store", Store)
HUB: web.AppKey[Hub] = web.AppKey("hub", Hub)
CALLS: web.AppKey[CallManager] = web.AppKey("calls", CallManager)
DESK: web.AppKey[commands.CommandDesk] = web.AppKey("desk", commands.CommandDesk)
DATA: web.AppKey[Path] = web.AppKey("data", Path)


def error(status: int, code: str, message: str) -> web.Response:
    return web.Response(status=status, body=m.encode(m.ErrorResponse(code, message)),
                        content_type="application/json")


def json_response(value: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=m.encode(value), content_type="application/json")


async def ca_certificate(request: web.Request) -> web.Response:
    """Public: a new unit fetches this and checks it against the pin in its provisioning file."""
    return web.Response(text=request.app[AUTHORITY].ca_pem, content_type="application/x-pem-file")


async def enroll(request: web.Request) -> web.Response:
    """Enroll a unit, repeat the answer to a unit that lost it, or hold it for approval."""
    authority, store = request.app[AUTHORITY], request.app[STORE]
    body = await _read_at_most(request, m.ENROLL_REQUEST._max_bytes + 1)
    try:
        req = m.ENROLL_REQUEST.decode(body)
        key = ca.key_fingerprint(ca.device_key(req.csr_pem))  # a bad CSR never touches the token
    except ProtocolError as exc:
        return error(400, exc.reason, f"enrollment request refused: {exc.detail}")
    try:  # the certificate's signature and the transaction run off the event loop: units stay served
        return await asyncio.to_thread(_enroll, request.remote, authority, store, req, key)
    except (Contended, sa.exc.IntegrityError):  # a retry raced its own first request: ask it to try again
        return error(503, "busy", "another request for this token is being handled; try again")


async def _read_at_most(request: web.Request, limit: int) -> bytes:
    """The body up to ``limit`` bytes: one read returns what has arrived so far, which on a slow
    link (or a loaded server) is only part of it, and a part is not "malformed"."""
    body = b""
    while len(body) < limit and (chunk := await request.content.read(limit - len(body))):
        body += chunk
    return body


def _enroll(peer: str | None, authority: Authority, store: Store, req: m.EnrollRequest, key: str) -> web.Response:
    version = req.agent_version[:64]
    serial = "".join(c for c in req.serial_number if c.isprintable())[:64]
    token_hash, now = sha256_hex(req.token), store.clock()
    with store.tx() as conn:
        token = store.enroll_token(conn, token_hash)
        issued = store.device(token.used_by_device, conn) if token is not None and token.used_by_device else None
        held = store.enrollment_hold(conn, token_hash)
        decision = enrollment.decide(
            enrollment.Token(token.expires_at, token.used_at) if token is not None else None,
            enrollment.Issued(issued.id, ca.key_fingerprint(x509.load_pem_x509_certificate(issued.cert_pem.encode())),
                              issued.revoked_at is not None) if issued is not None else None,
            enrollment.Held(held.device_id, held.key_sha256, held.state) if held is not None else None,
            key, now)
        match decision:
            case enrollment.Issue(device_id=reserved, approved=approved):
                device_id = reserved or str(uuid.uuid4())
                store.use_token(conn, token_hash, device_id, now)
                cert = authority.issue_device_certificate(req.csr_pem, device_id, now)
                cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
                store.add_device(conn, device_id, format(cert.serial_number, "x"), cert_pem, version)
                if approved:
                    store.set_hold_state(conn, token_hash, enrollment.ENROLLED)
                store.append_audit(conn, f"device:{device_id}", "device-enrolled", device_id,
                                   agent_version=version, approved=approved, peer=peer)
                log.info("device %s enrolled", device_id)
                return _enrolled(authority, device_id, cert_pem)
            case enrollment.Repeat(device_id=device_id):
                assert issued is not None
                store.append_audit(conn, f"device:{device_id}", "device-enrollment-retried", device_id,
                                   agent_version=version, peer=peer)
                log.info("device %s repeated its enrollment (its first answer was lost)", device_id)
                return _enrolled(authority, device_id, issued.cert_pem)
            case enrollment.Wait(device_id=reserved):
                assert token is not None
                device_id = reserved or str(uuid.uuid4())
                if store.hold_enrollment(conn, token_hash, device_id, key, serial, version, now):
                    # the serial number stays in the hold, not in the append-only log: the unit is
                    # not let in yet, so what it says is not written for good
                    store.append_audit(conn, "anonymous", "enrollment-held", device_id,
                                       batch=enrollment.batch_label(token.created_at, token.created_by),
                                       peer=peer)
                    log.info("unit %s held for approval: its token expired unused", device_id)
                return json_response(m.EnrollHeld(device_id, enrollment.held_message(device_id, serial)), status=202)
            case enrollment.Refuse(code=code, message=message):
                store.append_audit(conn, "anonymous", "enrollment-refused", None, reason=code, peer=peer)
                return error(REFUSAL_STATUS[code], code, message)


def _enrolled(authority: Authority, device_id: str, cert_pem: str) -> web.Response:
    return json_response(m.EnrollResponse(
        device_id=device_id, certificate_pem=cert_pem, ca_pem=authority.ca_pem,
        command_public_key_pem=authority.command_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode(),
        municipality=authority.municipality, heartbeat_interval=HEARTBEAT_INTERVAL_SECONDS,
    ))


async def _peer_device(request: web.Request) -> tuple[str, str, signing.PublicKey] | web.Response:
    """The device id, certificate and its public key of a verified client, or the refusal to send."""
    ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
    der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
    if not der:
        return error(401, "certificate-required", "a device certificate is required")
    cert = x509.load_der_x509_certificate(der)
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    device_id = str(cn[0].value) if cn else ""
    try:
        row = await request.app[STORE].run(Store.device, device_id)
    except StoreUnavailable as exc:  # the unit tries again after its backoff; those connected stay
        log.warning("device %s could not connect: %s", device_id, exc)
        return error(503, "database-unavailable", "the server's database is not answering; try again shortly")
    if row is None or row.cert_serial != format(cert.serial_number, "x"):
        return error(403, "unknown-device", "this certificate is not registered")
    if row.revoked_at is not None:
        return error(403, "revoked", "this device has been revoked")
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):  # our CA signs P-256 keys only
        return error(403, "unknown-device", "this certificate's key is not a device key")
    return device_id, row.cert_pem, key


async def device_socket(request: web.Request) -> web.StreamResponse:
    peer = await _peer_device(request)
    if isinstance(peer, web.Response):
        log.info("refused device socket: %s", peer.text)
        return peer
    device_id, cert_pem, device_key = peer
    hub = request.app[HUB]
    # No permessage-deflate, though a client offers it: its zlib state is ~300 KiB a connection
    # (most of what a held unit cost; docs/benchmarks.md) for messages that are small JSON or
    # already-compressed pictures, and compression under TLS is a side channel we do not need.
    ws = web.WebSocketResponse(max_msg_size=WS_FRAME_LIMIT, heartbeat=HEARTBEAT_INTERVAL_SECONDS * 2,
                               compress=False)
    await ws.prepare(request)

    async def send(message: m.ServerToDevice) -> None:
        if ws.closed:
            raise ConnectionError("socket closed")
        await ws.send_str(m.encode(message).decode())

    link = DeviceLink(device_id, cert_pem, send, ws.close, device_key=device_key)
    await send(m.Welcome(device_id=device_id, server_time=hub.clock(),
                         heartbeat_interval=HEARTBEAT_INTERVAL_SECONDS))
    await hub.attach(link)
    log.info("device %s connected", device_id)
    retries: set[asyncio.Task[None]] = set()
    try:
        with _database_may_fail(device_id):  # the sweep delivers them once it answers again
            await hub.deliver_pending(device_id)
        async for frame in ws:
            if frame.type == WSMsgType.TEXT:
                with _database_may_fail(device_id):
                    await _handle(link, frame.data.encode(), hub, request.app[DESK], request.app[CALLS], retries)
            elif frame.type == WSMsgType.BINARY:
                await send(m.Rejected(reason="malformed", detail="text frames only"))
            elif frame.type == WSMsgType.ERROR:
                break
    finally:
        for retry in retries:  # the unit keeps the result and sends it again when it reconnects
            retry.cancel()
        # A unit that closed the connection itself (a close frame, whatever its code: its agent
        # stopping sends one) is gone; a connection that died without a word is held for the
        # grace period, since a 4G blink is not "offline".
        hub.detach(link, grace=ws.close_code in (None, WSCloseCode.ABNORMAL_CLOSURE))
        log.info("device %s disconnected", device_id)
    return ws


@contextlib.contextmanager
def _database_may_fail(device_id: str) -> Iterator[None]:
    """A database that does not answer costs this message, never the unit's connection."""
    try:
        yield
    except StoreUnavailable as exc:
        log.warning("device %s: %s", device_id, exc)


async def _handle(link: DeviceLink, data: bytes, hub: Hub, desk: commands.CommandDesk, calls: CallManager,
                  retries: set[asyncio.Task[None]]) -> None:
    try:
        message = m.DEVICE_TO_SERVER.decode(data)
    except ProtocolError as exc:
        log.info("device %s sent a bad message: %s", link.device_id, exc.reason)
        await link.send(m.Rejected(reason=exc.reason, detail=exc.detail[:500]))
        return
    match message:
        case m.Hello(state=state, ui_alive=ui_alive) | m.Heartbeat(state=state, ui_alive=ui_alive):
            link.state, link.ui_alive = state, ui_alive
            hub.seen(link)
            if isinstance(message, m.Heartbeat):
                await link.send(m.HeartbeatAck(seq=message.seq, sent_at=message.sent_at, server_time=hub.clock()))
        case m.CommandAck(command_id=command_id):
            hub.seen(link)
            desk.acknowledged(command_id)
        case m.ResultDelivery(envelope=envelope):
            try:
                await _accept_result(link, envelope, hub, desk)
            except StoreUnavailable as exc:
                log.warning("device %s: its result waits (%s)", link.device_id, exc)
                retry = asyncio.create_task(_accept_result_when_stored(link, envelope, hub, desk))
                retries.add(retry)
                retry.add_done_callback(retries.discard)
        case m.Rejected(reason=reason):
            log.info("device %s rejected a server message: %s", link.device_id, reason)
        case m.UpdateProgress():
            hub.seen(link)
            await hub.store.run(rollout.on_progress, link.device_id, message)
        case (m.CallRinging() | m.CallOffer() | m.CallAnswer() | m.CallConnected() | m.CallHangUp()
              | m.CallQualityReport()):
            hub.seen(link)
            await calls.from_device(link.device_id, message)


async def _accept_result(link: DeviceLink, envelope: m.SignedEnvelope, hub: Hub, desk: commands.CommandDesk) -> None:
    """Store a verified result, then acknowledge it: the unit keeps it until it hears so."""
    # Results come only over a unit's own socket, whose link carries its certificate's key
    # (a link to a unit on another process has none, and sends only).
    assert link.device_key is not None
    try:
        result = await desk.report(link.device_id, link.device_key, envelope)
    except ProtocolError as exc:
        log.warning("device %s sent a result that was refused: %s", link.device_id, exc.reason)
        await link.send(m.ResultAck(command_id=commands.claimed_command_id(envelope), accepted=False,
                                    reason=exc.reason))
        return
    if result.outcome == "ok" and result.kind in commands.STATE_AFTER:
        link.state = commands.STATE_AFTER[result.kind]
    if result.kind == "update":
        await hub.store.run(rollout.on_result, link.device_id, result)
    hub.seen(link)
    await link.send(m.ResultAck(command_id=result.command_id, accepted=True))


async def _accept_result_when_stored(link: DeviceLink, envelope: m.SignedEnvelope, hub: Hub,
                                     desk: commands.CommandDesk) -> None:
    while True:
        await asyncio.sleep(RESULT_RETRY_SECONDS)
        with contextlib.suppress(StoreUnavailable):
            await _accept_result(link, envelope, hub, desk)
            log.info("device %s: its result is stored now", link.device_id)
            return


async def release_bundle(request: web.Request) -> web.StreamResponse:
    """An OS release's signed bundle, for enrolled units only; RAUC streams it in ranges."""
    peer = await _peer_device(request)
    if isinstance(peer, web.Response):
        return peer
    path = rollout.bundle_path(request.app[DATA], request.match_info["name"])
    if path is None:
        return error(404, "unknown-release", "no such release bundle")
    response = web.FileResponse(path, headers={"Content-Type": "application/octet-stream"})
    await response.prepare(request)  # sends the range asked for; what it cost is worth a line
    log.debug("release bundle %s: %s bytes to device %s", path.name, response.content_length, peer[0])
    return response


def routes() -> list[web.RouteDef]:
    return [
        web.get("/ca.pem", ca_certificate),
        web.post("/api/v1/enroll", enroll),
        web.get("/api/v1/socket", device_socket),
        web.get(rollout.BUNDLE_URL_PREFIX + "{name}", release_bundle),
    ]
