"""The municipality's certificate authority and the server's own keys.

Created once, on the first ``kiosk-server serve``, inside the data directory:

    ca.key / ca.crt         root CA (ECDSA P-256, 20 years); its SHA-256 is the devices' pin
    server.key / server.crt TLS certificate for both ports, signed by the root; renewed
                            (same key) when it nears its end or lacks keyUsage
    command.key             Ed25519 key that signs every command to a device

Keys are written 0600. Device certificates are issued from CSRs at enrollment; the
device id (a UUID chosen by the server) is the certificate's common name.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kiosk.protocol.errors import ProtocolError
from kiosk.protocol.signing import fingerprint

CA_LIFETIME = dt.timedelta(days=365 * 20)
SERVER_LIFETIME = dt.timedelta(days=365 * 2)
#: The server certificate is renewed this long before it ends: time to notice if renewal fails.
SERVER_RENEW_BEFORE = dt.timedelta(days=60)
DEVICE_LIFETIME = dt.timedelta(days=365 * 10)  # a unit lives for years; revocation is by registry


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def write_private(path: Path, data: bytes) -> None:
    """Write a secret file that was never readable by anyone else, even for a moment."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _pem_key(key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def default_server_names() -> list[str]:
    names = ["localhost", "127.0.0.1", "::1"]
    fqdn = socket.getfqdn()
    if fqdn and fqdn not in names:
        names.append(fqdn)
    return names


def _san(names: list[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


@dataclass
class Authority:
    """The loaded keys of one municipality server."""

    directory: Path
    municipality: str
    ca_key: ec.EllipticCurvePrivateKey
    ca_cert: x509.Certificate
    command_key: ed25519.Ed25519PrivateKey

    @property
    def ca_pem(self) -> str:
        return self.ca_cert.public_bytes(serialization.Encoding.PEM).decode()

    @property
    def ca_fingerprint(self) -> str:
        """The pin written into every provisioning file: SHA-256 of the root's DER."""
        return fingerprint(self.ca_cert.public_bytes(serialization.Encoding.DER))

    @property
    def server_cert_path(self) -> Path:
        return self.directory / "server.crt"

    @property
    def server_key_path(self) -> Path:
        return self.directory / "server.key"

    @property
    def ca_cert_path(self) -> Path:
        return self.directory / "ca.crt"

    def server_certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.server_cert_path.read_bytes())

    def renew_server_certificate(self, now: float) -> x509.Certificate | None:
        """Reissue the server certificate (same key, same names) if it is due; the new one, or None.

        Due within :data:`SERVER_RENEW_BEFORE` of its end (on the server's clock), or if it
        was made before it carried keyUsage. The file is replaced atomically: a crash leaves
        the old certificate or the new one, never half of either.
        """
        old = self.server_certificate()
        moment = dt.datetime.fromtimestamp(now, dt.UTC)
        if not _server_certificate_due(old, moment):
            return None
        key = serialization.load_pem_private_key(self.server_key_path.read_bytes(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        names = [str(n.value) for n in old.extensions.get_extension_for_class(x509.SubjectAlternativeName).value]
        new = _server_certificate(self.ca_key, self.ca_cert, key.public_key(), names, moment)
        staged = self.server_cert_path.with_suffix(".crt.new")
        staged.write_bytes(new.public_bytes(serialization.Encoding.PEM))
        os.replace(staged, self.server_cert_path)
        return new

    def issue_device_certificate(self, csr_pem: str, device_id: str, issued_at: float) -> x509.Certificate:
        """A device certificate valid from ``issued_at`` (the server's clock, seconds since the epoch)."""
        key = device_key(csr_pem)
        now = dt.datetime.fromtimestamp(issued_at, dt.UTC)
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([
                x509.NameAttribute(NameOID.COMMON_NAME, device_id),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, self.municipality),
            ]))
            .issuer_name(self.ca_cert.subject)
            .public_key(key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + DEVICE_LIFETIME)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(self.ca_key, hashes.SHA256())
        )


def device_key(csr_pem: str) -> ec.EllipticCurvePublicKey:
    """The key of a unit's certificate request, checked; ProtocolError ``invalid-csr`` otherwise."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem.encode())
    except ValueError as exc:
        raise ProtocolError("invalid-csr", f"not a PEM certificate request: {exc}") from None
    if not csr.is_signature_valid:
        raise ProtocolError("invalid-csr", "the request's signature does not match its key")
    key = csr.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise ProtocolError("invalid-csr", "device keys must be ECDSA P-256")
    return key


def key_fingerprint(key: x509.Certificate | ec.EllipticCurvePublicKey) -> str:
    """SHA-256 of a public key (SubjectPublicKeyInfo): how a retry is told from another unit."""
    public = key.public_key() if isinstance(key, x509.Certificate) else key
    return fingerprint(public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))


def _ca_certificate(key: ec.EllipticCurvePrivateKey, municipality: str) -> x509.Certificate:
    name = x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, f"Skærmbesøg root CA — {municipality}"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, municipality),
    ])
    now = _now()
    return (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=False, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def _server_certificate(
    ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate,
    key: ec.EllipticCurvePublicKey, names: list[str], now: dt.datetime,
) -> x509.Certificate:
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_cert.subject).public_key(key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + SERVER_LIFETIME)
        .add_extension(_san(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(  # ECDSA signs the TLS handshake; nothing else
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=False,
            crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def _server_certificate_due(cert: x509.Certificate, now: dt.datetime) -> bool:
    try:
        cert.extensions.get_extension_for_class(x509.KeyUsage)
    except x509.ExtensionNotFound:
        return True  # made before the certificate carried keyUsage
    return cert.not_valid_after_utc - now < SERVER_RENEW_BEFORE


def load_or_create(directory: Path, municipality: str, server_names: list[str] | None = None) -> Authority:
    """Load the authority from ``directory``, creating every missing piece on first use."""
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    ca_key_path, ca_crt_path = directory / "ca.key", directory / "ca.crt"
    if not ca_key_path.exists():
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_cert = _ca_certificate(ca_key, municipality)
        write_private(ca_key_path, _pem_key(ca_key))
        ca_crt_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    loaded = serialization.load_pem_private_key(ca_key_path.read_bytes(), None)
    ca_cert = x509.load_pem_x509_certificate(ca_crt_path.read_bytes())
    assert isinstance(loaded, ec.EllipticCurvePrivateKey)
    ca_key = loaded

    if not (directory / "server.key").exists():
        server_key = ec.generate_private_key(ec.SECP256R1())
        cert = _server_certificate(ca_key, ca_cert, server_key.public_key(), server_names or default_server_names(),
                                   _now())
        write_private(directory / "server.key", _pem_key(server_key))
        (directory / "server.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    command_path = directory / "command.key"
    if not command_path.exists():
        write_private(command_path, _pem_key(ed25519.Ed25519PrivateKey.generate()))
    command_key = serialization.load_pem_private_key(command_path.read_bytes(), None)
    assert isinstance(command_key, ed25519.Ed25519PrivateKey)
    org = ca_cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    return Authority(directory, str(org[0].value) if org else municipality, ca_key, ca_cert, command_key)
