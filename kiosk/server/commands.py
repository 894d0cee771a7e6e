"""Queueing signed commands and accepting signed results: one path for API and CLI.

Every write of a command's life (queued, acknowledged, result) goes through
:func:`write_batch`, which writes many in one transaction: the CLI calls it with one
item, the server through :class:`CommandDesk`, which gathers what arrives at once
(:mod:`kiosk.server.group_commit`) so that a mass operation costs one transaction per
batch instead of one per command, off the event loop.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy.engine import Connection

from kiosk.protocol import messages as m
from kiosk.protocol import screen_settings, screenshot, signing
from kiosk.protocol.errors import ProtocolError
from kiosk.server.ca import Authority
from kiosk.server.group_commit import GroupCommit
from kiosk.server.hub import Hub
from kiosk.server.store import CommandRow, CommandSteps, NewAuditEntry, NewCommand, Store

log = logging.getLogger("kiosk.server.commands")

DEFAULT_TTL_SECONDS = 24 * 3600.0
#: Which state a device is in after it reports a successful command of this kind.
STATE_AFTER = {"assign": "assigned", "wipe": "enrolled-unassigned"}


class CommandError(Exception):
    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code, self.status = code, status


def check_arguments(action: m.CommandAction) -> None:
    """What the message's type cannot say, refused here, at once, rather than by the unit later."""
    if isinstance(action, m.SetConfig):
        try:
            screen_settings.merged(screen_settings.ScreenSettings(), action.settings)
        except ProtocolError as exc:
            raise CommandError("invalid-arguments", f"arguments for set-config: {exc.detail}") from None


def parse_action(kind: str, args: dict[str, Any]) -> m.CommandAction:
    """Build a command action from its kind and loosely typed arguments (CLI ``k=v``, JSON)."""
    if kind not in m.COMMAND_KINDS:
        raise CommandError("unknown-kind", f"unknown command {kind!r}; choose one of {', '.join(m.COMMAND_KINDS)}")
    try:
        return m.convert({"type": kind, **args}, m.CommandAction, strict=False)
    except ProtocolError as exc:
        raise CommandError("invalid-arguments", f"arguments for {kind}: {exc.detail}") from None


@dataclass(frozen=True)
class QueueRequest:
    """Sign a command for a device and store it as pending."""

    device_id: str
    action: m.CommandAction
    actor: str
    ttl_seconds: float = DEFAULT_TTL_SECONDS


@dataclass(frozen=True)
class Acknowledgement:
    """A device says it holds this command."""

    command_id: str


@dataclass(frozen=True)
class Report:
    """A device's signed result, to verify and record."""

    device_id: str
    device_key: signing.PublicKey  # of its certificate
    envelope: m.SignedEnvelope


@dataclass(frozen=True)
class Queued:
    command: m.Command
    envelope: bytes  # the signed envelope as stored and sent


Write = QueueRequest | Acknowledgement | Report
Written = Queued | m.CommandResult | None  # for a QueueRequest, a Report, an Acknowledgement


@dataclass(frozen=True)
class _Signed:
    """A command signed before the transaction, to store as pending."""

    queued: Queued
    actor: str

    @property
    def row(self) -> NewCommand:
        command = self.queued.command
        return NewCommand(command.id, command.device_id, command.kind, self.queued.envelope, self.actor,
                          command.expires_at)


@dataclass(frozen=True)
class _Verified:
    """A result whose signature, device and command were checked before the transaction.

    ``refused``: why its content still cannot be taken (a screenshot that is not a sound
    PNG); it is then kept as a failure, proof of what the unit sent, without that content."""

    result: m.CommandResult
    envelope: m.SignedEnvelope
    refused: ProtocolError | None = None


def _prepare(store: Store, authority: Authority, item: Write, revocations: dict[str, float | None],
             owners: dict[str, tuple[str, str]]) -> _Signed | _Verified | Acknowledgement:
    """The checks and the cryptography, before any write lock is taken; raises for a bad item.

    ``revocations``, ``owners``: whether each device the batch's commands are for exists and is
    revoked, and the device and kind of each command a result claims, read once for the batch.
    """
    match item:
        case QueueRequest(device_id=device_id, action=action, actor=actor, ttl_seconds=ttl_seconds):
            check_arguments(action)
            if not 0 < ttl_seconds <= signing.MAX_COMMAND_LIFETIME_SECONDS:
                raise CommandError("invalid-expiry", "expiry must be between 1 second and 30 days")
            if device_id not in revocations:
                raise CommandError("unknown-device", f"no device with id {device_id}", 404)
            if revocations[device_id] is not None:
                raise CommandError("device-revoked", f"device {device_id} is revoked", 409)
            now = store.clock()
            command = m.Command(id=str(uuid.uuid4()), device_id=device_id, issued_at=now,
                                expires_at=now + ttl_seconds, action=action)
            return _Signed(Queued(command, m.encode(signing.seal(authority.command_key, command))), actor)
        case Report(device_id=device_id, device_key=device_key, envelope=envelope):
            result = signing.open_result(envelope, device_key)
            if result.device_id != device_id:
                raise ProtocolError("wrong-device", "result names another device")
            owner = owners.get(result.command_id)
            if owner is None or owner[0] != device_id:
                raise ProtocolError("unknown-command", f"no command {result.command_id} for this device")
            return _Verified(result, envelope, _refusal(result, queued_kind=owner[1]))
        case Acknowledgement():
            return item


