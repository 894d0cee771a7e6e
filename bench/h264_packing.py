"""CPU per frame of cutting H.264 into RTP payloads: aiortc's way against ours.

Run from the repository root:

    python bench/h264_packing.py [--frames 300] [--repeats 20]

Encodes ``--frames`` frames of lavfi testsrc2 (640x480, libx264 as
``bench/media_cpu.py`` runs it) once, then times, over all of them and
``--repeats`` times in turn, what happens to each frame after the encoder:

- aiortc: ``b"".join(bytes(p) ...)``, ``H264Encoder._split_bitstream``, our
  ``ParameterSetKeeper``, ``convert_timebase`` and ``H264Encoder._packetize``
  (what ``PyAVH264Encoder.encode`` did before);
- ours: ``b"".join(packets)``, :func:`kiosk.media.h264_rtp.nal_units`, the same
  keeper, :func:`~kiosk.media.h264_rtp.rtp_timestamp` and
  :func:`~kiosk.media.h264_rtp.payloads`;

and the hand-over of an encoded frame to the sender: in an ``av.Packet``'s
``opaque`` (set, read back, freed) against the object itself.  Warm caches:
this is the work, not the cold-cache cost it has in a paced call
(``bench/media_cpu.py`` measures that).
"""

from __future__ import annotations

import argparse
import fractions
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import av
from aiortc.codecs.h264 import H264Encoder
from aiortc.mediastreams import VIDEO_TIME_BASE, convert_timebase

from kiosk.media.encoders import ParameterSetKeeper, PyAVH264Encoder
from kiosk.media.h264_rtp import nal_units, payloads, rtp_timestamp

X264_OPTIONS = {"tune": "zerolatency", "preset": "ultrafast"}  # as bench/media_cpu.py


def encoded_frames(count: int) -> list[tuple[list[av.Packet[Any]], av.VideoFrame]]:
    encoder = PyAVH264Encoder("libx264", X264_OPTIONS)
    container = av.open("testsrc2=size=640x480:rate=30", format="lavfi")
    out = []
    for i, frame in enumerate(container.decode(video=0)):
        if i == count + 1:
            break
        frame.pts, frame.time_base = i * 3000, fractions.Fraction(1, 90000)
        if i == 0:
            encoder.encode(frame)  # opens the context
            continue
        assert encoder._ctx is not None
        out.append((list(encoder._ctx.encode(frame)), frame))
    container.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    frames = encoded_frames(args.frames)
    keeper = ParameterSetKeeper()

    def aiortc_way() -> None:
        for packets, frame in frames:
            data = b"".join(bytes(p) for p in packets)
            nals = keeper.complete(list(H264Encoder._split_bitstream(data)))
            convert_timebase(frame.pts, frame.time_base, VIDEO_TIME_BASE)  # type: ignore[arg-type]  # set above
            H264Encoder._packetize(nals)  # type: ignore[arg-type]  # any bytes-like: it slices and joins

    def our_way() -> None:
        for packets, frame in frames:
            nals = keeper.complete(nal_units(b"".join(packets)))
            rtp_timestamp(frame.pts, frame.time_base)  # type: ignore[arg-type]
            payloads(nals)

    def in_a_packet() -> None:
        for packets, _ in frames:
            packet = av.Packet()
            packet.opaque = packets
            assert packet.opaque is packets
            del packet

    def as_itself() -> None:
        for packets, _ in frames:
            item: object = packets
            assert isinstance(item, list)

    ways: list[tuple[str, Callable[[], None]]] = [
        ("packing, aiortc's", aiortc_way), ("packing, ours", our_way),
        ("hand-over in av.Packet.opaque", in_a_packet), ("hand-over as itself", as_itself),
    ]
    times: dict[str, list[float]] = {name: [] for name, _ in ways}
    for _ in range(args.repeats):  # in turn, so drift of the machine's speed hits each alike
        for name, way in ways:
            started = time.process_time()
            way()
            times[name].append((time.process_time() - started) / len(frames))
    print(f"{len(frames)} frames of libx264 640x480, {args.repeats} repeats; median (min-max) µs/frame")
    for name, values in times.items():
        print(f"  {name}: {1e6 * statistics.median(values):.1f} ({1e6 * min(values):.1f}-{1e6 * max(values):.1f})")


if __name__ == "__main__":
    main()
