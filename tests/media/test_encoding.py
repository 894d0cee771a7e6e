"""Video encoded in the capture thread: key-frame requests and bitrate still reach the encoder."""

from __future__ import annotations

import asyncio
import fractions
import time
from collections.abc import Callable
from typing import Any

import av
import pytest
from aiortc import RTCPeerConnection, RTCRtpSender
from aiortc.codecs.base import Encoder
from aiortc.codecs.h264 import h264_depayload
from aiortc.codecs.vpx import Vp8Encoder, vp8_depayload
from aiortc.rtp import RTCP_PSFB_APP, RtcpPsfbPacket, pack_remb_fci

from kiosk.media.encoders import H264_MIME, PyAVH264Encoder, install_encoding_at_source, prefer_video_codec
from kiosk.media.encoding import EncodedFrame, SenderEncoder, picture_of
from kiosk.media.keyframes import is_keyframe
from kiosk.media.loopback import connect
from kiosk.media.sources import Item, lavfi_pattern_spec, open_source
from kiosk.media.swappable import SwappableTrack
from kiosk.ui.self_view import TappedTrack

from .calls import collect

FAST_X264 = {"tune": "zerolatency", "preset": "ultrafast"}
INNER: dict[str, Callable[[], Encoder]] = {
    "vp8": Vp8Encoder,
    "h264": lambda: PyAVH264Encoder("libx264", FAST_X264),
}


def depayload(codec: str, payloads: list[bytes]) -> bytes:
    if codec == "vp8":
        return b"".join(vp8_depayload(p) for p in payloads)
    return b"".join(h264_depayload(p) for p in payloads)


async def send_like_aiortc(track: SwappableTrack, encoder: SenderEncoder) -> tuple[Item, list[bytes]]:
    """What RTCRtpSender._next_encoded_frame does: encode a frame, pack a packet."""
    item = await track.recv()
    if isinstance(item, av.frame.Frame):
        payloads, _ = await asyncio.get_running_loop().run_in_executor(None, encoder.encode, item, False)
    else:
        payloads, _ = encoder.pack(item)
    return item, payloads


def encoded(item: Item) -> EncodedFrame:
    assert isinstance(item, EncodedFrame)
    return item


@pytest.mark.parametrize("codec", sorted(INNER))
async def test_after_the_first_frame_the_capture_thread_encodes_and_a_key_frame_request_is_obeyed(codec: str) -> None:
    source = await open_source(lavfi_pattern_spec(160, 120, 30))
    track = SwappableTrack("video", source)
    encoder = SenderEncoder(INNER[codec]())
    try:
        first, _ = await send_like_aiortc(track, encoder)
        assert isinstance(first, av.VideoFrame)  # aiortc encodes the first: that is how we learn its encoder
        assert track.encoder_slot.encoder is encoder
        sent: list[tuple[EncodedFrame, bytes]] = []
        while len(sent) < 8:
            item, payloads = await send_like_aiortc(track, encoder)
            if isinstance(item, EncodedFrame) and payloads:
                sent.append((encoded(item), depayload(codec, payloads)))
        assert not any(is_keyframe(data) for _, data in sent[2:])  # an inter frame chain...
        keyframe_number = encoder.request_keyframe()
        while True:
            item, payloads = await send_like_aiortc(track, encoder)
            if isinstance(item, EncodedFrame) and encoded(item).number >= keyframe_number:
                break
        assert encoded(item).number == keyframe_number  # sent, not lost on the way
        assert is_keyframe(depayload(codec, payloads))  # ...until asked: the next frame encoded is a key frame
        assert encoder.frames_discarded == 0
    finally:
        track.stop()
        source.stop()


def test_a_frame_lost_on_our_side_is_not_sent_and_a_key_frame_mends_the_chain() -> None:
    encoder = SenderEncoder(Vp8Encoder())
    pictures = [av.VideoFrame(160, 120, "yuv420p") for _ in range(4)]
    for i, picture in enumerate(pictures):
        picture.pts, picture.time_base = i * 3000, fractions.Fraction(1, 90000)
    first, lost, third = (encoder.encode_at_source(p) for p in pictures[:3])
    assert encoder.pack(first)[0]
    del lost  # dropped on the way: a swap, a full queue
    assert encoder.pack(third) == ([], 0)  # would be decoded against a frame the peer never got
    assert encoder.frames_discarded == 1
    mended = encoder.encode_at_source(pictures[3])
    payloads, _ = encoder.pack(mended)
    assert encoded(mended).keyframe and is_keyframe(depayload("vp8", payloads))


