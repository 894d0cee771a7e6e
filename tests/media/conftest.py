"""Fixtures for media tests: in-process peers on 127.0.0.1, hooks cleaned up."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from aiortc import RTCPeerConnection

from kiosk.media.encoders import uninstall_encoding_at_source, uninstall_h264_encoder
from kiosk.media.keyframes import uninstall_loss_recovery
from kiosk.media.loopback import loopback_only, no_public_stun


@pytest.fixture(autouse=True)
def aiortc_hooks_restored() -> Iterator[None]:
    """Every test starts and ends with aiortc's own encoder and jitter buffer."""
    uninstall_h264_encoder()
    uninstall_encoding_at_source()
    uninstall_loss_recovery()
    yield
    uninstall_h264_encoder()
    uninstall_encoding_at_source()
    uninstall_loss_recovery()


@pytest.fixture
async def peers() -> AsyncIterator[tuple[RTCPeerConnection, RTCPeerConnection]]:
    """Two peers that can only reach each other over 127.0.0.1."""
    with loopback_only():
        a = RTCPeerConnection(no_public_stun())
        b = RTCPeerConnection(no_public_stun())
        try:
            yield a, b
        finally:
            await a.close()
            await b.close()
