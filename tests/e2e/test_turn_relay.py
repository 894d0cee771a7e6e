"""A call's media through a real coturn on loopback, relay only.

Two real aiortc peers in one process, the staff side and the device side, each
configured with the iceServers that kiosk.server.turn hands out, and with the
relay-only ICE policy (aiortc 1.16 has ``iceTransportPolicy``): neither peer
gathers host or server-reflexive candidates, so the only way media can flow is
through coturn. Each side sends aiortc's synthetic video at its own size (the
relay is under test here, not capture) and must receive the other's frames.

Also the failures a municipality would meet: a wrong or expired credential is
refused by coturn (401), and peers that got no relay candidate never connect.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import pytest
from aioice import Candidate
from aioice.stun import TransactionFailed
from aioice.turn import create_turn_endpoint
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    VideoStreamTrack,
)
from aiortc.rtcconfiguration import RTCIceTransportPolicy
from aiortc.rtcicetransport import RTCIceTransport
from av import VideoFrame

from kiosk.server.turn import TurnCredentials, ice_servers, issue_credentials

if TYPE_CHECKING:  # the fixture itself comes from tests/conftest.py's pytest_plugins
    from tests.turn_fixture import TurnServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

CONNECT_TIMEOUT = 20.0  # loopback connects in well under a second
FRAMES_TIMEOUT = 20.0
FRAMES_WANTED = 10
NO_CONNECT_WINDOW = 4.0  # how long a peer without candidates is watched not connecting

DEVICE_SIZE = (320, 240)
STAFF_SIZE = (176, 144)


def credentials(
    turn: TurnServer, user_id: str, *, secret: str | None = None, now: float | None = None
) -> TurnCredentials:
    return issue_credentials(
        secret if secret is not None else turn.secret,
        user_id,
        now=now if now is not None else time.time(),
        ttl=600,
    )


def relay_only(turn: TurnServer, creds: TurnCredentials) -> RTCConfiguration:
    """What a peer is configured with: the server's iceServers, relay only."""
    servers = [
        RTCIceServer(urls=list(s.urls), username=s.username, credential=s.credential)
        for s in ice_servers(turn.host, turn.port, creds)
    ]
    return RTCConfiguration(iceServers=servers, iceTransportPolicy=RTCIceTransportPolicy.RELAY)


def candidate_lines(sdp: str) -> list[str]:
    return [line for line in sdp.splitlines() if line.startswith("a=candidate:")]


def ice_transport(pc: RTCPeerConnection) -> RTCIceTransport:
    transport = pc.getTransceivers()[0].receiver.transport.transport
    assert isinstance(transport, RTCIceTransport)
    return transport


def selected_pair(pc: RTCPeerConnection) -> tuple[Candidate, Candidate]:
    """(local, remote) candidates of the pair ICE nominated.

    aiortc 1.16 exposes no selected pair (its getStats has no candidate-pair
    entries), so this reads aioice's nominated pair for component 1.
    """
    connection: Any = ice_transport(pc)._connection
    pair = connection._nominated[1]
    return pair.local_candidate, pair.remote_candidate


