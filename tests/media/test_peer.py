"""The one call peer (kiosk.media.peer.CallPeer): two of them in one process, on 127.0.0.1.

One offers (as the unit does), one answers (as the caregiver does); media
flows both ways through the same code on both sides.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace

import pytest
from aiortc.rtcconfiguration import RTCIceTransportPolicy

from kiosk.media.loopback import loopback_only
from kiosk.media.peer import CallMediaError, CallPeer, LocalMedia, rtc_configuration
from kiosk.media.sources import lavfi_pattern_spec, lavfi_tone_spec, open_source
from kiosk.media.swappable import SwappableTrack

pytestmark = pytest.mark.timeout(60)


async def small_media() -> LocalMedia:
    video_source = await open_source(lavfi_pattern_spec(176, 144, 15))
    audio_source = await open_source(lavfi_tone_spec(660))

    async def close() -> None:
        video_source.stop()
        audio_source.stop()

    return LocalMedia(SwappableTrack("video", video_source, size=(176, 144)), SwappableTrack("audio", audio_source),
                      "video/VP8", close)


async def connect(offerer: CallPeer, answerer: CallPeer) -> None:
    await offerer.open_media(small_media)
    await answerer.open_media(small_media)
    await offerer.accept(await answerer.answer(await offerer.offer()))
    await asyncio.gather(offerer.wait_connected(15), answerer.wait_connected(15))


@pytest.fixture
async def pair() -> AsyncIterator[tuple[CallPeer, CallPeer, list[str]]]:
    states: list[str] = []
    with loopback_only():
        unit = CallPeer(rtc_configuration([], relay_only=False), label="unit", on_state=states.append)
        caller = CallPeer(rtc_configuration([], relay_only=False), label="caller")
        try:
            yield unit, caller, states
        finally:
            await unit.close()
            await caller.close()


def test_our_ice_servers_only_and_relay_only_is_the_relay_policy() -> None:
    turn = SimpleNamespace(urls=["turn:127.0.0.1:3478?transport=udp"], username="1:u", credential="c")
    config = rtc_configuration([turn], relay_only=True)
    assert config.iceServers is not None
    assert [(s.urls, s.username, s.credential) for s in config.iceServers] == [
        (["turn:127.0.0.1:3478?transport=udp"], "1:u", "c")]
    assert config.iceTransportPolicy is RTCIceTransportPolicy.RELAY
    empty = rtc_configuration([], relay_only=False)
    assert empty.iceServers == [] and empty.iceTransportPolicy is RTCIceTransportPolicy.ALL  # never a public STUN


@pytest.mark.slow
async def test_media_flows_both_ways_and_each_side_reports_its_quality(
        pair: tuple[CallPeer, CallPeer, list[str]]) -> None:
    unit, caller, states = pair
    await connect(unit, caller)
    await asyncio.gather(unit.wait_frames(video=10, audio=20, timeout=15),
                         caller.wait_frames(video=10, audio=20, timeout=15))
    assert unit.first_video_at is not None and caller.first_audio_at is not None
    assert "connected" in states
    counts = await unit.sent_and_received()
    assert min(counts.values()) > 0, counts
    quality = await unit.close()
    assert quality is not None and quality.frames_decoded >= 10 and quality.packets_received > 0
    assert await unit.close() is quality  # idempotent
    assert unit.connection_state == "closed" and states[-1] != "closed"  # no state reported after close
    assert (await caller.close()) is not None


@pytest.mark.slow
async def test_a_sink_that_raises_does_not_end_the_call(caplog: pytest.LogCaptureFixture) -> None:
    def broken(_frame: object) -> None:
        raise RuntimeError("renderer broke")

    with loopback_only():
        unit = CallPeer(rtc_configuration([], relay_only=False), label="unit", on_video_frame=broken)
        caller = CallPeer(rtc_configuration([], relay_only=False), label="caller")
        try:
            await connect(unit, caller)
            await unit.wait_frames(video=10, timeout=15)  # frames keep coming, counted
        finally:
            await unit.close()
            await caller.close()
    assert caplog.text.count("a remote video frame could not be delivered") == 1  # once, not per frame


async def test_waiting_is_bounded_and_says_what_was_missing() -> None:
    peer = CallPeer(rtc_configuration([], relay_only=False), label="call x")
    with pytest.raises(TimeoutError, match="call x: media not connected"):
        await peer.wait_connected(0.05)
    with pytest.raises(TimeoutError, match="only 0/1 video"):
        await peer.wait_frames(video=1, timeout=0.05)
    assert await peer.close() is None  # nothing flowed: no quality


async def test_bad_sdp_and_broken_devices_are_call_media_errors() -> None:
    peer = CallPeer(rtc_configuration([], relay_only=False))

    async def no_camera() -> LocalMedia:
        raise OSError("/dev/video0: no such device")

    with pytest.raises(CallMediaError, match="could not open camera/microphone: OSError"):
        await peer.open_media(no_camera)
    with pytest.raises(CallMediaError, match="no offer was made"):
        await peer.accept("v=0\r\n")
    with pytest.raises(CallMediaError, match="the offer was refused"):
        await peer.answer("v=0\r\nnot an offer\r\n")
    await peer.close()
    with pytest.raises(CallMediaError, match="the call has ended"):
        await peer.offer()


async def test_media_opened_after_the_hang_up_is_closed_at_once() -> None:
    peer = CallPeer(rtc_configuration([], relay_only=False))
    closed = asyncio.Event()
    release = asyncio.Event()

    async def slow_camera() -> LocalMedia:
        await release.wait()

        async def close() -> None:
            closed.set()

        return LocalMedia(None, None, None, close)

    opening = asyncio.ensure_future(peer.open_media(slow_camera))
    await asyncio.sleep(0)
    await peer.close()
    release.set()
    with pytest.raises(CallMediaError, match="ended while the camera"):
        await opening
    assert closed.is_set() and peer.media is None
