"""Two call peers over an impaired relay-only path: the rig of tests/media/test_rural_4g.py
and bench/rural_calls.py.

The unit's peer offers through :class:`tests.impairment.UdpImpairmentRelay` in front of
a real coturn; the caregiver's peer answers through coturn directly; both are
:class:`kiosk.media.peer.CallPeer` (what ``DeviceCall`` and ``StaffCall`` use),
relay-only, with loss recovery installed as both sides install it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from kiosk.media.encoders import VP8_MIME
from kiosk.media.keyframes import install_loss_recovery
from kiosk.media.link import LinkState
from kiosk.media.peer import CallPeer, LocalMedia, rtc_configuration
from kiosk.media.sources import lavfi_pattern_spec, lavfi_tone_spec, open_source
from kiosk.media.swappable import SwappableTrack
from kiosk.server.turn import ice_servers, issue_credentials
from tests.impairment import Impairment, UdpImpairmentRelay
from tests.turn_fixture import TurnServer

#: The server's connect timeout: beyond it the call would have ended.
SETUP_BOUND = 30.0


def media_of(width: int, height: int, fps: int) -> Callable[[], Awaitable[LocalMedia]]:
    """Test sources: a moving pattern and a tone, VP8."""

    async def opener() -> LocalMedia:
        video_source = await open_source(lavfi_pattern_spec(width, height, fps))
        audio_source = await open_source(lavfi_tone_spec(660))

        async def close() -> None:
            video_source.stop()
            audio_source.stop()

        return LocalMedia(SwappableTrack("video", video_source, size=(width, height)),
                          SwappableTrack("audio", audio_source), VP8_MIME, close)

    return opener


SMALL = media_of(176, 144, 15)


#: Opus as aiortc sends it: one packet per 20 ms of sound.
AUDIO_PACKET_S = 0.02


@dataclass
class Side:
    """One side's peer, and what it was told: connection states and link notices."""

    peer: CallPeer
    states: list[str]
    links: list[tuple[float, LinkState]] = field(default_factory=list)

    async def sound_lost_s(self) -> float:
        """Seconds of sound that never arrived (audio packets lost for good, 20 ms each): what
        a listener misses, since aiortc conceals nothing. Read before the peer closes."""
        pc = self.peer.pc
        if pc is None or pc.connectionState == "closed":
            return 0.0
        lost: int = sum(max(0, s.packetsLost) for s in (await pc.getStats()).values()
                        if getattr(s, "type", None) == "inbound-rtp" and s.kind == "audio")
        return lost * AUDIO_PACKET_S


@dataclass
class Rig:
    turn: TurnServer
    relay: UdpImpairmentRelay

    def side(self, label: str, through_relay: bool) -> Side:
        host, port = self.relay.address if through_relay else (self.turn.host, self.turn.port)
        creds = issue_credentials(self.turn.secret, label, now=time.time())
        servers = ice_servers(host, port, creds, transports=("udp",), stun=False)
        states: list[str] = []
        links: list[tuple[float, LinkState]] = []
        peer = CallPeer(rtc_configuration(servers, relay_only=True), label=label, on_state=states.append,
                        on_link=lambda state: links.append((time.monotonic(), state)))
        return Side(peer, states, links)

    async def call(self, media: Callable[[], Awaitable[LocalMedia]] = SMALL) -> tuple[Side, Side, float]:
        """A connected call: the unit offers through the relay, the caregiver answers; seconds from
        the answer to connected. As on the unit, the offer is gathered while it rings (before the
        answer); the camera opening is left out of the time (it is the device's, not the link's)."""
        unit, caregiver = self.side("unit", through_relay=True), self.side("caregiver", through_relay=False)
        await unit.peer.prepare_offer(VP8_MIME)
        await asyncio.gather(unit.peer.open_media(media), caregiver.peer.open_media(media))
        answered = time.monotonic()
        await unit.peer.accept(await caregiver.peer.answer(await unit.peer.offer()))
        await asyncio.gather(unit.peer.wait_connected(SETUP_BOUND), caregiver.peer.wait_connected(SETUP_BOUND))
        return unit, caregiver, time.monotonic() - answered


async def rig_with(turn: TurnServer, impairment: Impairment, seed: int = 1) -> AsyncIterator[Rig]:
    """A rig whose unit leg has ``impairment`` (both directions), for as long as it is iterated."""
    install_loss_recovery()
    async with UdpImpairmentRelay((turn.host, turn.port), impairment, seed=seed) as relay:
        yield Rig(turn, relay)