async def wait_for_state(pc: RTCPeerConnection, wanted: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while pc.connectionState != wanted:
        if pc.connectionState in ("failed", "closed") and wanted not in ("failed", "closed"):
            raise AssertionError(f"peer connection is {pc.connectionState}, wanted {wanted}")
        if time.monotonic() > deadline:
            raise AssertionError(
                f"peer connection still {pc.connectionState} after {timeout:.0f} s, wanted {wanted}"
            )
        await asyncio.sleep(0.05)


async def exchange(offerer: RTCPeerConnection, answerer: RTCPeerConnection) -> tuple[str, str]:
    """Offer/answer as the server's signaling relay would carry them.

    aiortc gathers all candidates in setLocalDescription (no trickle), so each
    description is complete when sent.
    """
    await offerer.setLocalDescription(await offerer.createOffer())
    await answerer.setRemoteDescription(offerer.localDescription)
    await answerer.setLocalDescription(await answerer.createAnswer())
    await offerer.setRemoteDescription(answerer.localDescription)
    return offerer.localDescription.sdp, answerer.localDescription.sdp


def receive_frames(pc: RTCPeerConnection) -> asyncio.Future[list[Any]]:
    """A future for the first FRAMES_WANTED video frames this peer receives."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[list[Any]] = loop.create_future()

    @pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        async def read() -> None:
            frames: list[Any] = []
            try:
                while len(frames) < FRAMES_WANTED:
                    frames.append(await track.recv())
            except Exception as exc:  # noqa: BLE001 - reported through the future
                if not done.done():
                    done.set_exception(exc)
                return
            if not done.done():
                done.set_result(frames)

        reader = asyncio.ensure_future(read())
        done.add_done_callback(lambda _: reader.cancel())

    return done


@contextlib.asynccontextmanager
async def peers(
    staff_config: RTCConfiguration, device_config: RTCConfiguration
) -> AsyncIterator[tuple[RTCPeerConnection, RTCPeerConnection]]:
    staff, device = RTCPeerConnection(staff_config), RTCPeerConnection(device_config)
    try:
        yield staff, device
    finally:
        await staff.close()
        await device.close()


class Camera(VideoStreamTrack):
    """aiortc's paced 30 fps synthetic video, at a size that identifies the sender."""

    def __init__(self, size: tuple[int, int]) -> None:
        super().__init__()
        self.size = size

    async def recv(self) -> VideoFrame:
        pts, time_base = await self.next_timestamp()
        frame = VideoFrame(width=self.size[0], height=self.size[1], format="yuv420p")
        for plane in frame.planes:
            plane.update(bytes(plane.buffer_size))
        frame.pts, frame.time_base = pts, time_base
        return frame


@contextlib.asynccontextmanager
async def camera(size: tuple[int, int]) -> AsyncIterator[MediaStreamTrack]:
    track = Camera(size)
    try:
        yield track
    finally:
        track.stop()


async def test_media_flows_through_the_relay_only(turn_server: TurnServer) -> None:
    staff_config = relay_only(turn_server, credentials(turn_server, "staff-leg-1"))
    device_config = relay_only(turn_server, credentials(turn_server, "device-0042"))
    async with (
        peers(staff_config, device_config) as (staff, device),
        camera(STAFF_SIZE) as staff_camera,
        camera(DEVICE_SIZE) as device_camera,
    ):
        staff.addTransceiver(staff_camera, direction="sendrecv")
        device.addTrack(device_camera)
        staff_received, device_received = receive_frames(staff), receive_frames(device)

        offer, answer = await exchange(staff, device)

        # Only relay candidates were offered, by both sides.
        for sdp in (offer, answer):
            lines = candidate_lines(sdp)
            assert lines, "no candidate at all: did coturn refuse the credential?"
            assert all(" typ relay" in line for line in lines), lines

        await wait_for_state(staff, "connected", CONNECT_TIMEOUT)
        await wait_for_state(device, "connected", CONNECT_TIMEOUT)

        frames_at_staff, frames_at_device = await asyncio.wait_for(
            asyncio.gather(staff_received, device_received), FRAMES_TIMEOUT
        )
        assert {(f.width, f.height) for f in frames_at_staff} == {DEVICE_SIZE}
        assert {(f.width, f.height) for f in frames_at_device} == {STAFF_SIZE}

        # Each side's nominated pair runs from its coturn allocation to the
        # other side's: both ends are relay candidates on the loopback relay.
        for pc, other in ((staff, device), (device, staff)):
            local, remote = selected_pair(pc)
            assert (local.type, remote.type) == ("relay", "relay")
            other_relays = {
                (c.ip, c.port) for c in ice_transport(other).iceGatherer.getLocalCandidates()
            }
            assert (remote.host, remote.port) in other_relays
            assert local.host == remote.host == turn_server.host
            assert {c.type for c in ice_transport(pc).getRemoteCandidates()} == {"relay"}

        stats = list((await device.getStats()).values())
        received = sum(s.packetsReceived for s in stats if s.type == "inbound-rtp")
        sent = sum(s.packetsSent for s in stats if s.type == "outbound-rtp")
        assert received > 0 and sent > 0


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_coturn_grants_an_allocation_for_our_credential(
    turn_server: TurnServer, transport: str
) -> None:
    creds = credentials(turn_server, "device-0042")
    relay, _ = await asyncio.wait_for(
        create_turn_endpoint(
            asyncio.DatagramProtocol,
            server_addr=(turn_server.host, turn_server.port),
            username=creds.username,
            password=creds.credential,
            transport=transport,
        ),
        10,
    )
    try:
        host, port = relay.get_extra_info("sockname")[:2]
        assert host == turn_server.host and port > 0
    finally:
        relay.close()


@pytest.mark.parametrize(
    "case",
    ["wrong secret", "expired", "tampered username"],
)
async def test_coturn_refuses_a_bad_credential(turn_server: TurnServer, case: str) -> None:
    if case == "wrong secret":
        creds = credentials(turn_server, "device-0042", secret="not-the-shared-secret")
    elif case == "expired":
        # Issued two hours ago for ten minutes.
        creds = credentials(turn_server, "device-0042", now=time.time() - 7200)
    else:
        # A valid credential, its username's expiry pushed a day further.
        good = credentials(turn_server, "device-0042")
        expiry, user = good.username.split(":", 1)
        creds = TurnCredentials(f"{int(expiry) + 86400}:{user}", good.credential, good.expires_at)

    with pytest.raises(TransactionFailed) as refused:
        await asyncio.wait_for(
            create_turn_endpoint(
                asyncio.DatagramProtocol,
                server_addr=(turn_server.host, turn_server.port),
                username=creds.username,
                password=creds.credential,
            ),
            10,
        )
    code, _reason = refused.value.response.attributes["ERROR-CODE"]
    assert code == 401


async def test_peers_with_a_wrong_credential_never_connect(turn_server: TurnServer) -> None:
    """No relay candidate on either side: nothing is offered and nothing flows.

    aiortc does not report "failed" here: with no local candidate it never
    starts ICE and stays "new". The call state machine's connect timeout is
    what ends such a call; this test only bounds how long it is watched.
    """
    bad = relay_only(turn_server, credentials(turn_server, "device-0042", secret="wrong-secret"))
    async with (
        peers(bad, bad) as (staff, device),
        camera(DEVICE_SIZE) as device_camera,
    ):
        device.addTrack(device_camera)
        staff.addTransceiver("video", direction="recvonly")
        staff_received = receive_frames(staff)

        offer, answer = await asyncio.wait_for(exchange(staff, device), CONNECT_TIMEOUT)

        assert candidate_lines(offer) == [] and candidate_lines(answer) == []
        await asyncio.sleep(NO_CONNECT_WINDOW)
        assert staff.connectionState != "connected" and device.connectionState != "connected"
        assert not staff_received.done()


async def test_the_peer_with_a_good_credential_sees_the_call_fail(turn_server: TurnServer) -> None:
    """Staff got a relay; the device's credential was refused. Staff's ICE has
    nothing to pair with and fails, within a bounded time."""
    good = relay_only(turn_server, credentials(turn_server, "staff-leg-1"))
    bad = relay_only(turn_server, credentials(turn_server, "device-0042", secret="wrong-secret"))
    async with (
        peers(good, bad) as (staff, device),
        camera(DEVICE_SIZE) as device_camera,
    ):
        device.addTrack(device_camera)
        staff.addTransceiver("video", direction="recvonly")

        offer, answer = await asyncio.wait_for(exchange(staff, device), CONNECT_TIMEOUT)

        assert candidate_lines(offer) and candidate_lines(answer) == []
        await wait_for_state(staff, "failed", CONNECT_TIMEOUT)
        assert device.connectionState != "connected"
