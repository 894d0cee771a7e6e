"""Signed commands (server -> device) and signed results (device -> server).

The signature covers the exact payload bytes, so no canonical JSON is needed. The
server's command key is Ed25519; the device key is ECDSA P-256 (it is also the key of
its TLS client certificate). Verification is pure: the caller passes the clock and the
replay memory, and gets back either the command or a refusal with its reason.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from kiosk.protocol import messages as m
from kiosk.protocol.errors import ProtocolError

PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey
PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey

#: Tolerated clock difference between server and device, on both sides of a command's lifetime:
#: "issued in the future" and "expired" only count beyond it.
CLOCK_SKEW_SECONDS = 300.0
#: A command may not live longer than this; a longer expiry is a sign of a forged or broken server.
MAX_COMMAND_LIFETIME_SECONDS = 30 * 24 * 3600.0


class Refusal(enum.StrEnum):
    MALFORMED = "malformed"
    BAD_SIGNATURE = "bad-signature"
    WRONG_DEVICE = "wrong-device"
    EXPIRED = "expired"
    NOT_YET_VALID = "not-yet-valid"
    REPLAY = "replay"


@dataclass(frozen=True)
class Refused:
    reason: Refusal
    detail: str
    command_id: str | None = None  # known when the payload was genuine and readable
    kind: str | None = None


def sign(key: PrivateKey, payload: bytes) -> bytes:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(payload)
    return key.sign(payload, ec.ECDSA(hashes.SHA256()))


def signature_valid(key: PublicKey, signature: bytes, payload: bytes) -> bool:
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, payload)
        else:
            key.verify(signature, payload, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def seal(key: PrivateKey, message: m.Command | m.CommandResult) -> m.SignedEnvelope:
    payload = m.encode(message)
    return m.SignedEnvelope(payload=payload, signature=sign(key, payload))


def public_key_pem(key: PublicKey) -> str:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def load_public_key(pem: str | bytes) -> PublicKey:
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise ProtocolError("invalid", f"not a PEM public key: {exc}") from None
    if not isinstance(key, (ed25519.Ed25519PublicKey, ec.EllipticCurvePublicKey)):
        raise ProtocolError("invalid", f"unsupported key type {type(key).__name__}")
    return key


def fingerprint(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class ReplayGuard:
    """The command ids a device has accepted, kept until their expiry has passed.

    An expired command is refused on its own, so an id can be forgotten once its
    expiry (plus the tolerated clock skew) is behind us: memory stays bounded by the
    commands still alive.
    """

    seen: dict[str, float] = field(default_factory=dict)

    def has_seen(self, command_id: str) -> bool:
        return command_id in self.seen

    def remember(self, command: m.Command) -> None:
        self.seen[command.id] = command.expires_at

    def forget_expired(self, now: float) -> None:
        self.seen = {cid: exp for cid, exp in self.seen.items() if exp + CLOCK_SKEW_SECONDS >= now}


def verify_command(
    envelope: m.SignedEnvelope,
    server_key: PublicKey,
    device_id: str,
    now: float,
    replay: ReplayGuard,
) -> m.Command | Refused:
    """Check a command from the server; on success the caller must ``replay.remember`` it."""
    if not signature_valid(server_key, envelope.signature, envelope.payload):
        return Refused(Refusal.BAD_SIGNATURE, "signature does not match the server's command key")
    try:
        command = m.COMMAND.decode(envelope.payload)
    except ProtocolError as exc:
        return Refused(Refusal.MALFORMED, f"signed payload is not a command: {exc.detail}")
    if command.device_id != device_id:
        return Refused(
            Refusal.WRONG_DEVICE,
            f"command is for device {command.device_id}, this is {device_id}",
            command.id, command.kind,
        )
    if now > command.expires_at + CLOCK_SKEW_SECONDS:
        return Refused(
            Refusal.EXPIRED, f"command expired {now - command.expires_at:.0f} s ago "
            f"(more than the tolerated clock difference of {CLOCK_SKEW_SECONDS:.0f} s)", command.id, command.kind
        )
    if command.issued_at > now + CLOCK_SKEW_SECONDS:
        return Refused(Refusal.NOT_YET_VALID, f"command is issued {command.issued_at - now:.0f} s in the future "
                       f"(more than the tolerated clock difference of {CLOCK_SKEW_SECONDS:.0f} s)",
                       command.id, command.kind)
    if command.expires_at - command.issued_at > MAX_COMMAND_LIFETIME_SECONDS:
        return Refused(Refusal.MALFORMED, "command lifetime exceeds 30 days", command.id, command.kind)
    if replay.has_seen(command.id):
        return Refused(Refusal.REPLAY, "command was already received once", command.id, command.kind)
    return command


def open_result(envelope: m.SignedEnvelope, device_key: PublicKey) -> m.CommandResult:
    """Verify a device's signed result; raises ProtocolError when it is not genuine."""
    if not signature_valid(device_key, envelope.signature, envelope.payload):
        raise ProtocolError("bad-signature", "result signature does not match the device key")
    return m.COMMAND_RESULT.decode(envelope.payload)