def _write_one(store: Store, conn: Connection, item: _Signed | _Verified | Acknowledgement,
               audits: list[NewAuditEntry], steps: CommandSteps) -> Written | ProtocolError:
    """Write what is this item's alone; its audit entry goes to ``audits`` and its command's step to
    ``steps``, both written with the batch's."""
    match item:
        case _Signed(queued=Queued(command=command) as queued, actor=actor):  # stored with the batch's
            # Personal data (an assignment's citizen name) stays out of the audit log.
            audits.append(NewAuditEntry(actor, "command-queued", command.device_id, {
                "command_id": command.id, "kind": command.kind, "expires_at": command.expires_at}))
            return queued
        case _Verified(result=result, envelope=envelope, refused=refused):
            device_id = result.device_id
            result_json, outcome, reason = m.to_builtins(result), result.outcome, result.reason
            if refused is not None:
                outcome, reason = "failed", f"the unit's result was refused: {refused.detail}"
                result_json = {**result_json, "outcome": outcome, "reason": reason, "detail": {}}
            fresh = store.finish_command(conn, result.command_id, outcome, reason, m.encode(envelope),
                                         result_json, steps)
            if fresh:
                action = "wipe-receipt" if result.kind == "wipe" and outcome == "ok" else "command-result"
                if action == "wipe-receipt":
                    store.release_device(conn, device_id)
                # A look at the screen, a test ring: the citizen's answer is audited, a picture never is.
                answer = ({"answer": result.detail["answer"]}
                          if result.kind in ("screenshot", "test-ring") and outcome == "ok" else {})
                audits.append(NewAuditEntry(f"device:{device_id}", action, device_id, {
                    "command_id": result.command_id, "kind": result.kind, "outcome": outcome,
                    "reason": reason, "receipt": result.detail if action == "wipe-receipt" else None,
                    "signature": envelope.signature.hex(), **answer}))
            return refused if refused is not None else result
        case Acknowledgement(command_id=command_id):
            store.acknowledge(conn, command_id, steps)
            return None


def write_batch(store: Store, authority: Authority, items: Sequence[Write]) -> list[Written | Exception]:
    """Check each item, then write all good ones in one transaction, in order.

    Returns one outcome per item: what was written, or the CommandError / ProtocolError that
    refused it (nothing of a refused item is written, except a genuinely signed result whose
    content is refused: kept as a failure). An error of the database fails all.
    """
    revocations = store.revocations([item.device_id for item in items if isinstance(item, QueueRequest)])
    owners = store.command_owners([claimed_command_id(item.envelope) for item in items if isinstance(item, Report)])
    prepared: list[_Signed | _Verified | Acknowledgement | Exception] = []
    for item in items:
        try:
            prepared.append(_prepare(store, authority, item, revocations, owners))
        except (CommandError, ProtocolError) as exc:
            prepared.append(exc)
    audits: list[NewAuditEntry] = []
    with store.tx() as conn:
        store.add_commands(conn, [p.row for p in prepared if isinstance(p, _Signed)])
        steps = store.command_steps(conn, [p.command_id if isinstance(p, Acknowledgement) else p.result.command_id
                                           for p in prepared if isinstance(p, Acknowledgement | _Verified)])
        outcomes = [p if isinstance(p, Exception) else _write_one(store, conn, p, audits, steps) for p in prepared]
        steps.write(conn)
        store.append_audits(conn, audits)
    return outcomes


def claimed_command_id(envelope: m.SignedEnvelope) -> str:
    """The command id a result claims, before its signature is checked: to look the command up, or to
    tell the device which result was refused."""
    try:
        return m.COMMAND_RESULT.decode(envelope.payload).command_id
    except ProtocolError:
        return ""


def _single(store: Store, authority: Authority, item: Write) -> Written:
    (outcome,) = write_batch(store, authority, [item])
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


def queue(store: Store, authority: Authority, device_id: str, action: m.CommandAction,
          actor: str, ttl_seconds: float = DEFAULT_TTL_SECONDS) -> m.Command:
    """Sign a command and store it as pending; the hub delivers it when the device is online."""
    queued = _single(store, authority, QueueRequest(device_id, action, actor, ttl_seconds))
    assert isinstance(queued, Queued)
    return queued.command


