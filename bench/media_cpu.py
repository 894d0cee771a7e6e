"""CPU per frame of our send path against a bare PyAV encode; memory in a call.

Run from the repository root:

    python bench/media_cpu.py [--frames 300] [--rounds 3]

CPU: process CPU time (all threads: capture thread, encoder executor, event
loop) per frame, 640x480, for

- ours: ``CaptureTrack`` (lavfi testsrc2) → ``SwappableTrack`` → what
  aiortc's ``RTCRtpSender._next_encoded_frame`` does with what the track hands
  it, with the encoder our hook gives the sender (a ``SenderEncoder``): a frame
  is encoded in an executor thread, an encoded frame (the track encodes in the
  capture thread once it knows the encoder, kiosk/media/encoding.py) is only
  packed → ``RtpPacket`` built and serialised with header extensions;
- bare: PyAV reads the same lavfi source and encodes every frame with
  ``CodecContext.encode`` on a context opened by the same encoder class (so
  the codec and every setting are the same), as fast as it can.

Both are run twice: paced (frames arrive at 30 fps, as from a camera: the
case the target is about) and unpaced (as fast as possible).  Rounds
alternate ours/bare so a neighbour's load hits both; the ratio is
median(ours) / median(bare).

Memory: a child process (so this benchmark's own garbage does not count)
reports its resident set before any call, and while holding a two-way
640x480 video + audio call between two in-process peers on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import fractions
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import av
from aiortc import clock, rtp
from aiortc.codecs import HEADER_EXTENSIONS
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.rtcrtpparameters import RTCRtpParameters
from av.video.codeccontext import VideoCodecContext

from kiosk.media.encoders import PyAVH264Encoder
from kiosk.media.encoding import SenderEncoder
from kiosk.media.sources import CaptureTrack, SourceSpec, lavfi_pattern_spec, open_source
from kiosk.media.swappable import SwappableTrack

WIDTH, HEIGHT, FPS = 640, 480, 30
WARMUP = 10  # encoder open and first key frame are not the steady state
# The software H.264 we would run: aiortc's own libx264 settings are not
# "bare"-comparable (they set a profile), so we bench our plug-in encoder.
X264_OPTIONS = {"tune": "zerolatency", "preset": "ultrafast"}


@dataclass
class Codec:
    name: str
    make_encoder: Callable[[], Any]

    @staticmethod
    def context_of(encoder: Any) -> VideoCodecContext:
        if isinstance(encoder, SenderEncoder):
            encoder = encoder.inner
        return encoder.codec if isinstance(encoder, Vp8Encoder) else encoder._ctx


CODECS = {
    "vp8": Codec("VP8 (aiortc libvpx, our fallback)", Vp8Encoder),
    "h264": Codec("H.264 (our PyAVH264Encoder, libx264)", lambda: PyAVH264Encoder("libx264", X264_OPTIONS)),
}


def header_extensions() -> rtp.HeaderExtensionsMap:
    extensions = rtp.HeaderExtensionsMap()
    extensions.configure(RTCRtpParameters(headerExtensions=HEADER_EXTENSIONS["video"]))
    return extensions


def source(frames: int, paced: bool) -> SourceSpec:
    """testsrc2 that ends after the frames we need, so no thread runs on unseen."""
    spec = lavfi_pattern_spec(WIDTH, HEIGHT, FPS)
    url = f"{spec.url}:duration={(WARMUP + frames + 1) / FPS}"
    return dataclasses.replace(spec, url=url, paced=paced)


async def ours(codec: Codec, frames: int, paced: bool) -> tuple[float, dict[str, Any]]:
    """CPU seconds per frame through our capture → encode → RTP path."""
    loop = asyncio.get_running_loop()
    # Unpaced, the source runs ahead of the encoder: queue every frame rather
    # than drop any, so both paths encode exactly the same frames.
    capture = CaptureTrack(source(frames, paced), max_queued=None if paced else WARMUP + frames + 2)
    await capture.start()
    track = SwappableTrack("video", capture)
    encoder = SenderEncoder(codec.make_encoder())  # what our hook makes aiortc's sender use
    extensions = header_extensions()
    sequence = 0
    packets = 0
    started = loop_started = 0.0
    for i in range(WARMUP + frames):
        if i == WARMUP:
            started, loop_started = time.process_time(), time.thread_time()
        item = await track.recv()
        if isinstance(item, av.frame.Frame):  # as RTCRtpSender._next_encoded_frame
            payloads, timestamp = await loop.run_in_executor(None, encoder.encode, item, False)
        else:
            payloads, timestamp = encoder.pack(item)
        for n, payload in enumerate(payloads):
            packet = rtp.RtpPacket(payload_type=97, sequence_number=sequence, timestamp=timestamp)
            packet.ssrc = 1234
            packet.payload = payload
            packet.marker = int(n == len(payloads) - 1)
            packet.extensions.abs_send_time = (clock.current_ntp_time() >> 14) & 0x00FFFFFF
            packet.extensions.mid = "0"
            packet.serialize(extensions)
            sequence = (sequence + 1) & 0xFFFF
            packets += i >= WARMUP
    cpu = time.process_time() - started
    loop_cpu = time.thread_time() - loop_started
    track.stop()
    capture.stop()
    ctx = Codec.context_of(encoder)
    return cpu / frames, {
        "rtp_packets": packets,
        "bit_rate": ctx.bit_rate,
        "threads": ctx.thread_count,
        "dropped": WARMUP + frames - track.frames_from_source,
        "at_source": encoder.frames_at_source,
        "loop_ms": 1000 * loop_cpu / frames,
    }


def bare(codec: Codec, frames: int, paced: bool) -> float:
    """CPU seconds per frame: PyAV reads the same source and encodes, nothing else.

    The codec context is opened by the same encoder class during warm-up, so
    its settings are ours exactly (PyAV cannot report the options a context
    was opened with); after that we call PyAV's ``encode`` directly.  Paced,
    each frame is encoded at its 30 fps slot, as a camera would deliver it.
    """
    encoder = codec.make_encoder()
    spec = source(frames, paced)
    container = av.open(spec.url, format=spec.format)
    time_base = fractions.Fraction(1, 90000)
    started = 0.0
    ctx = None
    begin = time.monotonic()
    for i, frame in enumerate(container.decode(video=0)):
        if paced:
            time.sleep(max(0.0, begin + i / FPS - time.monotonic()))
        frame.pts = i * 90000 // FPS  # what our track stamps, at 30 fps
        frame.time_base = time_base
        if i < WARMUP:
            encoder.encode(frame)
            continue
        if i == WARMUP:
            ctx = Codec.context_of(encoder)
            started = time.process_time()
        if i == WARMUP + frames:
            break
        frame.pict_type = av.video.frame.PictureType.NONE
        for packet in ctx.encode(frame):
            bytes(packet)
    cpu = time.process_time() - started
    container.close()
    return cpu / frames


def source_only(frames: int) -> float:
    """CPU seconds per frame just to generate testsrc2: part of both paths."""
    spec = lavfi_pattern_spec(WIDTH, HEIGHT, FPS)
    container = av.open(spec.url, format=spec.format)
    started = time.process_time()
    for i, _ in enumerate(container.decode(video=0)):
        if i + 1 == frames:
            break
    cpu = time.process_time() - started
    container.close()
    return cpu / frames


def rss_mb() -> tuple[float, float]:
    """(current, peak) resident set of this process, MB."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


