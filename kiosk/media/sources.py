"""Capture sources: camera (V4L2), microphone (ALSA) and lavfi test sources.

Each source is opened with PyAV and exposed as an aiortc ``MediaStreamTrack``
(:class:`CaptureTrack`).  Reading a device blocks, so each track reads in its
own thread and hands frames to the event loop; the loop never waits on a
device.  A live source must never build up latency: when the consumer falls
behind, the oldest frames are dropped, not queued.

Test sources (``testsrc2`` and a sine tone) are generated far faster than real
time, so they are paced to the wall clock here, like a camera would be.

A video track may be given a ``stage``: a step its reader thread runs on each
frame before handing it over; the call's track uses it to encode the frame
right there (:mod:`kiosk.media.encoding`).
"""

from __future__ import annotations

import asyncio
import collections
import fcntl
import fractions
import logging
import os
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeAlias

import av
import av.container
from aiortc.mediastreams import AUDIO_PTIME, MediaStreamError, MediaStreamTrack
from av.frame import Frame
from av.packet import Packet

from .encoding import EncodedFrame

logger = logging.getLogger(__name__)

Kind = Literal["audio", "video"]
#: What a track hands out: a frame, or a frame already encoded (aiortc's sender packs
#: anything that is not a ``Frame``: ours are :class:`EncodedFrame`, not ``av.Packet``).
Item: TypeAlias = "Frame | Packet[Any] | EncodedFrame"
#: A step the reader thread runs on each video frame: what to hand out instead (None: nothing).
Stage: TypeAlias = "Callable[[av.VideoFrame], Item | None]"

AUDIO_RATE = 48000  # what Opus runs at, so aiortc does not resample again
AUDIO_SAMPLES = int(AUDIO_RATE * AUDIO_PTIME)  # 20 ms frames, what aiortc sends
AUDIO_TIME_BASE = fractions.Fraction(1, AUDIO_RATE)

#: PyAV's wheel carries its own libasound, built to read its configuration from
#: its build prefix; without the system's even "default" or "plughw:1,0" are
#: unknown names ("Unknown PCM default"). The system's is the same for Debian's own.
SYSTEM_ALSA_CONFIG = Path("/usr/share/alsa/alsa.conf")


@dataclass(frozen=True)
class SourceSpec:
    """Everything needed to open one capture source with PyAV."""

    kind: Kind
    url: str
    format: str
    options: dict[str, str] = field(default_factory=dict)
    # Synthetic sources run faster than real time and must be paced.
    paced: bool = False
    label: str = ""

    def describe(self) -> str:
        return self.label or f"{self.format}:{self.url}"


def camera_spec(device: str, width: int = 640, height: int = 480, fps: int = 30) -> SourceSpec:
    return SourceSpec(
        kind="video",
        url=device,
        format="v4l2",
        options={"video_size": f"{width}x{height}", "framerate": str(fps)},
        label=f"camera {device}",
    )


def microphone_spec(device: str = "default") -> SourceSpec:
    """``device`` is an ALSA name: ``default``, or ``plughw:CARD,DEV``."""
    return SourceSpec(kind="audio", url=device, format="alsa", label=f"microphone {device}")


def lavfi_pattern_spec(width: int = 640, height: int = 480, fps: int = 30) -> SourceSpec:
    return SourceSpec(
        kind="video",
        url=f"testsrc2=size={width}x{height}:rate={fps}",
        format="lavfi",
        paced=True,
        label="test pattern",
    )


def lavfi_tone_spec(frequency: int = 440) -> SourceSpec:
    return SourceSpec(
        kind="audio",
        url=f"sine=frequency={frequency}:sample_rate={AUDIO_RATE}",
        format="lavfi",
        paced=True,
        label="test tone",
    )


def use_system_alsa_config() -> None:
    """Point PyAV's own libasound at the system's ALSA configuration (unless one is set).

    Called before every ALSA open (:meth:`CaptureTrack.start`): libasound reads
    the variable when it first loads its configuration."""
    if "ALSA_CONFIG_PATH" not in os.environ and SYSTEM_ALSA_CONFIG.exists():
        os.environ["ALSA_CONFIG_PATH"] = str(SYSTEM_ALSA_CONFIG)


