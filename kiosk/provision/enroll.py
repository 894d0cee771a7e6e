"""First-boot enrollment: trust only the pinned root, send a CSR with the one-time token.

1. Fetch the server's root certificate over TLS *without* trusting anything yet, and
   accept it only if its SHA-256 equals the pin from the provisioning file.
2. Make the unit's key once and store it durably *before* the first request; every
   retry sends the same key, so a request whose answer was lost (or a power cut after
   the server's commit) is recognised by the server as the same enrollment.
3. From then on that root is the only trust anchor (never the system store): the
   enrollment request itself goes over TLS verified against it, hostname included.
4. Store the certificate and the server's command key, then destroy the token.

Errors come in two kinds: :class:`EnrollmentRefused` (permanent: a person must act)
and :class:`EnrollmentDeferred` (a retry can cure it: no network, a lost answer, a
server error, a wrong clock, a unit waiting for approval).
"""

from __future__ import annotations

import asyncio
import enum
import http.client
import ssl
from pathlib import Path
from typing import TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import kiosk
from kiosk.protocol import messages as m
from kiosk.protocol import provisioning
from kiosk.protocol.errors import ProtocolError
from kiosk.protocol.signing import fingerprint
from kiosk.provision import clock, failpoints, pinned
from kiosk.provision.files import atomic_write
from kiosk.provision.state import ServerPin, StateDir

#: Where a unit's hardware serial number lives: Raspberry Pi (device tree), then PCs (DMI).
T = TypeVar("T")

SERIAL_PATHS = (Path("/sys/firmware/devicetree/base/serial-number"), Path("/sys/class/dmi/id/product_serial"))


class Step(enum.StrEnum):
    """The durable steps of an enrollment; a failpoint ``enroll:<step>`` cuts the power after each."""

    KEY_STORED = "key-stored"
    REQUEST_SENT = "request-sent"
    ANSWER_RECEIVED = "answer-received"
    IDENTITY_SAVED = "identity-saved"
    TOKEN_DESTROYED = "token-destroyed"


class EnrollmentRefused(Exception):
    """Permanent: retrying will not help; the message says what a person must do."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class EnrollmentDeferred(Exception):
    """Not yet: a retry can cure it. ``code`` is unreachable, server-error, clock or awaiting-approval."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def device_context(state: StateDir) -> ssl.SSLContext:
    """Mutual TLS: the pinned root for the server, the device certificate for us."""
    ctx = pinned.pinned_context((state.identity / "ca.pem").read_text())
    ctx.load_cert_chain(state.identity / "device.crt", state.identity / "device.key")
    return ctx


def _unreachable(url: str, exc: BaseException) -> EnrollmentDeferred:
    return EnrollmentDeferred("unreachable", f"cannot reach the server at {url} ({exc or type(exc).__name__}); "
                              "retrying (safe even if an answer was lost: the unit sends the same key).")


def fetch_pinned_ca(url: str, pin: str) -> str:
    insecure = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    insecure.check_hostname = False
    insecure.verify_mode = ssl.CERT_NONE  # safe: what we fetch is accepted only if it matches the pin
    try:
        resp = pinned.request(url, "GET", "/ca.pem", insecure)
    except (OSError, http.client.HTTPException) as exc:
        raise _unreachable(url, exc) from None
    if resp.status >= 500:
        raise _server_error(resp.status)
    if resp.status != 200:
        raise EnrollmentRefused("not-a-kiosk-server", f"{url} did not offer a root certificate (HTTP {resp.status}); "
                                "check the server_url in the provisioning file")
    try:
        cert = x509.load_pem_x509_certificate(resp.body)
    except ValueError:
        raise EnrollmentRefused("not-a-kiosk-server", f"{url} offered something that is not a certificate; "
                                "check the server_url in the provisioning file") from None
    got = fingerprint(cert.public_bytes(serialization.Encoding.DER))
    if got != pin:
        raise EnrollmentRefused(
            "pin-mismatch",
            f"The server at {url} is not this municipality's server: its root certificate has "
            f"SHA-256 {got[:16]}…, but the provisioning file pins {pin[:16]}…. Nothing was sent to it. "
            "Check that the provisioning file belongs to this server, or that nothing on the "
            "network is impersonating it.",
        )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def hardware_serial() -> str:
    """The unit's serial number as its firmware reports it, or "" where none is readable."""
    for path in SERIAL_PATHS:
        try:
            text = path.read_bytes().replace(b"\0", b"").decode("ascii", "replace").strip()
        except OSError:
            continue
        if text and text.isprintable():
            return text[:64]
    return ""


def _csr(key: ec.EllipticCurvePrivateKey) -> str:
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kiosk-device")]))
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def read_provisioning(path: Path) -> provisioning.Provisioning:
    try:
        return provisioning.parse(path.read_bytes())
    except FileNotFoundError:
        raise EnrollmentRefused("no-provisioning", f"no provisioning file at {path}; "
                                "logistics must write one onto the boot partition") from None
    except ProtocolError as exc:
        raise EnrollmentRefused("bad-provisioning", f"{path}: {exc.detail}; "
                                "logistics must write a new provisioning file") from None


