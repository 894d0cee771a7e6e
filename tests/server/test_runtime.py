"""The runtime under many connections: small TLS read buffers, freezes after waves of connections."""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import gc
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from kiosk.server import runtime
from kiosk.server.app import device_tls
from kiosk.server.ca import load_or_create
from kiosk.server.runtime import Due, FreezePolicy

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def restored() -> Iterator[None]:
    """What prepare() and settle() change is process-wide: put it back for the other tests."""
    size, thresholds = asyncio.sslproto.SSLProtocol.max_size, gc.get_threshold()
    yield
    asyncio.sslproto.SSLProtocol.max_size = size
    gc.set_threshold(*thresholds)
    gc.unfreeze()


async def test_a_tls_connection_gets_a_small_read_buffer_and_still_carries_a_large_message(
        tmp_path: Path, restored: None) -> None:
    runtime.prepare()
    authority = load_or_create(tmp_path, "Testby Kommune", ["localhost"])
    server_side: list[asyncio.BaseTransport] = []
    message = bytes(range(256)) * 1024  # 256 KiB: many buffers' worth

    async def echo_length(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        server_side.append(writer.transport)
        writer.write(str(len(await reader.readexactly(len(message)))).encode())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo_length, "127.0.0.1", 0, ssl=device_tls(authority))
    port = server.sockets[0].getsockname()[1]
    client = ssl.create_default_context(cafile=str(authority.ca_cert_path))
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client, server_hostname="localhost")
    writer.write(message)
    assert await reader.read() == str(len(message)).encode()
    writer.close()
    server.close()
    await server.wait_closed()
    (transport,) = server_side
    protocol = transport._ssl_protocol  # type: ignore[attr-defined]  # the TLS layer under the stream
    assert isinstance(protocol, asyncio.sslproto.SSLProtocol)
    buffer = protocol._ssl_buffer  # type: ignore[attr-defined]  # private: what CPython reads TLS into
    assert len(buffer) == runtime.TLS_READ_BUFFER == 16 * 1024  # not CPython's 256 KiB
    assert gc.get_threshold() == runtime.GC_THRESHOLDS


def test_start_up_is_frozen(restored: None) -> None:
    runtime.settle()
    assert gc.get_freeze_count() > 0


def test_a_freeze_waits_for_a_wave_to_end_and_a_compaction_for_a_turnover() -> None:
    policy, t = FreezePolicy(), 1000.0
    assert policy.observe(attaches=30, connected=30, now=t) is Due.NOTHING  # connecting
    assert policy.observe(30, 30, t + 10) is Due.NOTHING  # quiet, but too few for a wave
    assert policy.observe(500, 500, t + 11) is Due.NOTHING  # still connecting
    assert policy.observe(500, 500, t + 11 + runtime.QUIET_SECONDS / 2) is Due.NOTHING
    assert policy.observe(500, 500, t + 12 + runtime.QUIET_SECONDS) is Due.FREEZE  # the wave has settled
    assert policy.observe(500, 500, t + 30) is Due.NOTHING  # once per wave
    assert policy.observe(510, 500, t + 31) is Due.NOTHING  # a few reconnects: no wave
    assert policy.observe(510, 500, t + 40) is Due.NOTHING
    # As many reconnects as units and a thousand more: the frozen set is collected once.
    assert policy.observe(2000, 500, t + 50) is Due.NOTHING
    assert policy.observe(2000, 500, t + 60) is Due.COMPACT
    assert policy.observe(2100, 500, t + 61) is Due.NOTHING
    assert policy.observe(2100, 500, t + 70) is Due.FREEZE
