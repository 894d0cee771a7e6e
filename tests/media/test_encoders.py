"""Encoder selection and the H.264 plug-in, proven in real aiortc calls."""

from __future__ import annotations

import fractions

import av
import pytest
from aiortc import RTCPeerConnection
from aiortc.codecs.h264 import H264Encoder

from kiosk.media.encoders import (
    H264_MIME,
    HARDWARE_H264,
    NAL_IDR,
    NAL_PPS,
    NAL_SPS,
    VP8_MIME,
    ParameterSetKeeper,
    PyAVH264Encoder,
    apply_encoder_choice,
    choose_video_encoder,
    install_h264_encoder,
    installed_h264_encoder,
    nal_type,
    prefer_video_codec,
    probe_encoder,
    uninstall_h264_encoder,
)
from kiosk.media.loopback import connect
from kiosk.media.sources import lavfi_pattern_spec, open_source

from .calls import collect

HARDWARE_PRESENT = probe_encoder(HARDWARE_H264) is None
FAST_X264 = {"tune": "zerolatency", "preset": "ultrafast"}


def video_frame(i: int, size: tuple[int, int] = (160, 120)) -> av.VideoFrame:
    frame = av.VideoFrame(*size, "yuv420p")
    for plane in frame.planes:
        plane.update(bytes([(i * 7) % 256]) * plane.buffer_size)
    frame.pts = i * 3000
    frame.time_base = fractions.Fraction(1, 90000)
    return frame


def test_probe_accepts_a_working_encoder() -> None:
    assert probe_encoder("libx264") is None
    assert probe_encoder("libvpx") is None


@pytest.mark.skipif(HARDWARE_PRESENT, reason="this machine has a working h264_v4l2m2m")
def test_listed_but_absent_hardware_encoder_is_refused_and_we_fall_back() -> None:
    assert HARDWARE_H264 in av.codecs_available  # the wheel lists it anyway
    assert probe_encoder(HARDWARE_H264) is not None
    choice = choose_video_encoder()
    assert choice.hardware is False
    assert choice.mime_type == VP8_MIME and choice.codec_name == "libvpx"
    assert HARDWARE_H264 in choice.reason
    assert choose_video_encoder(software_mime=H264_MIME).codec_name == "libx264"


def test_unknown_encoder_name_is_refused() -> None:
    assert "libdoesnotexist" not in av.codecs_available
    assert probe_encoder("libdoesnotexist") is not None


def test_first_working_hardware_encoder_wins() -> None:
    errors = {"h264_broken": "ArgumentError: 22", "h264_works": None}
    choice = choose_video_encoder(("h264_broken", "h264_works"), probe=errors.__getitem__)
    assert (choice.mime_type, choice.codec_name, choice.hardware) == (H264_MIME, "h264_works", True)


def test_applying_a_hardware_choice_installs_it_and_software_uninstalls() -> None:
    hardware = choose_video_encoder((HARDWARE_H264,), probe=lambda name: None)
    installation = apply_encoder_choice(hardware)
    assert installation is not None and installed_h264_encoder() is installation
    assert installation.codec_name == HARDWARE_H264
    assert apply_encoder_choice(choose_video_encoder((), software_mime=VP8_MIME)) is None
    assert installed_h264_encoder() is None


def test_parameter_sets_are_put_before_an_idr_that_lacks_them() -> None:
    keeper = ParameterSetKeeper()
    sps, pps, idr, p = b"\x67sps", b"\x68pps", b"\x65idr", b"\x41p"
    assert keeper.complete([sps, pps, idr]) == [sps, pps, idr]
    assert keeper.complete([p]) == [p]
    assert keeper.complete([idr]) == [sps, pps, idr]
    assert keeper.complete([pps, idr]) == [sps, pps, idr]


def decode_types(payload_lists: list[list[bytes]]) -> list[list[int]]:
    """NAL types per encoded frame, from aiortc's own depayloader."""
    from aiortc.codecs.h264 import h264_depayload

    frames = []
    for payloads in payload_lists:
        data = b"".join(h264_depayload(p) for p in payloads)
        frames.append([nal_type(n) for n in H264Encoder._split_bitstream(data)])
    return frames


