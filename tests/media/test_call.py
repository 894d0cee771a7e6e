"""Two real peers in one process exchange lavfi video and audio both ways."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiortc import RTCPeerConnection

from kiosk.media.encoding import SenderEncoder
from kiosk.media.loopback import connect
from kiosk.media.sources import lavfi_pattern_spec, lavfi_tone_spec, open_source
from kiosk.media.stats import measure
from kiosk.media.swappable import SwappableTrack

from .calls import Received, collect, luma_spread


async def add_media(pc: RTCPeerConnection) -> list[SwappableTrack]:
    tracks = [
        SwappableTrack("video", await open_source(lavfi_pattern_spec())),
        SwappableTrack("audio", await open_source(lavfi_tone_spec())),
    ]
    for track in tracks:
        pc.addTrack(track)
    return tracks


@pytest.mark.slow
async def test_video_and_audio_flow_both_ways_and_quality_is_measured(
    peers: tuple[RTCPeerConnection, RTCPeerConnection],
) -> None:
    a, b = peers
    received: dict[str, Received] = {}
    for name, pc in (("a", a), ("b", b)):
        await add_media(pc)
        received[name] = collect(pc)
    started = time.monotonic()
    await connect(a, b)
    for side in received.values():
        await side.wait_for("video", 45)  # 1.5 s of 30 fps
        await side.wait_for("audio", 75)
    for side in received.values():
        frame = side.video[-1][1]
        assert (frame.width, frame.height) == (640, 480)
        assert luma_spread(frame) > 50  # the pattern, decoded; not a blank picture
    # A round-trip time needs a sender report and the receiver report that answers it; aiortc
    # spaces reports 0.5-1.5 s apart at random, and a loaded machine later still (CI saw none
    # after a fixed 1.2 s): wait for one, bounded.
    deadline = time.monotonic() + 15
    quality = await measure(a, received["a"].video_frames, started)
    while quality.round_trip_time_ms is None and time.monotonic() < deadline:
        await asyncio.sleep(0.25)
        quality = await measure(a, received["a"].video_frames, started)
    assert quality.frames_decoded >= 45 and quality.freezes == 0
    # Loopback loses nothing on a quiet machine; beside the rest of the suite this process's loop
    # stalls, and datagrams that find its socket's buffer full are lost (1.7 % seen at load 8).
    assert quality.packets_received > 100 and 0 <= quality.loss_fraction < 0.05
    assert quality.bitrate_received_bps > 100_000 and quality.bitrate_sent_bps > 100_000
    # Loopback: a few ms on a quiet machine. Both peers share this process's event loop, whose lag
    # is in every report's turnaround: 148 and 327 ms were measured in fresh-clone runs at load 5-19.
    assert quality.round_trip_time_ms is not None and 0 < quality.round_trip_time_ms < 1000
    for pc in (a, b):  # the video above was encoded in each side's capture thread, aiortc only packed it
        encoder = next(getattr(s, "_RTCRtpSender__encoder") for s in pc.getSenders()  # noqa: B009 - private in aiortc
                       if s.kind == "video")
        assert isinstance(encoder, SenderEncoder) and encoder.frames_at_source >= 45
