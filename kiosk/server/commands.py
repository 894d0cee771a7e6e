"""Queueing signed commands and accepting signed results: one path for API and CLI."""

from __future__ import annotations

import json
import uuid
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from kiosk.protocol import messages as m
from kiosk.protocol import screen_settings, screenshot, signing
from kiosk.protocol.errors import ProtocolError
from kiosk.server.ca import Authority
from kiosk.server.store import CommandRow, Store

DEFAULT_TTL_SECONDS = 24 * 3600.0
#: Which state a device is in after it reports a successful command of this kind.
STATE_AFTER = {"assign": "assigned", "wipe": "enrolled-unassigned"}


class CommandError(Exception):
    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code, self.status = code, status


def parse_action(kind: str, args: dict[str, Any]) -> m.CommandAction:
    """Build a command action from its kind and loosely typed arguments (CLI ``k=v``, JSON)."""
    if kind not in m.COMMAND_KINDS:
        raise CommandError("unknown-kind", f"unknown command {kind!r}; choose one of {', '.join(m.COMMAND_KINDS)}")
    try:
        return m.convert({"type": kind, **args}, m.CommandAction, strict=False)
    except ProtocolError as exc:
        raise CommandError("invalid-arguments", f"arguments for {kind}: {exc.detail}") from None


def queue(store: Store, authority: Authority, device_id: str, action: m.CommandAction,
          actor: str, ttl_seconds: float = DEFAULT_TTL_SECONDS) -> m.Command:
    """Sign a command and store it as pending; the hub delivers it when the device is online."""
    if isinstance(action, m.SetConfig):  # refused here, at once, rather than by the unit later
        try:
            screen_settings.merged(screen_settings.ScreenSettings(), action.settings)
        except ProtocolError as exc:
            raise CommandError("invalid-arguments", f"arguments for set-config: {exc.detail}") from None
    if not 0 < ttl_seconds <= signing.MAX_COMMAND_LIFETIME_SECONDS:
        raise CommandError("invalid-expiry", "expiry must be between 1 second and 30 days")
    device = store.device(device_id)
    if device is None:
        raise CommandError("unknown-device", f"no device with id {device_id}", 404)
    if device.revoked_at is not None:
        raise CommandError("device-revoked", f"device {device_id} is revoked", 409)
    now = store.clock()
    command = m.Command(id=str(uuid.uuid4()), device_id=device_id, issued_at=now,
                        expires_at=now + ttl_seconds, action=action)
    envelope = signing.seal(authority.command_key, command)
    with store.tx() as conn:
        store.add_command(conn, command.id, device_id, command.kind, m.encode(envelope), actor,
                          command.expires_at)
        # Personal data (an assignment's citizen name) stays out of the audit log.
        store.append_audit(conn, actor, "command-queued", device_id, command_id=command.id,
                           kind=command.kind, expires_at=command.expires_at)
    return command


def device_public_key(cert_pem: str) -> signing.PublicKey:
    key = x509.load_pem_x509_certificate(cert_pem.encode()).public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    return key


def accept_result(store: Store, device_id: str, cert_pem: str, envelope: m.SignedEnvelope) -> m.CommandResult:
    """Verify a device's signed result and record it; raises ProtocolError if not genuine."""
    result = signing.open_result(envelope, device_public_key(cert_pem))
    if result.device_id != device_id:
        raise ProtocolError("wrong-device", "result names another device")
    row = store.command(result.command_id)
    if row is None or row.device_id != device_id:
        raise ProtocolError("unknown-command", f"no command {result.command_id} for this device")
    refused = _refusal(result, row.kind)
    result_json = m.to_builtins(result)
    outcome, reason = result.outcome, result.reason
    if refused is not None:  # kept as proof of what the unit sent, without its unusable content
        outcome, reason = "failed", f"the unit's result was refused: {refused.detail}"
        result_json = {**result_json, "outcome": outcome, "reason": reason, "detail": {}}
    with store.tx() as conn:
        fresh = store.finish_command(conn, result.command_id, outcome, reason, m.encode(envelope), result_json)
        if fresh:
            action = "wipe-receipt" if result.kind == "wipe" and outcome == "ok" else "command-result"
            if action == "wipe-receipt":
                store.release_device(conn, device_id)
            # A look at the screen: the citizen's answer is audited, the picture never is.
            answer = {"answer": result.detail["answer"]} if row.kind == "screenshot" and outcome == "ok" else {}
            store.append_audit(conn, f"device:{device_id}", action, device_id, command_id=result.command_id,
                               kind=result.kind, outcome=outcome, reason=reason,
                               receipt=result.detail if action == "wipe-receipt" else None,
                               signature=envelope.signature.hex(), **answer)
    if refused is not None:
        raise refused
    return result


def _refusal(result: m.CommandResult, queued_kind: str) -> ProtocolError | None:
    """Why a genuinely signed result still cannot be taken (its content breaks the rules), or None.
    Judged by the kind the server queued, whatever kind the result claims."""
    if queued_kind == "screenshot" and result.outcome == "ok":
        try:
            screenshot.read_result(result.detail)
        except ProtocolError as exc:
            return exc
    return None


def result_verified(row: CommandRow, cert_pem: str | None) -> bool:
    """Re-check the stored signed result against the device certificate, now."""
    if row.result_envelope is None or cert_pem is None:
        return False
    try:
        envelope = m.Codec(m.SignedEnvelope).decode(row.result_envelope)
        signing.open_result(envelope, device_public_key(cert_pem))
    except ProtocolError:
        return False
    return True


def view(row: CommandRow, cert_pem: str | None) -> dict[str, Any]:
    """A command as the CLI and API show it, with its result's signature checked again."""
    return {
        "id": row.id, "device_id": row.device_id, "kind": row.kind, "state": str(row.state),
        "created_by": row.created_by, "created_at": row.created_at, "expires_at": row.expires_at,
        "delivered_at": row.delivered_at, "finished_at": row.finished_at, "outcome": row.outcome,
        "reason": row.reason, "result": json.loads(row.result) if row.result else None,
        "result_verified": result_verified(row, cert_pem),
    }