def test_every_key_frame_carries_sps_pps_even_when_the_encoder_sends_them_out_of_band() -> None:
    # "+global_header" makes libx264 behave like a hardware encoder: SPS/PPS in
    # extradata only.  Our encoder must put them back before each IDR.
    encoder = PyAVH264Encoder("libx264", {"flags": "+global_header", **FAST_X264})
    encoded = [encoder.encode(video_frame(i), force_keyframe=i in (5, 9))[0] for i in range(12)]
    types = decode_types(encoded)
    keyframes = [i for i, t in enumerate(types) if NAL_IDR in t]
    assert keyframes == [0, 5, 9]
    for i in keyframes:
        assert types[i].index(NAL_SPS) < types[i].index(NAL_PPS) < types[i].index(NAL_IDR)
    # And a decoder that joins at the forced key frame can decode from there.
    from aiortc.codecs.h264 import h264_depayload

    decoder = av.CodecContext.create("h264", "r")
    pictures = []
    for payloads in encoded[5:]:
        pictures += decoder.decode(av.Packet(b"".join(h264_depayload(p) for p in payloads)))
    pictures += decoder.decode(None)
    assert len(pictures) == 7


def test_encoder_reopens_for_a_new_size_not_for_small_bitrate_moves() -> None:
    encoder = PyAVH264Encoder("libx264", FAST_X264)
    encoder.encode(video_frame(0))
    first = encoder._ctx
    encoder.target_bitrate = int(encoder.target_bitrate * 1.1)
    encoder.encode(video_frame(1))
    assert encoder._ctx is first
    encoder.encode(video_frame(2, size=(320, 240)))
    assert encoder._ctx is not first and encoder._ctx is not None and encoder._ctx.width == 320


def negotiated_video_codec(answer_sdp: str) -> str:
    """The codec an answer puts first on its video line: the one that is sent."""
    video = answer_sdp.split("m=video", 1)[1]
    first_pt = video.split("\r\n", 1)[0].split()[2]  # port, proto, then formats
    return video.split(f"a=rtpmap:{first_pt} ", 1)[1].split("/", 1)[0]


async def call_with_video(
    a: RTCPeerConnection, b: RTCPeerConnection, mime_type: str, frames: int = 15
) -> None:
    """A sends the test pattern to B, preferring ``mime_type``; B must decode it."""
    source = await open_source(lavfi_pattern_spec(320, 240))
    transceiver = a.addTransceiver(source, direction="sendonly")
    prefer_video_codec(transceiver, mime_type)
    received = collect(b)
    await connect(a, b)
    await received.wait_for("video", frames)
    assert negotiated_video_codec(b.localDescription.sdp) == mime_type.split("/")[1]
    source.stop()


async def test_fallback_encoder_runs_in_a_real_call(peers: tuple[RTCPeerConnection, RTCPeerConnection]) -> None:
    choice = choose_video_encoder()
    installation = apply_encoder_choice(choice)
    await call_with_video(*peers, choice.mime_type)
    if not HARDWARE_PRESENT:
        assert installation is None  # aiortc's own libvpx did the work


async def test_plugged_in_h264_encoder_is_the_one_aiortc_runs(
    peers: tuple[RTCPeerConnection, RTCPeerConnection], monkeypatch: pytest.MonkeyPatch
) -> None:
    # If aiortc ever bypassed our hook, its own encoder would run: make that loud.
    def stock_encoder_ran(self: H264Encoder, *args: object, **kwargs: object) -> None:
        raise AssertionError("aiortc's own libx264 encoder ran")

    monkeypatch.setattr(H264Encoder, "_encode_frame", stock_encoder_ran)
    installation = install_h264_encoder("libx264", FAST_X264)
    await call_with_video(*peers, H264_MIME)
    assert [type(e) for e in installation.encoders] == [PyAVH264Encoder]
    assert installation.encoders[0].codec_name == "libx264"
    assert installation.frames_encoded >= 15


async def test_uninstalled_hook_gives_aiortc_its_encoder_back(
    peers: tuple[RTCPeerConnection, RTCPeerConnection],
) -> None:
    installation = install_h264_encoder("libx264", FAST_X264)
    uninstall_h264_encoder()
    await call_with_video(*peers, H264_MIME, frames=5)
    assert installation.encoders == []
