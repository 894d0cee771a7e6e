"""First-boot enrollment: trust only the pinned root, send a CSR with the one-time token.

1. Fetch the server's root certificate over TLS *without* trusting anything yet, and
   accept it only if its SHA-256 equals the pin from the provisioning file.
2. From then on that root is the only trust anchor (never the system store): the
   enrollment request itself goes over TLS verified against it, hostname included.
3. Store the certificate and the server's command key, then destroy the token.
"""

from __future__ import annotations

import asyncio
import http.client
import ssl
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import kiosk
from kiosk.protocol import messages as m
from kiosk.protocol import provisioning
from kiosk.protocol.errors import ProtocolError
from kiosk.protocol.signing import fingerprint
from kiosk.provision.files import atomic_write
from kiosk.provision.state import ServerPin, StateDir

TIMEOUT_SECONDS = 15.0


class EnrollmentRefused(Exception):
    """Permanent: retrying will not help (wrong server, used or expired token, bad file)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class EnrollmentUnavailable(Exception):
    """Transient: the server could not be reached; try again later."""


def pinned_context(ca_pem: str) -> ssl.SSLContext:
    """Client TLS that trusts exactly one root: the municipality's."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_verify_locations(cadata=ca_pem)
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def device_context(state: StateDir) -> ssl.SSLContext:
    """Mutual TLS: the pinned root for the server, the device certificate for us."""
    ctx = pinned_context((state.identity / "ca.pem").read_text())
    ctx.load_cert_chain(state.identity / "device.crt", state.identity / "device.key")
    return ctx


@dataclass(frozen=True)
class _Response:
    status: int
    body: bytes


def _request(url: str, method: str, path: str, ctx: ssl.SSLContext, body: bytes | None = None) -> _Response:
    parts = urlsplit(url)
    conn = http.client.HTTPSConnection(parts.hostname or "", parts.port or 443, context=ctx, timeout=TIMEOUT_SECONDS)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json"} if body else {})
        resp = conn.getresponse()
        return _Response(resp.status, resp.read(256 * 1024))
    finally:
        conn.close()


def fetch_pinned_ca(url: str, pin: str) -> str:
    insecure = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    insecure.check_hostname = False
    insecure.verify_mode = ssl.CERT_NONE  # safe: what we fetch is accepted only if it matches the pin
    try:
        resp = _request(url, "GET", "/ca.pem", insecure)
    except (OSError, http.client.HTTPException) as exc:
        raise EnrollmentUnavailable(f"cannot reach the server at {url}: {exc}") from None
    if resp.status != 200:
        raise EnrollmentRefused("not-a-kiosk-server", f"{url} did not offer a root certificate (HTTP {resp.status})")
    try:
        cert = x509.load_pem_x509_certificate(resp.body)
    except ValueError:
        raise EnrollmentRefused("not-a-kiosk-server", f"{url} offered something that is not a certificate") from None
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


def _csr(key: ec.EllipticCurvePrivateKey) -> str:
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kiosk-device")]))
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def enroll_blocking(state: StateDir, provisioning_path: Path) -> ServerPin:
    try:
        prov = provisioning.parse(provisioning_path.read_bytes())
    except FileNotFoundError:
        raise EnrollmentRefused("no-provisioning", f"no provisioning file at {provisioning_path}") from None
    except ProtocolError as exc:
        raise EnrollmentRefused("bad-provisioning", f"{provisioning_path}: {exc.detail}") from None
    if prov.token is None:
        raise EnrollmentRefused("token-consumed", "the provisioning file's token was already used by this unit; "
                                "write a new provisioning file to enroll again")
    ca_pem = fetch_pinned_ca(prov.server_url, prov.ca_sha256)
    key = ec.generate_private_key(ec.SECP256R1())  # generated here; it never leaves the state directory
    body = m.encode(m.EnrollRequest(token=prov.token, csr_pem=_csr(key), agent_version=kiosk.__version__))
    try:
        resp = _request(prov.server_url, "POST", "/api/v1/enroll", pinned_context(ca_pem), body)
    except ssl.SSLCertVerificationError as exc:
        raise EnrollmentRefused("pin-mismatch", f"the server's TLS certificate does not chain to the pinned root: "
                                f"{exc.verify_message}") from None
    except (OSError, http.client.HTTPException) as exc:
        raise EnrollmentUnavailable(f"cannot reach the server at {prov.server_url}: {exc}") from None
    if resp.status != 200:
        try:
            err = m.ERROR_RESPONSE.decode(resp.body)
            raise EnrollmentRefused(err.error, f"the server refused enrollment: {err.message}")
        except ProtocolError:
            raise EnrollmentUnavailable(f"the server answered HTTP {resp.status}") from None
    try:
        answer = m.ENROLL_RESPONSE.decode(resp.body)
    except ProtocolError as exc:
        raise EnrollmentUnavailable(f"the server's answer was not understood: {exc.detail}") from None
    pin = ServerPin(url=prov.server_url, municipality=answer.municipality, ca_sha256=prov.ca_sha256,
                    device_id=answer.device_id)
    state.save_identity(key, answer.certificate_pem, ca_pem, answer.command_public_key_pem, pin)
    _destroy_token(provisioning_path, prov)
    state.audit("enrolled", device_id=answer.device_id, server=prov.server_url)
    return pin


def _destroy_token(path: Path, prov: provisioning.Provisioning) -> None:
    """The token is single-use: remove it from the provisioning file as well."""
    spent = provisioning.Provisioning(prov.server_url, prov.ca_sha256, None, prov.municipality)
    try:
        atomic_write(path, provisioning.render(spent).encode())
    except OSError:
        path.unlink(missing_ok=True)


async def enroll(state: StateDir, provisioning_path: Path) -> ServerPin:
    return await asyncio.to_thread(enroll_blocking, state, provisioning_path)