def queue_in(conn: Connection, store: Store, authority: Authority, device_id: str, action: m.CommandAction,
             actor: str, ttl_seconds: float = DEFAULT_TTL_SECONDS) -> m.Command:
    """:func:`queue` inside the caller's transaction (a roll-out queues a wave with its own rows, in one)."""
    signed = _prepare(store, authority, QueueRequest(device_id, action, actor, ttl_seconds),
                      store.revocations([device_id]), {})
    assert isinstance(signed, _Signed)
    audits: list[NewAuditEntry] = []
    store.add_commands(conn, [signed.row])
    _write_one(store, conn, signed, audits, CommandSteps({}, store.clock))
    store.append_audits(conn, audits)
    return signed.queued.command


def _refusal(result: m.CommandResult, queued_kind: str) -> ProtocolError | None:
    """Why a genuinely signed result still cannot be taken (its content breaks the rules), or None.
    Judged by the kind the server queued, whatever kind the result claims."""
    if result.outcome != "ok":
        return None
    try:
        if queued_kind == "screenshot":
            screenshot.read_result(result.detail)
        elif queued_kind == "test-ring":
            m.convert(result.detail, m.RingTestHeard)
    except ProtocolError as exc:
        return exc
    return None


def device_public_key(cert_pem: str) -> signing.PublicKey:
    key = x509.load_pem_x509_certificate(cert_pem.encode()).public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    return key


class CommandDesk:
    """The server's one way to write commands: many at once, off the event loop, and delivered at once.

    What is submitted while a batch is being written goes in the next batch; a command is
    handed to its device's link as soon as its batch has committed, and a result is
    answered only once it is durable.
    """

    def __init__(self, store: Store, authority: Authority, hub: Hub) -> None:
        self.hub = hub
        self.writer: GroupCommit[Write, Written] = GroupCommit(functools.partial(write_batch, store, authority))

    async def send(self, device_id: str, action: m.CommandAction, actor: str,
                   ttl_seconds: float = DEFAULT_TTL_SECONDS) -> m.Command:
        """Queue a signed command and deliver it now if its device is connected."""
        queued = await self.writer.submit(QueueRequest(device_id, action, actor, ttl_seconds))
        assert isinstance(queued, Queued)
        await self.hub.deliver(device_id, queued.command.id, queued.envelope)
        return queued.command

    async def send_many(self, device_ids: Sequence[str], action: m.CommandAction, actor: str,
                        ttl_seconds: float = DEFAULT_TTL_SECONDS) -> list[m.Command | BaseException]:
        """:meth:`send` to many units at once: per unit its own signed, audited command (or the
        CommandError that refused it), all written before any is delivered."""
        outcomes = await self.writer.submit_many([QueueRequest(device_id, action, actor, ttl_seconds)
                                                  for device_id in device_ids])
        queued = [q for q in outcomes if isinstance(q, Queued)]
        # each to its own link at once: a unit whose link is slow to drain holds up no other
        await asyncio.gather(*(self.hub.deliver(q.command.device_id, q.command.id, q.envelope) for q in queued))
        return [q.command if isinstance(q, Queued) else _refusal_of(q) for q in outcomes]

    def acknowledged(self, command_id: str) -> None:
        """Record a delivery; nobody waits for it, and the device's result is written after it."""
        (ack,) = self.writer.enqueue([Acknowledgement(command_id)])  # held by the writer until written
        ack.add_done_callback(self._ack_written)

    @staticmethod
    def _ack_written(ack: asyncio.Future[Written]) -> None:
        if not ack.cancelled() and ack.exception() is not None:
            log.warning("an acknowledgement was not recorded: %s", ack.exception())

    async def report(self, device_id: str, device_key: signing.PublicKey,
                     envelope: m.SignedEnvelope) -> m.CommandResult:
        """Verify and record a result (``device_key``: of the unit's certificate); raises ProtocolError
        if it is not genuine."""
        result = await self.writer.submit(Report(device_id, device_key, envelope))
        assert isinstance(result, m.CommandResult)
        return result

    async def drain(self) -> None:
        await self.writer.drain()


def _refusal_of(outcome: Written | BaseException) -> BaseException:
    """A queue request's outcome that is not a Queued: the exception that refused it."""
    if not isinstance(outcome, BaseException):
        raise TypeError(f"a queue request was written as {outcome!r}")  # a bug of ours
    return outcome


def result_verified(row: CommandRow, cert_pem: str | None) -> bool:
    """Re-check the stored signed result against the device certificate."""
    if row.result_envelope is None or cert_pem is None:
        return False
    return _signed_by(row.result_envelope, cert_pem)


@functools.lru_cache(maxsize=4096)
def _signed_by(result_envelope: bytes, cert_pem: str) -> bool:
    """Whether these exact bytes verify under this exact certificate: the answer never changes, so a
    console polling a command does not pay an ECDSA verification per poll."""
    try:
        envelope = m.Codec(m.SignedEnvelope).decode(result_envelope)
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
