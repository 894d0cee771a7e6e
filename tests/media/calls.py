"""Helpers for tests that run real calls between two in-process peers."""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field

import av
from aiortc import RTCPeerConnection
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from kiosk.media.stats import FreezeCounter, MeteredTrack


@dataclass
class Received:
    """Frames one peer received, per kind, with arrival times."""

    video: list[tuple[float, av.VideoFrame]] = field(default_factory=list)
    audio: list[float] = field(default_factory=list)
    video_frames: FreezeCounter = field(default_factory=FreezeCounter)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def count(self, kind: str) -> int:
        return len(self.video) if kind == "video" else len(self.audio)

    async def wait_for(self, kind: str, n: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.count(kind) < n:
            assert time.monotonic() < deadline, f"only {self.count(kind)} {kind} frames, wanted {n}"
            await asyncio.sleep(0.02)


def collect(pc: RTCPeerConnection, keep_video: bool = True) -> Received:
    """Start consuming every track ``pc`` receives, recording arrivals."""
    received = Received()

    def on_track(track: MediaStreamTrack) -> None:
        if track.kind == "video":
            # Consume video the way the UI will: through the freeze meter.
            track = MeteredTrack(track, received.video_frames)

        async def pump() -> None:
            while True:
                try:
                    frame = await track.recv()
                except MediaStreamError:
                    return
                now = time.monotonic()
                if track.kind == "video":
                    received.video.append((now, frame if keep_video else None))  # type: ignore[arg-type]
                else:
                    received.audio.append(now)

        received.tasks.append(asyncio.ensure_future(pump()))

    pc.on("track", on_track)
    return received


async def next_video(track: MediaStreamTrack) -> av.VideoFrame:
    """The track's next frame, which must be a picture (aiortc types ``recv`` as any media)."""
    frame = await track.recv()
    assert isinstance(frame, av.VideoFrame), frame
    return frame


async def next_audio(track: MediaStreamTrack) -> av.AudioFrame:
    """The track's next frame, which must be sound."""
    frame = await track.recv()
    assert isinstance(frame, av.AudioFrame), frame
    return frame


def luma_spread(frame: av.VideoFrame) -> int:
    """Max minus min of a sample of the Y plane: ~0 for a plain picture."""
    plane = frame.planes[0]
    data = bytes(plane)
    samples = [
        data[y * plane.line_size + x]
        for y in range(8, frame.height - 8, 16)
        for x in range(8, frame.width - 8, 16)
    ]
    return max(samples) - min(samples)


def longest_gap(times: list[float]) -> float:
    return max((b - a for a, b in itertools.pairwise(times)), default=0.0)
