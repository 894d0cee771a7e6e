"""Two call peers over an impaired relay-only path: the rig of tests/media/test_rural_4g.py
and bench/rural_calls.py.

The unit's peer offers through :class:`tests.impairment.UdpImpairmentRelay` in front of
a real coturn; the caregiver's peer answers through coturn directly; both are
:class:`kiosk.media.peer.CallPeer` (what ``DeviceCall`` and ``StaffCall`` use),
relay-only, with loss recovery installed as both sides install it.

A call goes as the unit and the caregiver make it: while it rings the unit's offer and
the caregiver's answer are exchanged and ICE and DTLS come up with no track attached
(:meth:`Rig.ring`); at the answer the unit attaches its media at once and the caregiver
when the unit's "answered" reaches it (:meth:`Rig.answer`). The signalling itself is
not carried here (there is no server): its trips are modelled as the unit leg's one-way
delay for "answered" (the unit's link is the slow one), and left out while it rings.
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
#: How long the unit rings before the citizen answers: a person takes seconds to reach the
#: screen; 3 s is quick. ICE and DTLS not up by then finish after the answer, in its time.
RING_SECONDS = 3.0


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
    #: The "answered" message's trip from the unit to the caregiver (the unit leg's one-way delay).
    answered_trip: float = 0.0

    def side(self, label: str, through_relay: bool) -> Side:
        host, port = self.relay.address if through_relay else (self.turn.host, self.turn.port)
        creds = issue_credentials(self.turn.secret, label, now=time.time())
        servers = ice_servers(host, port, creds, transports=("udp",), stun=False)
        states: list[str] = []
        links: list[tuple[float, LinkState]] = []
        peer = CallPeer(rtc_configuration(servers, relay_only=True), label=label, on_state=states.append,
                        on_link=lambda state: links.append((time.monotonic(), state)))
        return Side(peer, states, links)

    async def ring(self, media: Callable[[], Awaitable[LocalMedia]] = SMALL) -> tuple[Side, Side]:
        """The unit rings: its offer and the caregiver's answer are exchanged and both peers are
        held (connecting, sending nothing). The caregiver's media is open, as the page opens its
        camera before it calls; the unit's is not (it opens at the answer)."""
        unit, caregiver = self.side("unit", through_relay=True), self.side("caregiver", through_relay=False)
        await asyncio.gather(unit.peer.prepare_offer(VP8_MIME), caregiver.peer.open_media(media))
        prepared = unit.peer.take_prepared_offer()
        assert prepared is not None
        await unit.peer.accept(await caregiver.peer.answer(prepared[1], hold=True))
        return unit, caregiver

    async def answer(self, unit: Side, caregiver: Side, media: Callable[[], Awaitable[LocalMedia]] = SMALL) -> float:
        """The citizen answers: the unit opens its media and attaches it; the caregiver attaches
        its own one trip later. Returns once both count as connected and the caregiver has
        started; the answer's time (``time.monotonic``). The camera opening is left out of the
        time (it is the device's, not the link's)."""
        await unit.peer.open_media(media)
        answered = time.monotonic()
        unit.peer.start_media()
        asyncio.get_running_loop().call_later(self.answered_trip, caregiver.peer.start_media)
        await asyncio.gather(unit.peer.wait_connected(SETUP_BOUND), caregiver.peer.wait_connected(SETUP_BOUND))
        await asyncio.sleep(max(0.0, answered + self.answered_trip - time.monotonic()))
        return answered

    async def call(self, media: Callable[[], Awaitable[LocalMedia]] = SMALL,
                   ring: float = 0.0) -> tuple[Side, Side, float]:
        """A connected call, pre-connecting during a ring of ``ring`` seconds: the two sides and
        the time of the answer (``time.monotonic``). The tests answer at once (whatever the
        connection has reached by then, the call must set up); the benchmark rings as a
        person would (:data:`RING_SECONDS`)."""
        started = time.monotonic()
        unit, caregiver = await self.ring(media)
        await asyncio.sleep(max(0.0, started + ring - time.monotonic()))
        return unit, caregiver, await self.answer(unit, caregiver, media)


def connected_after_answer(unit: Side, caregiver: Side, answered: float) -> float:
    """Seconds from the answer until ICE and DTLS were up on both sides: 0 if they were while it rang."""
    times = [side.peer.ice_connected_at for side in (unit, caregiver)]
    assert None not in times, "both sides connected"
    return max(0.0, max(t for t in times if t is not None) - answered)


async def rig_with(turn: TurnServer, impairment: Impairment, seed: int = 1) -> AsyncIterator[Rig]:
    """A rig whose unit leg has ``impairment`` (both directions), for as long as it is iterated."""
    install_loss_recovery()
    async with UdpImpairmentRelay((turn.host, turn.port), impairment, seed=seed) as relay:
        yield Rig(turn, relay, answered_trip=impairment.delay)
