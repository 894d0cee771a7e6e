"""Key frame requests after loss: the pure policy, the buffer, and a real lossy call."""

from __future__ import annotations

import asyncio
import fractions
import itertools
import random
import time
from collections.abc import Awaitable, Callable

import av
import pytest
from aiortc import RTCPeerConnection, RTCRtpSender
from aiortc.codecs.h264 import h264_depayload
from aiortc.codecs.vpx import Vp8Encoder, VpxPayloadDescriptor, vp8_depayload
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtp import RTCP_PSFB_PLI, RtcpPacket, RtcpPsfbPacket, RtpPacket

from kiosk.media.encoders import VP8_MIME, PyAVH264Encoder, prefer_video_codec
from kiosk.media.keyframes import (
    KeyframeRequestPolicy,
    RecoveringJitterBuffer,
    install_loss_recovery,
    is_keyframe,
)
from kiosk.media.loopback import connect
from kiosk.media.sources import lavfi_pattern_spec, open_source

from .calls import collect


def test_policy_asks_once_per_loss_and_again_only_if_no_key_frame_comes() -> None:
    policy = KeyframeRequestPolicy(min_interval=0.2, retry_interval=0.6)
    assert not policy.should_request(0.0)
    policy.picture_lost()
    assert policy.should_request(1.0)
    policy.picture_lost()  # more loss before the key frame: the same request covers it
    assert not policy.should_request(1.1)
    assert not policy.should_request(1.5)
    assert policy.should_request(1.6)  # the PLI or the key frame was lost: ask again
    policy.keyframe_received()
    assert not policy.should_request(5.0)
    policy.picture_lost()
    assert policy.should_request(5.0)
    policy.keyframe_received()
    policy.picture_lost()
    assert not policy.should_request(5.1)  # rate limit across losses
    assert policy.should_request(5.2)
    assert policy.requests == 4


def test_unanswered_requests_back_off_so_a_narrow_link_is_not_flooded_with_key_frames() -> None:
    policy = KeyframeRequestPolicy(min_interval=0.2, retry_interval=0.6)
    policy.picture_lost()
    asked = [t / 10 for t in range(100) if policy.should_request(t / 10)]
    gaps = [b - a for a, b in itertools.pairwise(asked)]
    assert gaps == pytest.approx([0.6, 1.2, 2.4, 2.4, 2.4], abs=0.11)  # doubling, up to the cap
    policy.keyframe_received()
    policy.picture_lost()
    assert policy.should_request(9.5) and not policy.should_request(10.0)  # a new loss starts afresh
    assert policy.should_request(10.2)


TEXTURE = random.Random(7).randbytes(4096)


def synthetic(i: int, size: tuple[int, int] = (320, 240)) -> av.VideoFrame:
    """A moving picture, so inter frames carry data."""
    frame = av.VideoFrame(*size, "yuv420p")
    luma = frame.planes[0]
    shift = (i * 2) % luma.line_size  # a detailed picture panning sideways
    frame.planes[0].update(bytes(TEXTURE[(shift + k) % len(TEXTURE)] for k in range(luma.buffer_size)))
    for plane in frame.planes[1:]:
        plane.update(bytes([128]) * plane.buffer_size)
    frame.pts = i * 3000
    frame.time_base = fractions.Fraction(1, 90000)
    return frame


def rtp_stream(
    encoder: object, depayload: Callable[[bytes], bytes], frames: int, keyframes: set[int],
    size: tuple[int, int] = (320, 240),
) -> list[list[RtpPacket]]:
    """Real encoder output as RTP packets, grouped per frame, as a receiver sees them."""
    seq = 1000
    grouped = []
    for i in range(frames):
        payloads, timestamp = encoder.encode(synthetic(i, size), force_keyframe=i in keyframes)  # type: ignore[attr-defined]
        packets = []
        for payload in payloads:
            packet = RtpPacket(payload_type=97, sequence_number=seq, timestamp=timestamp, payload=payload)
            packet._data = depayload(payload)  # type: ignore[attr-defined]
            packets.append(packet)
            seq += 1
        grouped.append(packets)
    return grouped


def assembled(packets: list[RtpPacket]) -> bytes:
    return b"".join(p._data for p in packets)  # type: ignore[attr-defined]


