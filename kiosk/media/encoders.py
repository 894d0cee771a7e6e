"""Video encoder selection and the H.264 encoder aiortc runs for us.

aiortc always encodes H.264 with ``libx264``.  A Raspberry Pi 4 has a hardware
encoder (``h264_v4l2m2m``) that costs a fraction of the CPU, so we plug our own
encoder class into aiortc's codec selection.  aiortc resolves the encoder for a
negotiated codec with ``aiortc.codecs.get_encoder``, a name that
``aiortc.rtcrtpsender`` imported into its own namespace; replacing that one
name is the whole hook.  Two things plug into it explicitly:
:func:`install_h264_encoder` (which H.264 encoder runs) and
:func:`install_encoding_at_source` (every video sender's encoder is a
:class:`~kiosk.media.encoding.SenderEncoder`, so our tracks can encode in their
capture thread, see :mod:`kiosk.media.encoding`).

PyAV's wheel *lists* ``h264_v4l2m2m`` on every machine, hardware or not, so the
only honest probe is to open the encoder and encode a real frame.
"""

from __future__ import annotations

import fractions
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import aiortc.codecs
import aiortc.rtcrtpsender
import av
from aiortc.codecs.base import Encoder
from aiortc.codecs.h264 import MAX_FRAME_RATE, H264Encoder
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from av.frame import Frame
from av.video.codeccontext import VideoCodecContext

from .encoding import SenderEncoder
from .h264_rtp import Nal, nal_units, payloads, rtp_timestamp

logger = logging.getLogger(__name__)

HARDWARE_H264 = "h264_v4l2m2m"
H264_MIME = "video/H264"
VP8_MIME = "video/VP8"

# FFmpeg's AV_CODEC_FLAG_GLOBAL_HEADER: an encoder opened with it puts SPS/PPS
# in extradata only.  Used by tests to prove we re-insert them.
GLOBAL_HEADER_FLAG = 1 << 22

# NAL unit types (ITU-T H.264 table 7-1) we care about.
NAL_IDR = 5
NAL_SPS = 7
NAL_PPS = 8

# aiortc's original lookup and key-frame request, kept so every other codec
# still resolves through it and so uninstall can restore them.
_AIORTC_GET_ENCODER = aiortc.codecs.get_encoder
_AIORTC_SEND_KEYFRAME = aiortc.RTCRtpSender._send_keyframe


@dataclass(frozen=True)
class EncoderChoice:
    """Which video encoder this device will use, and why (for diagnostics)."""

    mime_type: str  # what we negotiate: H264_MIME or VP8_MIME
    codec_name: str  # the PyAV codec that actually encodes
    hardware: bool
    reason: str


def probe_encoder(codec_name: str, width: int = 640, height: int = 480) -> str | None:
    """Open ``codec_name`` and encode one real frame.

    Returns ``None`` when the encoder works, otherwise the error text.  A
    hardware encoder may hold the first frame back, so we drain it and demand
    at least one packet: an encoder that opens but never produces output is as
    useless as one that does not open.
    """
    try:
        ctx = av.CodecContext.create(codec_name, "w")
        assert isinstance(ctx, VideoCodecContext)
        ctx.width, ctx.height = width, height
        ctx.pix_fmt = "yuv420p"
        ctx.time_base = fractions.Fraction(1, MAX_FRAME_RATE)
        ctx.framerate = fractions.Fraction(MAX_FRAME_RATE, 1)
        ctx.bit_rate = 1_000_000
        frame = av.VideoFrame(width, height, "yuv420p")
        frame.pts = 0
        packets = list(ctx.encode(frame)) + list(ctx.encode(None))
    except (av.FFmpegError, ValueError, OSError) as exc:
        return f"{type(exc).__name__}: {exc}"
    if not packets:
        return "opened, but produced no output for a frame"
    return None


def choose_video_encoder(
    hardware: Sequence[str] = (HARDWARE_H264,),
    software_mime: str = VP8_MIME,
    probe: Callable[[str], str | None] = probe_encoder,
) -> EncoderChoice:
    """Pick the first hardware H.264 encoder that really works, else software.

    ``software_mime`` picks the fallback: VP8 (aiortc's libvpx, realtime
    settings) or H.264 (aiortc's own libx264).
    """
    failures: list[str] = []
    for name in hardware:
        error = probe(name)
        if error is None:
            logger.info("video encoder: hardware %s", name)
            return EncoderChoice(H264_MIME, name, True, f"{name} encoded a test frame")
        failures.append(f"{name}: {error}")
    codec_name = "libx264" if software_mime == H264_MIME else "libvpx"
    reason = "no working hardware encoder (" + "; ".join(failures) + ")" if failures else (
        "hardware encoding not requested"
    )
    logger.info("video encoder: software %s, %s", codec_name, reason)
    return EncoderChoice(software_mime, codec_name, False, reason)