async def hold_call(seconds: float) -> dict[str, float]:
    from aiortc import RTCPeerConnection

    from kiosk.media.loopback import connect, loopback_only, no_public_stun
    from kiosk.media.sources import lavfi_tone_spec
    from kiosk.media.stats import FreezeCounter, MeteredTrack

    idle, _ = rss_mb()
    with loopback_only():
        a, b = RTCPeerConnection(no_public_stun()), RTCPeerConnection(no_public_stun())
        counters = []
        drains: list[asyncio.Future[None]] = []
        for pc in (a, b):
            pc.addTrack(SwappableTrack("video", await open_source(lavfi_pattern_spec(WIDTH, HEIGHT, FPS))))
            pc.addTrack(SwappableTrack("audio", await open_source(lavfi_tone_spec())))

            def on_track(track: Any) -> None:
                metered = MeteredTrack(track, FreezeCounter())
                counters.append(metered.counter)

                async def drain() -> None:
                    while True:
                        await metered.recv()

                drains.append(asyncio.ensure_future(drain()))  # referenced, or the loop may drop it

            pc.on("track", on_track)
        await connect(a, b)
        await asyncio.sleep(seconds)
        current, peak = rss_mb()
        frames = sum(c.frames for c in counters)
        await a.close()
        await b.close()
    return {"idle_mb": idle, "call_mb": current, "peak_mb": peak, "frames_received": frames}


def memory(seconds: float) -> dict[str, float]:
    child = subprocess.run(
        [sys.executable, __file__, "--memory-child", str(seconds)],
        capture_output=True, text=True, check=True, timeout=120,
    )
    return json.loads(child.stdout.strip().splitlines()[-1])


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=240)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--codec", choices=sorted(CODECS), action="append")
    parser.add_argument("--call-seconds", type=float, default=8.0)
    parser.add_argument("--memory-child", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child is not None:
        print(json.dumps(await hold_call(args.memory_child)))
        return

    print(f"{WIDTH}x{HEIGHT}, {args.frames} frames per run (+{WARMUP} warm-up), {args.rounds} rounds, "
          f"{os.cpu_count()} CPUs, PyAV {av.__version__}")
    print(f"source only (lavfi testsrc2, in both paths): {1000 * source_only(args.frames):.2f} ms/frame")
    results: dict[str, dict[str, float]] = {}
    for key in args.codec or ["vp8", "h264"]:
        codec = CODECS[key]
        for paced in (True, False):
            ours_runs, bare_runs = [], []
            info: dict[str, Any] = {}
            for _ in range(args.rounds):
                per_frame, info = await ours(codec, args.frames, paced)
                ours_runs.append(per_frame)
                bare_runs.append(bare(codec, args.frames, paced))
            o, b = statistics.median(ours_runs), statistics.median(bare_runs)
            mode = "paced at 30 fps" if paced else "unpaced"
            results[f"{key} {mode}"] = {"ours_ms": 1000 * o, "bare_ms": 1000 * b, "ratio": o / b}
            print(f"{codec.name}, {mode}: ours {1000 * o:.2f} ms/frame, bare PyAV {1000 * b:.2f} ms/frame, "
                  f"ratio {o / b:.2f}  (ours {[round(1000 * x, 2) for x in ours_runs]}, "
                  f"bare {[round(1000 * x, 2) for x in bare_runs]}; {info['rtp_packets']} RTP packets, "
                  f"{info['bit_rate']} bit/s, encoder threads {info['threads']}, {info['dropped']} dropped, "
                  f"{info['at_source']} encoded in the capture thread, event loop {info['loop_ms']:.2f} ms/frame)",
                  flush=True)
    mem = memory(args.call_seconds)
    print(f"memory: {mem['idle_mb']:.0f} MB before the call, {mem['call_mb']:.0f} MB holding a two-way "
          f"640x480 call (peak {mem['peak_mb']:.0f} MB, {mem['frames_received']} video frames received)")


if __name__ == "__main__":
    asyncio.run(main())