def test_key_frames_are_recognised_in_real_vp8_and_h264() -> None:
    vp8 = rtp_stream(Vp8Encoder(), vp8_depayload, 3, set())
    h264 = rtp_stream(PyAVH264Encoder("libx264", {"tune": "zerolatency"}), h264_depayload, 3, set())
    for stream in (vp8, h264):
        assert [is_keyframe(assembled(f)) for f in stream] == [True, False, False]
        assert len(stream[0]) > 2
        # A key frame whose head was lost (for H.264: SPS/PPS and the IDR's
        # first fragment) must not pass for one.
        assert not is_keyframe(assembled(stream[0][2:]))


def feed(
    buffer: JitterBuffer, stream: list[list[RtpPacket]], lost: set[int], clock: list[float]
) -> tuple[list[JitterFrame], list[int]]:
    """Deliver a 30 fps stream minus ``lost`` packets; returns frames out and PLI times."""
    out, plis = [], []
    for i, packets in enumerate(stream):
        clock[0] = i / 30
        for packet in packets:
            if packet.sequence_number in lost:
                continue
            pli, frame = buffer.add(packet)
            if pli:
                plis.append(i)
            if frame is not None:
                out.append(frame)
    return out, plis


def test_an_unrepaired_hole_stalls_aiortc_but_we_skip_it_and_resume_at_a_key_frame() -> None:
    stream = rtp_stream(Vp8Encoder(), vp8_depayload, 60, keyframes={30})
    lost = {stream[10][0].sequence_number}  # the head of frame 10, never retransmitted

    stock_out, stock_plis = feed(JitterBuffer(capacity=512, is_video=True), stream, lost, [0.0])
    assert len(stock_out) == 9 and stock_plis == []  # frozen for good at frame 9

    clock = [0.0]
    ours = RecoveringJitterBuffer(capacity=512, max_hole_wait=0.3, clock=lambda: clock[0])
    out, plis = feed(ours, stream, lost, clock)
    timestamps = [f.timestamp for f in out]
    frame_ts = [packets[0].timestamp for packets in stream]
    assert timestamps[:9] == frame_ts[:9]
    # Frames 10..29 depend on the lost data: held back, not shown broken.
    assert timestamps[9:] == frame_ts[30:59]
    assert ours.holes_skipped == 1 and ours.frames_held_back > 0
    assert plis[0] in range(19, 21)  # asked ~0.3 s after the hole (frame 10 + 9)
    assert all(b - a >= 18 for a, b in itertools.pairwise(plis))  # then every 0.6 s at most
    assert max(plis) < 30  # and stopped once the key frame came
    # What we pass on decodes cleanly.
    decoder = av.CodecContext.create("libvpx", "r")
    for frame in out:
        decoder.decode(av.Packet(frame.data))


def test_after_an_outage_the_first_packet_back_asks_for_a_key_frame() -> None:
    """5 s dark: the hole is not waited on (its packets are seconds old); a PLI goes with the first
    packet back, and the picture resumes at the key frame that answers it."""
    stream = rtp_stream(Vp8Encoder(), vp8_depayload, 30, keyframes={25}, size=(160, 120))
    clock = [0.0]
    buffer = RecoveringJitterBuffer(capacity=512, max_hole_wait=0.3, clock=lambda: clock[0])
    out, plis = [], []
    for i, packets in enumerate(stream):
        if 10 <= i < 20:
            continue  # sent in the dark
        clock[0] = i / 30 + (5.0 if i >= 20 else 0.0)
        for packet in packets:
            pli, frame = buffer.add(packet)
            plis += [i] * pli
            out += [frame] if frame is not None else []
    frame_ts = [packets[0].timestamp for packets in stream]
    assert plis[0] == 20  # with the first packet back, not a hole wait later
    assert [f.timestamp for f in out] == frame_ts[:9] + frame_ts[25:29]  # then the key frame
    assert buffer.holes_skipped == 1