# --- which /dev/video* nodes are cameras -------------------------------------
# A Raspberry Pi has a dozen /dev/video* nodes that are codecs and ISPs, and a
# UVC webcam has a second, metadata-only node.  Only a node whose device caps
# say "video capture" (and not memory-to-memory) is a camera.
V4L2_CAP_VIDEO_CAPTURE = 0x00000001
V4L2_CAP_VIDEO_CAPTURE_MPLANE = 0x00001000
V4L2_CAP_VIDEO_M2M = 0x00008000
V4L2_CAP_VIDEO_M2M_MPLANE = 0x00004000
V4L2_CAP_DEVICE_CAPS = 0x80000000
_V4L2_CAPABILITY = struct.Struct("16s32s32sIII12x")
VIDIOC_QUERYCAP = 0x80685600  # _IOR('V', 0, struct v4l2_capability)


def is_capture_device(capabilities: int, device_caps: int) -> bool:
    caps = device_caps if capabilities & V4L2_CAP_DEVICE_CAPS else capabilities
    capture = caps & (V4L2_CAP_VIDEO_CAPTURE | V4L2_CAP_VIDEO_CAPTURE_MPLANE)
    m2m = caps & (V4L2_CAP_VIDEO_M2M | V4L2_CAP_VIDEO_M2M_MPLANE)
    return bool(capture) and not m2m


