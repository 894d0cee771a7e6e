"""Video encoded in the capture thread; aiortc's sender only packs it into RTP.

aiortc's sender encodes each frame in an executor thread: a camera frame goes
from the capture thread to the event loop, on to an executor thread and back
to the loop before it is packed.  Those hand-overs cost a fifth to a half of
the encoder's own CPU on a loaded machine (``bench/media_cpu.py``), which on a
Raspberry Pi decides whether a call holds.  aiortc also takes anything that is
not a ``Frame`` from a track (an ``av.Packet``, as typed) and only packs it
with the sender's encoder, so the call's video track
(:class:`~kiosk.media.swappable.SwappableTrack`) encodes each camera frame in
the capture thread that read it and hands the sender the result: an
:class:`EncodedFrame` itself, not wrapped in an ``av.Packet`` (a packet's
``opaque`` goes through PyAV's global registry and back: an insert in the
capture thread, a lookup and a pop on the loop, every frame).

One encoder per video sender, :class:`SenderEncoder`, made by aiortc through
our hook (:func:`kiosk.media.encoders.install_encoding_at_source`), so key-frame
requests (PLI/FIR) and bitrate changes (REMB, our loss-based cap) reach it as
they reach aiortc's own.  It wraps the encoder aiortc would have run (VP8, or
our H.264) and is used from two places:

- ``encode`` — aiortc's own call, for a frame the track handed out as a frame:
  the first one of a call (that is how the track learns its sender's encoder:
  the frame carries an :class:`EncoderSlot`) and the calm filler picture;
- ``encode_at_source`` — in the capture thread, for camera frames; the sender
  then calls ``pack``.

Every encoded frame refers to the one before it, so the receiver can decode
only an unbroken chain.  Frames encoded in the capture thread may be dropped on
the way (a stale one after a swap or a mute, a full queue); ``pack`` numbers
them and sends only the next in the chain, and on a gap asks for a key frame,
which starts a new chain.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import av
from aiortc.codecs.base import Encoder
from av.frame import Frame
from av.packet import Packet


class EncoderSlot:
    """Where a track learns which encoder sends it: the sender's, once it has seen our frame."""

    def __init__(self) -> None:
        self.encoder: SenderEncoder | None = None


@dataclass(frozen=True, slots=True)
class EncodedFrame:
    """One frame as the sender will send it: what the track hands aiortc's sender in its place."""

    payloads: list[bytes]  # RTP payloads, packetised already
    timestamp: int  # RTP timestamp, 90 kHz
    number: int  # position in the encoder's chain, 1, 2, ...
    keyframe: bool  # forced key frame: starts a new chain
    picture: av.VideoFrame  # what was encoded (the self-view shows it)


def picture_of(item: Frame | Packet[Any] | EncodedFrame) -> av.VideoFrame | None:
    """The picture a track handed out, whether as a frame or encoded."""
    if isinstance(item, av.VideoFrame):
        return item
    return item.picture if isinstance(item, EncodedFrame) else None


class SenderEncoder(Encoder):
    """A video sender's encoder, usable from the capture thread and aiortc's executor alike."""

    def __init__(self, inner: Encoder) -> None:
        self.inner = inner
        self._lock = threading.Lock()  # one encode at a time: the capture thread and aiortc's overlap at a swap
        self._numbering = threading.Lock()  # held only for a moment: a PLI must not wait for an encode
        self._keyframe_requested = False
        self._encoded = 0  # number of the last frame begun
        self._sent = 0  # number of the last frame handed to the sender
        self._last_keyframe = 0  # number of the last forced key frame
        self.frames_at_source = 0
        self.keyframes_forced = 0
        self.frames_discarded = 0

    @property
    def target_bitrate(self) -> int:
        return int(getattr(self.inner, "target_bitrate", 0))

    @target_bitrate.setter
    def target_bitrate(self, bitrate: int) -> None:
        # Read by the inner encoder at its next frame, in whichever thread that runs.
        self.inner.target_bitrate = bitrate  # type: ignore[attr-defined]

    @property
    def frames_encoded(self) -> int:
        return self._encoded

    def request_keyframe(self) -> int:
        """A PLI or FIR arrived, or a frame was lost on our side: the next frame is a key frame.

        Returns its number."""
        with self._numbering:
            self._keyframe_requested = True
            return self._encoded + 1

    def _encode(self, frame: Frame, force_keyframe: bool) -> EncodedFrame:
        assert isinstance(frame, av.VideoFrame)
        with self._lock:
            with self._numbering:
                keyframe = force_keyframe or self._keyframe_requested
                self._keyframe_requested = False
                self._encoded += 1
                number = self._encoded
                if keyframe:
                    self._last_keyframe = number
                    self.keyframes_forced += 1
            payloads, timestamp = self.inner.encode(frame, keyframe)
            return EncodedFrame(payloads, timestamp, number, keyframe, frame)

    def encode(self, frame: Frame, force_keyframe: bool = False) -> tuple[list[bytes], int]:
        slot = getattr(frame, "opaque", None)
        if isinstance(slot, EncoderSlot):
            slot.encoder = self  # from now on the track encodes in its capture thread
        encoded = self._encode(frame, force_keyframe)
        self._sent = encoded.number  # aiortc sends what it encodes at once
        return encoded.payloads, encoded.timestamp

    def encode_at_source(self, frame: av.VideoFrame) -> EncodedFrame:
        """Encode in the calling (capture) thread; the track hands the result to the sender."""
        encoded = self._encode(frame, False)
        self.frames_at_source += 1
        return encoded

    def pack(self, packet: Packet[Any] | EncodedFrame) -> tuple[list[bytes], int]:
        if not isinstance(packet, EncodedFrame):
            return self.inner.pack(packet)
        encoded = packet
        follows = encoded.number == self._sent + 1 or (encoded.keyframe and encoded.number > self._sent)
        if not follows:
            # A frame in between never reached the sender: this one cannot be decoded.
            self.frames_discarded += 1
            if self._last_keyframe <= encoded.number:  # else one is on its way
                self.request_keyframe()
            return [], 0
        self._sent = encoded.number
        return encoded.payloads, encoded.timestamp