async def test_the_self_view_shows_the_picture_of_an_encoded_frame() -> None:
    shown: list[av.VideoFrame] = []
    source = await open_source(lavfi_pattern_spec(160, 120, 30))
    video = SwappableTrack("video", source)
    tapped = TappedTrack(video, shown.append, max_fps=1000)
    encoder = SenderEncoder(Vp8Encoder())
    try:
        for _ in range(6):
            item: Any = await tapped.recv()
            if isinstance(item, av.frame.Frame):
                encoder.encode(item)
        assert isinstance(item, EncodedFrame)  # encoded in the capture thread by now
        assert shown[-1] is picture_of(item) and (shown[-1].width, shown[-1].height) == (160, 120)
    finally:
        video.stop()
        source.stop()


async def test_only_frames_aiortc_encodes_itself_carry_the_slot_the_filler_among_them() -> None:
    source = await open_source(lavfi_pattern_spec(160, 120, 30))
    track = SwappableTrack("video", source, placeholder_fps=50)
    encoder = SenderEncoder(Vp8Encoder())
    try:
        item, _ = await send_like_aiortc(track, encoder)
        assert isinstance(item, av.VideoFrame) and item.opaque is track.encoder_slot  # how aiortc's finds us
        while not isinstance(item, EncodedFrame):
            item, _ = await send_like_aiortc(track, encoder)
        track.muted = True
        filler, payloads = await send_like_aiortc(track, encoder)
        assert isinstance(filler, av.VideoFrame) and filler.opaque is track.encoder_slot and payloads
        assert track.encoder_slot.encoder is encoder
    finally:
        track.stop()
        source.stop()


def sender_encoder(pc: RTCPeerConnection) -> tuple[RTCRtpSender, SenderEncoder]:
    sender = next(s for s in pc.getSenders() if s.kind == "video")
    encoder = getattr(sender, "_RTCRtpSender__encoder", None)  # aiortc keeps it private
    assert isinstance(encoder, SenderEncoder)
    return sender, encoder


async def eventually(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not within the time"
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("mime_type", ["video/VP8", H264_MIME])
async def test_in_a_real_call_a_pli_and_a_remb_reach_the_encoder_in_the_capture_thread(
    peers: tuple[RTCPeerConnection, RTCPeerConnection], mime_type: str
) -> None:
    a, b = peers
    install_encoding_at_source()
    source = await open_source(lavfi_pattern_spec(160, 120, 30))
    prefer_video_codec(a.addTransceiver(SwappableTrack("video", source), "sendonly"), mime_type)
    received = collect(b)
    try:
        await connect(a, b)
        await received.wait_for("video", 10)
        sender, encoder = sender_encoder(a)
        assert encoder.frames_at_source > 0

        forced = encoder.keyframes_forced
        receiver = next(r for r in b.getReceivers() if r.track.kind == "video")
        await receiver._send_rtcp_pli(sender._ssrc)  # the receiver's own RTCP path, over the wire
        await eventually(lambda: encoder.keyframes_forced > forced)

        bitrate = 700_000  # within both aiortc encoders' bounds, and far from both defaults
        remb = RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=1, media_ssrc=0, fci=pack_remb_fci(bitrate, [sender._ssrc]))
        await sender._handle_rtcp_packet(remb)  # what aiortc does with a REMB from the peer
        assert encoder.target_bitrate == bitrate
        inner: Any = encoder.inner  # aiortc's own VP8 or H.264 encoder: it reopens for the new bitrate
        # it drops its codec on the change and opens the new one at the next frame (CI caught it between)
        await eventually(lambda: inner.codec is not None and inner.codec.bit_rate == bitrate)
        shown = received.count("video")
        await received.wait_for("video", shown + 10)  # and video goes on at the new bitrate
    finally:
        source.stop()
