"""RTP payloads of one H.264 access unit (RFC 6184, packetization mode 1), cut in one pass.

aiortc's ``H264Encoder`` packs a frame by joining the encoder's packets, splitting
the Annex B stream into NAL units (a copy each), and packing them through
generators and repeated ``bytes`` concatenation (STAP-A, FU-A).  That runs in the
capture thread for every frame, cold, and was a good part of what our H.264 path
cost beyond the bare encoder (``bench/media_cpu.py``).  Here the NAL units are
views into the encoder's one buffer and each payload is built with one copy.

The payloads are exactly aiortc's (``tests/media/test_h264_rtp.py`` checks that
for random access units), so receivers see no change: a NAL unit over
``PACKET_MAX`` bytes is cut into FU-A fragments of near-equal size, and runs of
small ones (up to 9, as long as they fit) share one STAP-A packet.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction

from aiortc.codecs.h264 import PACKET_MAX
from aiortc.mediastreams import VIDEO_CLOCK_RATE

Nal = bytes | memoryview

START_CODE = b"\x00\x00\x01"
NAL_TYPE_STAP_A = 24
NAL_TYPE_FU_A = 28
FU_A_ROOM = PACKET_MAX - 2  # FU indicator and FU header
STAP_A_ROOM = PACKET_MAX - 1  # STAP-A NAL header; each unit adds its 2-byte length
STAP_A_MOST_UNITS = 9  # aiortc's bound: a receiver's depacketiser need not grow for us
F_BIT, NRI_BITS, TYPE_BITS = 0x80, 0x60, 0x1F


def nal_units(stream: bytes) -> list[memoryview]:
    """The NAL units of an Annex B byte stream, as views into it (start codes left out)."""
    view = memoryview(stream)
    units: list[memoryview] = []
    start = stream.find(START_CODE)
    while start != -1:
        start += len(START_CODE)
        end = stream.find(START_CODE, start)
        # A 4-byte start code's leading zero belongs to it, not to the unit before.
        stop = len(stream) if end == -1 else end - 1 if stream[end - 1] == 0 else end
        if stop > start:  # two start codes in a row hold no unit
            units.append(view[start:stop])
        start = end
    return units


def fu_a(nal: Nal) -> list[bytes]:
    """A NAL unit too big for one packet, as FU-A fragments; the first ones get the odd bytes."""
    body = len(nal) - 1
    count = -(-body // FU_A_ROOM)
    size, larger = divmod(body, count)
    indicator = nal[0] & (F_BIT | NRI_BITS) | NAL_TYPE_FU_A
    kind = nal[0] & TYPE_BITS
    fragments = []
    offset = 1
    for i in range(count):
        end = offset + size + (i < larger)
        flags = 0x80 if i == 0 else 0x40 if i == count - 1 else 0
        fragments.append(bytes((indicator, kind | flags)) + nal[offset:end])
        offset = end
    return fragments


def stap_a(nals: Sequence[Nal]) -> bytes:
    """Several small NAL units as one STAP-A packet: F set if any has it, the highest NRI."""
    forbidden = nri = 0
    parts: list[Nal] = [b""]
    for nal in nals:
        forbidden |= nal[0] & F_BIT
        nri = max(nri, nal[0] & NRI_BITS)
        parts += (len(nal).to_bytes(2, "big"), nal)
    parts[0] = bytes((forbidden | nri | NAL_TYPE_STAP_A,))
    return b"".join(parts)


def payloads(nals: Sequence[Nal]) -> list[bytes]:
    """The RTP payloads of one access unit's NAL units, in order."""
    out: list[bytes] = []
    i, count = 0, len(nals)
    while i < count:
        if len(nals[i]) > PACKET_MAX:
            out += fu_a(nals[i])
            i += 1
            continue
        room, end = STAP_A_ROOM, i
        while end < count and end - i < STAP_A_MOST_UNITS and len(nals[end]) + 2 <= room:
            room -= len(nals[end]) + 2
            end += 1
        if end - i > 1:
            out.append(stap_a(nals[i:end]))
            i = end
        else:  # alone, or the next does not fit beside it: a single NAL unit packet
            out.append(bytes(nals[i]))
            i += 1
    return out


def rtp_timestamp(pts: int, time_base: Fraction) -> int:
    """``pts`` on the 90 kHz RTP clock, in integers (aiortc's ``convert_timebase`` does it in
    Fractions, ~20 µs a frame); the track already stamps in 90 kHz, so mostly ``pts`` itself."""
    if time_base.numerator == 1 and time_base.denominator == VIDEO_CLOCK_RATE:
        return pts
    return pts * time_base.numerator * VIDEO_CLOCK_RATE // time_base.denominator