def nal_type(nal: Nal) -> int:
    return nal[0] & 0x1F if nal else -1


class ParameterSetKeeper:
    """Puts SPS/PPS in front of every IDR access unit that lacks them.

    Browsers joining mid-stream, or recovering after a PLI, can only decode a
    key frame that carries its parameter sets.  libx264 repeats them by itself;
    hardware encoders often emit them once, in extradata.
    """

    def __init__(self) -> None:
        self.sps: bytes | None = None
        self.pps: bytes | None = None

    def remember(self, nals: Iterable[Nal]) -> None:
        for nal in nals:
            if nal_type(nal) == NAL_SPS:
                self.sps = bytes(nal)  # a copy: a view would hold the whole frame's buffer
            elif nal_type(nal) == NAL_PPS:
                self.pps = bytes(nal)

    def complete(self, nals: Sequence[Nal]) -> Sequence[Nal]:
        self.remember(nals)
        types = {nal_type(n) for n in nals}
        if NAL_IDR not in types:
            return nals
        missing: list[Nal] = [
            ps
            for kind, ps in ((NAL_SPS, self.sps), (NAL_PPS, self.pps))
            if kind not in types and ps is not None
        ]
        return [*missing, *nals]


class PyAVH264Encoder(H264Encoder):
    """aiortc's H.264 encoder, but encoding with any PyAV H.264 codec.

    We keep aiortc's bitrate property and ``pack`` and replace the encoding
    step, with plain settings every H.264 encoder accepts: yuv420p, a bitrate,
    a frame rate, and only the options given.  The frame is cut into RTP
    payloads by :mod:`kiosk.media.h264_rtp`: the same payloads as aiortc's
    FU-A/STAP-A packetizer, at a fraction of its cost per frame.
    """

    # A hardware encoder is expensive to reopen, and aiortc's REMB moves the
    # target often; reopen only for a large, lasting change.
    REOPEN_BITRATE_CHANGE = 0.25
    REOPEN_MIN_INTERVAL = 2.0
    GOP_SECONDS = 3  # periodic key frame, a safety net if PLIs are lost

    def __init__(self, codec_name: str, options: dict[str, str] | None = None) -> None:
        super().__init__()
        self.codec_name = codec_name
        self.options = dict(options or {})
        self.frames_encoded = 0
        self._ctx: VideoCodecContext | None = None
        self._opened_at = 0.0
        self._parameter_sets = ParameterSetKeeper()

    def _needs_reopen(self, frame: av.VideoFrame) -> bool:
        ctx = self._ctx
        if ctx is None:
            return True
        if (frame.width, frame.height) != (ctx.width, ctx.height):
            return True
        current = ctx.bit_rate or self.target_bitrate  # set when opened; never None in practice
        change = abs(self.target_bitrate - current) / current
        settled = time.monotonic() - self._opened_at > self.REOPEN_MIN_INTERVAL
        return change > self.REOPEN_BITRATE_CHANGE and settled

    def _open(self, frame: av.VideoFrame) -> VideoCodecContext:
        ctx = av.CodecContext.create(self.codec_name, "w")
        assert isinstance(ctx, VideoCodecContext)
        ctx.width, ctx.height = frame.width, frame.height
        ctx.pix_fmt = "yuv420p"
        ctx.bit_rate = self.target_bitrate
        ctx.framerate = fractions.Fraction(MAX_FRAME_RATE, 1)
        ctx.time_base = fractions.Fraction(1, MAX_FRAME_RATE)
        ctx.gop_size = self.GOP_SECONDS * MAX_FRAME_RATE
        ctx.max_b_frames = 0  # B-frames add latency and browsers' baseline decoders reject them
        if self.options:
            ctx.options = dict(self.options)
        ctx.open()
        if ctx.extradata:
            self._parameter_sets.remember(nal_units(bytes(ctx.extradata)))
        self._opened_at = time.monotonic()
        return ctx

    def encode(self, frame: Frame, force_keyframe: bool = False) -> tuple[list[bytes], int]:
        assert isinstance(frame, av.VideoFrame)
        if self._needs_reopen(frame):
            # A fresh encoder starts with a key frame, so no need to force one.
            self._ctx = self._open(frame)
        if frame.format.name != "yuv420p":
            # MJPEG webcams give yuvj420p, which hardware encoders refuse.
            frame = frame.reformat(format="yuv420p")
        # An encoder must not inherit a capture device's picture type.
        frame.pict_type = (
            av.video.frame.PictureType.I if force_keyframe else av.video.frame.PictureType.NONE
        )
        assert self._ctx is not None
        data = b"".join(self._ctx.encode(frame))  # one copy; the NAL units are views into it
        self.frames_encoded += 1
        nals = self._parameter_sets.complete(nal_units(data))
        # The track stamps every frame it hands out (SwappableTrack._stamp).  Read once: PyAV
        # builds a new Fraction on every read of time_base.
        pts, time_base = frame.pts, frame.time_base
        assert pts is not None and time_base is not None
        return payloads(nals), rtp_timestamp(pts, time_base)