class LossyLink:
    """Drops chosen RTP packets on their way out of a peer (SRTP comes after us)."""

    def __init__(self, sender: RTCRtpSender) -> None:
        self.media_ssrc = sender._ssrc
        self.rtx_ssrc = sender._rtx_ssrc
        self.drop_next = 0
        self.drop_retransmissions = True
        self.dropped_at: float | None = None
        self.first_timestamp: int | None = None
        self.keyframes_after_loss: list[int] = []  # RTP timestamps
        transport = sender.transport
        self._send: Callable[[bytes], Awaitable[None]] = transport._send_rtp
        transport._send_rtp = self._send_rtp  # type: ignore[method-assign]

    async def _send_rtp(self, data: bytes) -> None:
        if not 192 <= data[1] <= 223:  # RTP, not RTCP
            ssrc = int.from_bytes(data[8:12], "big")
            if ssrc == self.rtx_ssrc and self.drop_retransmissions:
                return  # the NACK repair is lost too: only a key frame can help
            if ssrc == self.media_ssrc:
                if self.drop_next > 0:
                    self.drop_next -= 1
                    self.dropped_at = self.dropped_at or time.monotonic()
                    return
                self._note(RtpPacket.parse(data))
        await self._send(data)


    def _note(self, packet: RtpPacket) -> None:
        if self.first_timestamp is None:
            self.first_timestamp = packet.timestamp
        descriptor, data = VpxPayloadDescriptor.parse(packet.payload)
        starts_frame = descriptor.partition_start and descriptor.partition_id == 0
        if self.dropped_at and starts_frame and data[0] & 0x01 == 0:
            self.keyframes_after_loss.append(packet.timestamp)

    def pts_at_receiver(self, timestamp: int) -> int:
        """aiortc's receiver counts pts from the first RTP timestamp it saw."""
        assert self.first_timestamp is not None
        return (timestamp - self.first_timestamp) % (1 << 32)


class PliCounter:
    """Counts the PLIs a peer sends."""

    def __init__(self, pc: RTCPeerConnection) -> None:
        self.count = 0
        transport = pc.getReceivers()[0].transport
        self._send: Callable[[bytes], Awaitable[None]] = transport._send_rtp
        transport._send_rtp = self._send_rtp  # type: ignore[method-assign]

    async def _send_rtp(self, data: bytes) -> None:
        if 192 <= data[1] <= 223:
            for packet in RtcpPacket.parse(data):
                if isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_PLI:
                    self.count += 1
        await self._send(data)


async def lossy_call(a: RTCPeerConnection,
                     b: RTCPeerConnection) -> tuple[LossyLink, PliCounter, list[tuple[float, av.VideoFrame]]]:
    source = await open_source(lavfi_pattern_spec(320, 240))
    transceiver = a.addTransceiver(source, direction="sendonly")
    prefer_video_codec(transceiver, VP8_MIME)
    link = LossyLink(transceiver.sender)
    received = collect(b)
    await connect(a, b)
    await received.wait_for("video", 20)
    plis = PliCounter(b)
    link.drop_next = 3
    return link, plis, received.video


async def test_a_real_call_recovers_from_unrepairable_loss_with_a_pli(
    peers: tuple[RTCPeerConnection, RTCPeerConnection],
) -> None:
    recovery = install_loss_recovery(max_hole_wait=0.3)
    link, plis, video = await lossy_call(*peers)
    while link.dropped_at is None or link.drop_next:  # noqa: ASYNC110 - set by the link's callback
        await asyncio.sleep(0.01)
    before = len(video)
    deadline = link.dropped_at + 2.0
    while len(video) < before + 10 and time.monotonic() < deadline:  # noqa: ASYNC110 - bounded poll
        await asyncio.sleep(0.02)
    after = [(t, f) for t, f in video if t > link.dropped_at + 0.2]
    assert after, "video did not resume within 2 s of the loss"
    assert after[0][0] - link.dropped_at < 1.2
    assert plis.count >= 1 and recovery.keyframes_requested == plis.count
    assert recovery.holes_skipped >= 1
    # The first picture after the loss is the key frame our PLI asked for, not
    # a broken inter frame.
    assert link.keyframes_after_loss
    assert after[0][1].pts == link.pts_at_receiver(link.keyframes_after_loss[0])


@pytest.mark.slow
async def test_without_our_buffer_aiortc_stays_frozen_after_the_same_loss(
    peers: tuple[RTCPeerConnection, RTCPeerConnection],
) -> None:
    link, plis, video = await lossy_call(*peers)
    while link.dropped_at is None or link.drop_next:  # noqa: ASYNC110 - set by the link's callback
        await asyncio.sleep(0.01)
    await asyncio.sleep(1.5)
    resumed = [t for t, _ in video if t > link.dropped_at + 0.2]
    assert resumed == [] and plis.count == 0  # still frozen 1.5 s later, nobody asked
