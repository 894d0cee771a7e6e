"""Our one-pass H.264 packetiser gives exactly aiortc's payloads, and a receiver gets the units back."""

from __future__ import annotations

from fractions import Fraction

from aiortc.codecs.h264 import PACKET_MAX, H264Encoder, H264PayloadDescriptor
from aiortc.mediastreams import VIDEO_TIME_BASE, convert_timebase
from hypothesis import given, settings
from hypothesis import strategies as st

from kiosk.media.h264_rtp import nal_units, payloads, rtp_timestamp


def _without_start_codes(body: bytes) -> bytes:
    """An encoder's NAL body never holds 00 00 00/01/02 (emulation prevention) nor ends in a zero."""
    while b"\x00\x00" in body:
        body = body.replace(b"\x00\x00", b"\x00\x03")
    return body[:-1] + b"\x01" if body.endswith(b"\x00") else body


# Body sizes around every boundary: single packets, STAP-A fill (PACKET_MAX - 3), FU-A counts;
# at least one byte, as a receiver (aiortc's depacketiser) rejects a bare header.
sizes = st.one_of(st.integers(1, 40), st.integers(PACKET_MAX - 40, PACKET_MAX + 40), st.integers(1, 4 * PACKET_MAX))
nal = st.builds(
    lambda header, body: bytes([header]) + _without_start_codes(body),
    st.integers(1, 0xFF).filter(lambda h: 1 <= h & 0x1F <= 23),
    sizes.flatmap(lambda n: st.binary(min_size=n, max_size=n)),
)
access_unit = st.lists(nal, min_size=1, max_size=14)
start_code = st.sampled_from([b"\x00\x00\x01", b"\x00\x00\x00\x01"])


@settings(max_examples=100, deadline=None)
@given(access_unit, st.data())
def test_the_same_payloads_as_aiortc(nals: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(data.draw(start_code) + n for n in nals)
    assert [bytes(u) for u in nal_units(stream)] == nals
    expected = H264Encoder._packetize(H264Encoder._split_bitstream(stream))
    assert payloads(nal_units(stream)) == expected
    assert all(len(p) <= PACKET_MAX for p in expected)
    # And what a receiver makes of them is the stream again (with 4-byte start codes).
    received = b"".join(H264PayloadDescriptor.parse(p)[1] for p in expected)
    assert received == b"".join(b"\x00\x00\x00\x01" + n for n in nals)


def test_no_units_in_a_stream_without_start_codes_or_between_two_in_a_row() -> None:
    assert nal_units(b"") == []
    assert nal_units(b"\x65\x88") == []
    assert [bytes(u) for u in nal_units(b"\x00\x00\x01\x00\x00\x01\x67\x42")] == [b"\x67\x42"]


time_bases = st.sampled_from([VIDEO_TIME_BASE, Fraction(1, 30), Fraction(1, 1000), Fraction(1001, 30000)])


@given(st.integers(0, 2**40), time_bases)
def test_rtp_timestamp_as_aiortc_converts_it(pts: int, time_base: Fraction) -> None:
    assert rtp_timestamp(pts, time_base) == convert_timebase(pts, time_base, VIDEO_TIME_BASE)


def test_at_most_nine_units_share_a_stap_a() -> None:
    """Many small units (slices of a tiny frame): aiortc's bound of nine to a packet, kept."""
    nals = [bytes([0x41, i + 1, 0x80]) for i in range(12)]
    stream = b"".join(b"\x00\x00\x00\x01" + n for n in nals)
    sent = payloads(nal_units(stream))
    assert sent == H264Encoder._packetize(H264Encoder._split_bitstream(stream))
    assert len(sent) == 2 and sent[0][0] & 0x1F == 24 and len(sent[0]) == 1 + 9 * (2 + 3)