def query_capture_device(node: str) -> bool:
    """Ask the driver (VIDIOC_QUERYCAP) whether ``node`` captures video."""
    try:
        fd = os.open(node, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        buf = bytearray(_V4L2_CAPABILITY.size)
        fcntl.ioctl(fd, VIDIOC_QUERYCAP, buf)
    except OSError:
        return False
    finally:
        os.close(fd)
    _, _, _, _, capabilities, device_caps = _V4L2_CAPABILITY.unpack(buf)
    return is_capture_device(capabilities, device_caps)


# --- the track ---------------------------------------------------------------


class CaptureTrack(MediaStreamTrack):
    """One PyAV capture source as an aiortc track.

    Call :meth:`start` (it opens the device, off the event loop, and raises if
    that fails); then ``recv()`` returns frames until the source ends, e.g. the
    camera is unplugged, after which it raises ``MediaStreamError``.

    Video frames come out as yuv420p (or as whatever :attr:`stage` makes of
    them); audio as 20 ms s16 stereo 48 kHz frames with continuous timestamps,
    which is what aiortc's encoders expect.
    """

    def __init__(self, spec: SourceSpec, max_queued: int | None = None) -> None:
        super().__init__()
        self.kind = spec.kind
        self.spec = spec
        # Video: keep 2 frames (latest wins). Audio: up to 200 ms, since a gap
        # is more audible than a small delay.
        self._max_queued = max_queued or (2 if spec.kind == "video" else 10)
        self._queue: collections.deque[Item | None] = collections.deque()  # None: the source ended
        self._waiter: asyncio.Future[Item] | None = None  # a consumer waiting for the next item
        self._container: av.container.InputContainer | None = None
        self._thread: threading.Thread | None = None
        self._quit = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.frames_read = 0
        self.error: str | None = None
        #: Run by the reader thread on each video frame (set and cleared by the consumer).
        self.stage: Stage | None = None

    async def start(self) -> CaptureTrack:
        if self._thread is not None:
            return self
        self._loop = asyncio.get_running_loop()
        spec = self.spec
        if spec.format == "alsa":
            use_system_alsa_config()
        self._container = await self._loop.run_in_executor(
            None,
            lambda: av.open(spec.url, format=spec.format, mode="r", options=dict(spec.options)),
        )
        self._thread = threading.Thread(
            target=self._run, name=f"capture-{spec.kind}", daemon=True
        )
        self._thread.start()
        return self

    async def recv(self) -> Item:  # type: ignore[override]  # an EncodedFrame too, see Item
        return await self.next_item()

    def next_item(self) -> asyncio.Future[Item]:
        """The next frame as a plain future, fulfilled straight from the reader thread's hand-over.

        Cheaper than a task around :meth:`recv` (a call's video track waits on
        this 30 times a second); it fails with ``MediaStreamError`` once the
        source has ended.  Cancelling it loses nothing.  Like a task, it is
        never done at once: whoever waits on it lets the loop run other work
        (hotplug's reaction to a source that ended, say) before it goes on.
        """
        loop = self._loop
        assert loop is not None, "start() first"
        future: asyncio.Future[Item] = loop.create_future()
        if self.readyState != "live":
            loop.call_soon(self._fulfil, future, None)
        elif self._queue:
            loop.call_soon(self._fulfil, future, self._queue.popleft())
        else:
            self._waiter = future
        return future

    def _fulfil(self, future: asyncio.Future[Item], item: Item | None) -> None:
        if future.done():  # cancelled meanwhile: the item is not lost, it goes back (the end too)
            if item is not None or self.readyState == "live":
                self._queue.appendleft(item)
            return
        if item is None:
            self.stop()
            future.set_exception(MediaStreamError())
        else:
            future.set_result(item)

    def stop(self) -> None:
        super().stop()
        self._quit.set()
        # The reader thread closes the container itself: closing it from here
        # while the thread is inside decode() would crash FFmpeg.

    # -- reader thread --

    def _deliver(self, frame: Item | None) -> None:
        """Runs on the event loop: hand ``frame`` to a waiting consumer, else queue it, dropping the oldest if full."""
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            self._fulfil(waiter, frame)
            return
        while frame is not None and len(self._queue) >= self._max_queued:
            self._queue.popleft()
        self._queue.append(frame)

    def _post(self, frame: Item | None) -> None:
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(self._deliver, frame)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            self._quit.set()

    def _run(self) -> None:
        container = self._container
        assert container is not None
        stream = container.streams.video[0] if self.kind == "video" else container.streams.audio[0]
        resampler = (
            av.AudioResampler(format="s16", layout="stereo", rate=AUDIO_RATE, frame_size=AUDIO_SAMPLES)
            if self.kind == "audio"
            else None
        )
        samples = 0
        started = time.monotonic()
        first_time: float | None = None
        try:
            for frame in container.decode(stream):
                if self._quit.is_set():
                    break
                if not isinstance(frame, av.VideoFrame | av.AudioFrame):
                    continue  # a subtitle: not ours to send
                if self.spec.paced and frame.time is not None:
                    # Behave like a device: hand out a frame when it is "captured".
                    if first_time is None:
                        first_time = frame.time
                    delay = started + (frame.time - first_time) - time.monotonic()
                    if delay > 0:
                        # A plain sleep, not ``self._quit.wait(delay)``: that builds a
                        # Condition and a lock each call and cost 0.15 ms more CPU a frame
                        # here (bench/media_cpu.py); a stop waits one frame interval at most.
                        time.sleep(delay)
                        if self._quit.is_set():
                            break
                if resampler is not None:
                    assert isinstance(frame, av.AudioFrame)  # an audio stream was opened
                    for out in resampler.resample(frame):
                        out.pts = samples
                        out.time_base = AUDIO_TIME_BASE
                        samples += out.samples
                        self._post(out)
                else:
                    assert isinstance(frame, av.VideoFrame)
                    if frame.format.name != "yuv420p":
                        frame = frame.reformat(format="yuv420p")
                    self._hand_over(frame)
                self.frames_read += 1
        except (av.FFmpegError, OSError) as exc:
            # Typically ENODEV: the camera or microphone was unplugged.
            self.error = f"{type(exc).__name__}: {exc}"
            logger.info("%s ended: %s", self.spec.describe(), self.error)
        finally:
            container.close()
            self._post(None)

    def _hand_over(self, frame: av.VideoFrame) -> None:
        """Post ``frame``, through the stage if there is one."""
        stage = self.stage
        if stage is None:
            self._post(frame)
        elif len(self._queue) < self._max_queued:  # else nobody reads: spare the stage's work
            item = stage(frame)
            if item is not None:
                self._post(item)


async def open_source(spec: SourceSpec) -> CaptureTrack:
    """Open ``spec`` and start reading; raises ``av.FFmpegError``/``OSError`` on failure."""
    return await CaptureTrack(spec).start()
