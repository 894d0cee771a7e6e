"""The device port: TLS 1.3 only, a server certificate for serverAuth with keyUsage, and its
renewal before expiry, driven by the server's clock (a real server on loopback ports)."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from kiosk.server import app as server_app
from kiosk.server.app import Listen, Server
from kiosk.server.ca import SERVER_LIFETIME, SERVER_RENEW_BEFORE
from tests.harness import free_port
from tests.server.fakes import FakeClock

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def running(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[Server, int, FakeClock]]:
    monkeypatch.setattr(server_app, "TLS_RENEW_CHECK_SECONDS", 0.05)
    clock = FakeClock(dt.datetime.now(dt.UTC).timestamp())
    server = Server.open(tmp_path / "server", "Testby Kommune", ["localhost", "127.0.0.1"], clock=clock)
    port = free_port()
    runners = await server.start(Listen("127.0.0.1", port), Listen("127.0.0.1", free_port()))
    yield server, port, clock
    await server.stop(runners)


def client(server: Server, version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(server.authority.ca_cert_path))
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    return ctx


async def served(port: int, ctx: ssl.SSLContext) -> tuple[x509.Certificate, str]:
    """The certificate the device port presents to a new connection, and the TLS version spoken."""
    _reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="127.0.0.1")
    try:
        tls = writer.get_extra_info("ssl_object")
        return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True)), tls.version()
    finally:
        writer.close()


async def test_only_tls_1_3_is_offered(running: tuple[Server, int, FakeClock]) -> None:
    server, port, _clock = running
    cert, version = await served(port, client(server))
    assert version == "TLSv1.3"
    with pytest.raises((ssl.SSLError, ConnectionError)):  # refused in the handshake
        await served(port, client(server, ssl.TLSVersion.TLSv1_2))
    key_usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert key_usage.critical and key_usage.value.digital_signature and not key_usage.value.key_cert_sign
    assert cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage(
        [ExtendedKeyUsageOID.SERVER_AUTH])


async def test_the_certificate_is_renewed_before_it_ends(running: tuple[Server, int, FakeClock]) -> None:
    server, port, clock = running
    first, _ = await served(port, client(server))
    clock.now = (first.not_valid_after_utc - SERVER_RENEW_BEFORE - dt.timedelta(days=1)).timestamp()
    await asyncio.sleep(0.3)  # several checks pass: not due yet
    assert (await served(port, client(server)))[0].serial_number == first.serial_number

    clock.advance(2 * 86400.0)  # now within the renewal window, on the server's clock
    unverified = ssl.create_default_context()  # the new one starts on the server's (future) clock
    unverified.check_hostname, unverified.verify_mode = False, ssl.CERT_NONE
    unverified.minimum_version = ssl.TLSVersion.TLSv1_3
    for _ in range(100):
        renewed, _ = await served(port, unverified)
        if renewed.serial_number != first.serial_number:
            break
        await asyncio.sleep(0.05)
    assert renewed.serial_number != first.serial_number, "the certificate was not renewed"
    renewed.verify_directly_issued_by(server.authority.ca_cert)
    assert renewed.not_valid_after_utc.timestamp() == pytest.approx(clock.now + SERVER_LIFETIME.total_seconds(), abs=1)
    assert renewed.subject == first.subject
    assert renewed.extensions.get_extension_for_class(x509.SubjectAlternativeName) == \
        first.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    assert renewed.public_key().public_bytes(serialization.Encoding.DER, spki) == \
        first.public_key().public_bytes(serialization.Encoding.DER, spki)  # same key: nothing else changes
    assert server.authority.server_certificate().serial_number == renewed.serial_number  # kept on disk too