@dataclass
class H264EncoderInstallation:
    """The H.264 encoder aiortc will create from now on, and those it made."""

    codec_name: str
    options: dict[str, str] = field(default_factory=dict)
    encoders: list[PyAVH264Encoder] = field(default_factory=list)

    @property
    def frames_encoded(self) -> int:
        return sum(e.frames_encoded for e in self.encoders)


_installed: H264EncoderInstallation | None = None
_encoding_at_source = False
_install_lock = threading.Lock()


def _get_encoder(codec: RTCRtpCodecParameters) -> Encoder:
    """aiortc's lookup with our hooks: our H.264 encoder, every video encoder a SenderEncoder."""
    installation = _installed
    if installation is not None and codec.mimeType.lower() == H264_MIME.lower():
        h264 = PyAVH264Encoder(installation.codec_name, installation.options)
        installation.encoders.append(h264)
        encoder: Encoder = h264
    else:
        encoder = _AIORTC_GET_ENCODER(codec)
    if _encoding_at_source and codec.mimeType.lower().startswith("video/"):
        return SenderEncoder(encoder)
    return encoder


def _send_keyframe(sender: aiortc.RTCRtpSender) -> None:
    """A PLI/FIR: aiortc forces a key frame only on frames it encodes itself; ours are told too."""
    _AIORTC_SEND_KEYFRAME(sender)
    encoder = getattr(sender, "_RTCRtpSender__encoder", None)  # aiortc keeps it private
    if isinstance(encoder, SenderEncoder):
        encoder.request_keyframe()


def _apply_hooks() -> None:
    """Our lookup while any hook is installed, aiortc's own otherwise. Holds _install_lock."""
    hooked = _installed is not None or _encoding_at_source
    aiortc.rtcrtpsender.get_encoder = _get_encoder if hooked else _AIORTC_GET_ENCODER  # type: ignore[attr-defined]
    aiortc.RTCRtpSender._send_keyframe = _send_keyframe if _encoding_at_source else _AIORTC_SEND_KEYFRAME  # type: ignore[method-assign, assignment]


def install_h264_encoder(
    codec_name: str, options: dict[str, str] | None = None
) -> H264EncoderInstallation:
    """Make every aiortc sender in this process encode H.264 with ``codec_name``.

    All other codecs keep aiortc's own encoders.  Installing again replaces the
    previous installation.  Takes effect for senders that start after the call.
    """
    global _installed
    installation = H264EncoderInstallation(codec_name, dict(options or {}))
    with _install_lock:
        _installed = installation
        _apply_hooks()
    logger.info("H.264 encoding through %s", codec_name)
    return installation


def uninstall_h264_encoder() -> None:
    """Give aiortc back its own H.264 encoder."""
    global _installed
    with _install_lock:
        _installed = None
        _apply_hooks()


def install_encoding_at_source() -> None:
    """Every video sender that starts from now on gets a :class:`SenderEncoder` (idempotent)."""
    global _encoding_at_source
    with _install_lock:
        _encoding_at_source = True
        _apply_hooks()


def uninstall_encoding_at_source() -> None:
    """aiortc encodes every frame in its executor again (tests restore aiortc with it)."""
    global _encoding_at_source
    with _install_lock:
        _encoding_at_source = False
        _apply_hooks()


def installed_h264_encoder() -> H264EncoderInstallation | None:
    return _installed


def apply_encoder_choice(choice: EncoderChoice) -> H264EncoderInstallation | None:
    """Install our encoder when the choice needs one aiortc does not have."""
    if choice.mime_type == H264_MIME and choice.codec_name != "libx264":
        return install_h264_encoder(choice.codec_name)
    uninstall_h264_encoder()
    return None


def prefer_video_codec(transceiver: aiortc.RTCRtpTransceiver, mime_type: str) -> None:
    """Offer/answer ``mime_type`` first on this video transceiver.

    Other codecs stay on the list (after it) so a peer that cannot do our
    preferred codec still gets video.  Call before createOffer/createAnswer.
    """
    caps = aiortc.RTCRtpSender.getCapabilities("video")
    wanted = mime_type.lower()
    first = [c for c in caps.codecs if c.mimeType.lower() == wanted]
    rest = [c for c in caps.codecs if c.mimeType.lower() != wanted]
    transceiver.setCodecPreferences(first + rest)
