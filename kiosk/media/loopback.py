"""Two peers in one process, on 127.0.0.1: for tests, benchmarks and self-tests.

aiortc gathers host candidates on every interface except loopback, and with no
``iceServers`` it would even ask a public STUN server.  Here the media must
stay on this machine, so we pass ``iceServers=[]`` and, for the duration of
:func:`loopback_only`, let aioice offer 127.0.0.1 and nothing else.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

import aioice.ice
from aiortc import RTCConfiguration, RTCPeerConnection

_AIOICE_HOST_ADDRESSES = aioice.ice.get_host_addresses


def no_public_stun() -> RTCConfiguration:
    """Never aiortc's default: that would contact a public STUN server."""
    return RTCConfiguration(iceServers=[])


@contextmanager
def loopback_only() -> Iterator[None]:
    """ICE offers only 127.0.0.1 inside this block (process-wide)."""

    def loopback(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return ["127.0.0.1"] if use_ipv4 else []

    aioice.ice.get_host_addresses = loopback
    try:
        yield
    finally:
        aioice.ice.get_host_addresses = _AIOICE_HOST_ADDRESSES


async def connect(offerer: RTCPeerConnection, answerer: RTCPeerConnection, timeout: float = 10.0) -> None:
    """Offer/answer between two local peers and wait until both are connected."""
    await offerer.setLocalDescription(await offerer.createOffer())
    await answerer.setRemoteDescription(offerer.localDescription)
    await answerer.setLocalDescription(await answerer.createAnswer())
    await offerer.setRemoteDescription(answerer.localDescription)

    async def connected(pc: RTCPeerConnection) -> None:
        while pc.connectionState != "connected":
            if pc.connectionState in ("failed", "closed"):
                raise ConnectionError(f"peer connection {pc.connectionState}")
            await asyncio.sleep(0.02)

    await asyncio.wait_for(asyncio.gather(connected(offerer), connected(answerer)), timeout)
