"""Calls over a link that behaves like rural 4G: the unit's peer and the caregiver's peer,
both relay-only through a real coturn on 127.0.0.1, the unit's leg through
:class:`tests.impairment.UdpImpairmentRelay`.

What is emulated (see tests/impairment.py for all it can and cannot): on the
unit's leg only, seeded random loss of 5 % each way, 150 ms each way (300 ms
round trip) with 10 ms jitter, and a 1 Mbit/s bottleneck; or a 500 kbit/s cap
alone; or a scripted outage. The caregiver's leg is loopback. The peers are
:class:`kiosk.media.peer.CallPeer`, the one both the unit (``DeviceCall``) and
the Python caregiver (``StaffCall``) use, with loss recovery installed as both
install it. Media are small test sources (176x144 at 15 fps) except in the
bitrate test (640x480), so twenty calls stay a bounded load.

Nothing here asserts a time margin that a loaded machine could miss: set-up
and media are awaited with generous bounds, and the measured times are
printed (the benchmark, bench/calls.py, reports them per profile).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

import pytest

from kiosk.media.link import GIVE_UP_AFTER, LinkState
from kiosk.media.stats import CallQuality
from tests.impairment import NARROW_500K, RURAL_4G_1MBIT, Impairment
from tests.media.rural import Rig, connected_after_answer, media_of, rig_with

if TYPE_CHECKING:  # the fixture comes from tests/conftest.py's pytest_plugins
    from tests.turn_fixture import TurnServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

#: Calls in the rural-4G test; the issue asks for 20 (``KIOSK_RURAL_CALLS`` to change it).
CALLS = int(os.environ.get("KIOSK_RURAL_CALLS", "20"))
@pytest.fixture
async def rural(turn_server: TurnServer) -> AsyncIterator[Rig]:
    async for rig in rig_with(turn_server, RURAL_4G_1MBIT):
        yield rig


@pytest.fixture
async def clean(turn_server: TurnServer) -> AsyncIterator[Rig]:
    async for rig in rig_with(turn_server, Impairment()):
        yield rig


async def test_calls_over_rural_4g_set_up_and_carry_video_and_audio_both_ways(rural: Rig) -> None:
    setups: list[float] = []
    first_frames: list[float] = []
    for n in range(CALLS):
        unit, caregiver, answered = await rural.call()
        try:
            setup = connected_after_answer(unit, caregiver, answered)
            await asyncio.gather(unit.peer.wait_frames(video=5, audio=25, timeout=20),
                                 caregiver.peer.wait_frames(video=5, audio=25, timeout=20))
            setups.append(setup)
            assert caregiver.peer.first_video_at is not None and unit.peer.first_video_at is not None
            first_frames.append(max(caregiver.peer.first_video_at, unit.peer.first_video_at) - answered)
            # Loss recovery follows the measured 300 ms round trip on both peers.
            for peer in (unit.peer, caregiver.peer):
                await wait_for(lambda p=peer: p.hole_wait is not None and p.hole_wait > 0.45,  # type: ignore[misc]
                               10, f"call {n}: {peer.label}'s hole wait follows the round trip")
        finally:
            await asyncio.gather(unit.peer.close(), caregiver.peer.close())
    print(f"\nrural 4G, {CALLS} calls: answer→connected p50 {statistics.median(setups):.2f} s, "
          f"max {max(setups):.2f} s; answer→first frame both sides p50 {statistics.median(first_frames):.2f} s, "
          f"max {max(first_frames):.2f} s; relay lost {rural.relay.up.lost}+{rural.relay.down.lost} packets")
    assert len(setups) == CALLS
    assert rural.relay.up.lost > 0 and rural.relay.down.lost > 0, "the link really lost packets"


async def test_over_rural_4g_the_call_connects_while_it_rings_and_sends_no_media_before_the_answer(
        rural: Rig) -> None:
    """The unit's offer and the caregiver's answer cross while it rings: ICE and DTLS come up
    over the impaired link, and nothing is sent on either sender (no camera picture, no
    microphone sound) and nothing shown, until the citizen answers; then media flows at once."""
    unit, caregiver = await rural.ring()
    try:
        await asyncio.gather(unit.peer.wait_connected(30), caregiver.peer.wait_connected(30))
        assert unit.peer.held and caregiver.peer.held
        assert unit.peer.media is None, "no camera or microphone is opened while it rings"
        await asyncio.sleep(1.0)  # a while of ringing, connected
        for side in (unit, caregiver):
            counts = await side.peer.sent_and_received()
            assert counts["video_sent"] == counts["audio_sent"] == 0, f"{side.peer.label} sent media while ringing"
            assert side.peer.connected_at is None and "connected" not in side.states  # not "in call" yet
        assert unit.peer.video_frames == unit.peer.audio_frames == 0
        for side in (unit, caregiver):  # no encoder yet: the first frame at the answer is a key frame
            assert side.peer.pc is not None
            assert all(getattr(sender, "_RTCRtpSender__encoder", None) is None for sender in side.peer.pc.getSenders())

        answered = await rural.answer(unit, caregiver)
        assert unit.peer.ice_connected_at is not None and unit.peer.ice_connected_at < answered
        await asyncio.gather(unit.peer.wait_frames(video=3, audio=10, timeout=20),
                             caregiver.peer.wait_frames(video=3, audio=10, timeout=20))
        assert "connected" in unit.states and "connected" in caregiver.states
        assert unit.peer.first_video_at is not None and caregiver.peer.first_video_at is not None
        print(f"\npre-connected over rural 4G: answer→first frame unit {unit.peer.first_video_at - answered:.2f} s, "
              f"caregiver {caregiver.peer.first_video_at - answered:.2f} s")
    finally:
        await asyncio.gather(unit.peer.close(), caregiver.peer.close())


#: Video back this soon after the sound, on each side, after a 5 s outage (a PLI goes with the
#: first packet back: 0.03-0.16 s on a quiet machine; 0.5-1.8 s when it waited a hole wait first).
#: A bound with room for a machine many times slower, not the target; the pure tests in
#: test_keyframes.py are what catch the old behaviour.
OUTAGE_RECOVERY_BOUND = 3.0


async def test_a_5s_outage_is_told_to_both_and_ridden_out_without_anyone_pressing_anything(clean: Rig) -> None:
    unit, caregiver, _ = await clean.call()
    try:
        await asyncio.gather(unit.peer.wait_frames(video=10, audio=50, timeout=20),
                             caregiver.peer.wait_frames(video=10, audio=50, timeout=20))
        clean.relay.outage(5.0)
        for side in (unit, caregiver):
            await wait_for(lambda s=side: any(state is LinkState.LOST for _, state in s.links), 10,  # type: ignore[misc]
                           f"{side.peer.label} told the link is lost")
        frames = (unit.peer.video_frames, caregiver.peer.video_frames)
        await asyncio.gather(unit.peer.wait_frames(video=frames[0] + 30, timeout=30),
                             caregiver.peer.wait_frames(video=frames[1] + 30, timeout=30))
        for side in (unit, caregiver):
            assert "failed" not in side.states and side.peer.connection_state == "connected"
            assert side.peer.link.outages == 1 and side.peer.link.recovery_s is not None
            # The target is 1 s (bench/rural_calls.py shows it); the bound leaves room for a loaded machine.
            assert side.peer.link.recovery_s <= OUTAGE_RECOVERY_BOUND, f"{side.peer.label}: video came back late"
        quality = await unit.peer.close()
        assert quality is not None and quality.outages == 1 and quality.ice_path == "relay"
        assert quality.longest_outage_s >= 4.0 and quality.recovery_s is not None
        print(f"\n5 s outage: video back {unit.peer.link.recovery_s} s (unit), "
              f"{caregiver.peer.link.recovery_s} s (caregiver) after sound")
    finally:
        await asyncio.gather(unit.peer.close(), caregiver.peer.close())


async def test_a_30s_outage_ends_the_call_on_both_sides(clean: Rig) -> None:
    unit, caregiver, _ = await clean.call()
    try:
        await asyncio.gather(unit.peer.wait_frames(video=5, audio=25, timeout=20),
                             caregiver.peer.wait_frames(video=5, audio=25, timeout=20))
        clean.relay.outage(30.0)
        for side in (unit, caregiver):  # the peers give up after GIVE_UP_AFTER, well before the link returns
            await wait_for(lambda s=side: "failed" in s.states, GIVE_UP_AFTER + 10,  # type: ignore[misc]
                           f"{side.peer.label} gave the call up")
            assert LinkState.LOST in [state for _, state in side.links]  # told before the end
    finally:
        await asyncio.gather(unit.peer.close(), caregiver.peer.close())


async def _call_through_500k(turn_server: TurnServer) -> tuple[CallQuality, CallQuality]:
    """A 640x480 call whose unit leg is capped at 500 kbit/s (1 s of queue): both sides' quality."""
    async for rig in rig_with(turn_server, NARROW_500K, seed=5):
        unit, caregiver, _ = await rig.call(media_of(640, 480, 30))
        try:
            await caregiver.peer.wait_frames(video=10, timeout=20)
            await asyncio.sleep(15)  # REMB and reported loss steer the unit's encoder
            sent, received = await unit.peer.close(), await caregiver.peer.close()
        finally:
            await asyncio.gather(unit.peer.close(), caregiver.peer.close())
        assert sent is not None and received is not None
        print(f"\n500 kbit/s: unit's lowest bitrate {sent.lowest_bitrate_sent_bps} bit/s; caregiver froze "
              f"{received.freezes} times, {received.frozen_s} s of {received.duration_s} s")
        return sent, received
    raise AssertionError("unreachable: rig_with yields once")


async def test_a_500kbit_cap_brings_the_senders_bitrate_down_within_10_s(turn_server: TurnServer) -> None:
    sent, _ = await _call_through_500k(turn_server)
    assert sent.lowest_bitrate_sent_bps is not None and sent.lowest_bitrate_sent_bps <= 500_000


async def test_a_500kbit_cap_does_not_freeze_the_receiver_for_long(turn_server: TurnServer) -> None:
    """The unit's video steps down to half its size and frame rate once its encoder aims at
    about 300 kbit/s (kiosk.media.link.VideoStep), so its key frames fit the queue. Measured
    here on a loaded machine: 0 to 1.7 s frozen of 16 s; before the step, most of the call."""
    _, received = await _call_through_500k(turn_server)
    assert received.frozen_s <= 0.25 * received.duration_s  # the bound: a quarter (the target is 5 %)


async def wait_for(done: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        await asyncio.sleep(0.1)