def enroll_blocking(state: StateDir, provisioning_path: Path) -> ServerPin:
    prov = read_provisioning(provisioning_path)
    if prov.token is None:
        raise EnrollmentRefused("token-consumed", "the provisioning file's token was already used by this unit; "
                                "write a new provisioning file to enroll again")
    ca_pem = fetch_pinned_ca(prov.server_url, prov.ca_sha256)
    key = state.enrollment_key()  # generated here once; it never leaves the state directory
    failpoints.hit(f"enroll:{Step.KEY_STORED}")
    body = m.encode(m.EnrollRequest(token=prov.token, csr_pem=_csr(key), agent_version=kiosk.__version__,
                                    serial_number=hardware_serial()))
    answer = _ask(prov.server_url, ca_pem, body)
    failpoints.hit(f"enroll:{Step.ANSWER_RECEIVED}")
    if not _same_key(answer.certificate_pem, key):
        raise EnrollmentRefused("wrong-certificate", "the server's answer holds a certificate for another key; "
                                "this is a fault of the server: tell the municipality's IT")
    pin = ServerPin(url=prov.server_url, municipality=answer.municipality, ca_sha256=prov.ca_sha256,
                    device_id=answer.device_id)
    state.save_identity(answer.certificate_pem, ca_pem, answer.command_public_key_pem, pin)
    failpoints.hit(f"enroll:{Step.IDENTITY_SAVED}")
    finish(state, provisioning_path)
    return pin


def _ask(url: str, ca_pem: str, body: bytes) -> m.EnrollResponse:
    """Send the enrollment request; sort every answer into done, refused (for good) or deferred."""
    try:
        resp = pinned.request(url, "POST", "/api/v1/enroll", pinned.pinned_context(ca_pem), body,
                              sent=lambda: failpoints.hit(f"enroll:{Step.REQUEST_SENT}"))
    except ssl.SSLCertVerificationError as exc:
        if clock.is_date_error(exc):
            raise EnrollmentDeferred("clock", clock.diagnose(url, ca_pem, exc)) from None
        raise EnrollmentRefused("pin-mismatch", f"the server's TLS certificate does not chain to the pinned root: "
                                f"{exc.verify_message}") from None
    except (OSError, http.client.HTTPException) as exc:
        raise _unreachable(url, exc) from None
    if resp.status == 200:
        return _understood(m.ENROLL_RESPONSE, resp.body)
    if resp.status == 202:
        raise EnrollmentDeferred("awaiting-approval", _understood(m.ENROLL_HELD, resp.body).message)
    if resp.status >= 500 or resp.status in (408, 429):
        raise _server_error(resp.status)
    try:
        err = m.ERROR_RESPONSE.decode(resp.body)
    except ProtocolError:
        raise EnrollmentRefused("unexpected-answer", f"the server answered HTTP {resp.status} without a reason; "
                                "tell the municipality's IT") from None
    raise EnrollmentRefused(err.error, f"the server refused enrollment: {err.message}")


def _understood(codec: m.Codec[T], body: bytes) -> T:
    try:
        return codec.decode(body)
    except ProtocolError as exc:  # e.g. cut short on the way: the same request is answered again
        raise EnrollmentDeferred("server-error", f"the server's answer was not understood ({exc.detail}); "
                                 "retrying.") from None


def _server_error(status: int) -> EnrollmentDeferred:
    return EnrollmentDeferred("server-error", f"the server answered HTTP {status} (a fault on its side); retrying.")


def _same_key(cert_pem: str, key: ec.EllipticCurvePrivateKey) -> bool:
    try:
        cert_key = x509.load_pem_x509_certificate(cert_pem.encode()).public_key()
    except ValueError:
        return False
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return cert_key.public_bytes(*spki) == key.public_key().public_bytes(*spki)


def finish(state: StateDir, provisioning_path: Path) -> None:
    """The last step, also run at start-up after a power cut: destroy the spent token.

    Only for the server this unit is enrolled with; the audit entry is written with it,
    so it appears once however often the power went.
    """
    try:
        prov = provisioning.parse(provisioning_path.read_bytes())
    except (OSError, ProtocolError):
        return
    pin = state.pin()
    if prov.token is None or (prov.server_url, prov.ca_sha256) != (pin.url, pin.ca_sha256):
        return
    _destroy_token(provisioning_path, prov)
    state.audit("enrolled", device_id=pin.device_id, server=pin.url)
    failpoints.hit(f"enroll:{Step.TOKEN_DESTROYED}")


def _destroy_token(path: Path, prov: provisioning.Provisioning) -> None:
    """The token is single-use: remove it from the provisioning file as well."""
    spent = provisioning.Provisioning(prov.server_url, prov.ca_sha256, None, prov.municipality)
    try:
        atomic_write(path, provisioning.render(spent).encode())
    except OSError:
        path.unlink(missing_ok=True)


async def enroll(state: StateDir, provisioning_path: Path) -> ServerPin:
    return await asyncio.to_thread(enroll_blocking, state, provisioning_path)
