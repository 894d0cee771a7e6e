"""A track whose source can be swapped while the call goes on.

The peer connection holds one :class:`SwappableTrack` for the whole call.  When
the camera (or microphone) disappears we swap its source for nothing and the
track sends a calm filler instead: a plain dark picture at a low frame rate, or
silence; when a device comes back we swap it in.  No renegotiation, no new
track, and the remote side never sees the stream end.

Timestamps belong to the track, not the source: every source starts its own
clock at zero, and a stream whose timestamps jump back would confuse the
remote jitter buffer.  So does the picture type (see ``_stamp``).

Video from a capture source is encoded in the source's reader thread once the
sender's encoder is known (:mod:`kiosk.media.encoding`): the track then hands
out encoded frames, and its per-frame work (``_shape``: step-down, timestamp)
runs in that thread too.  The filler is encoded by aiortc as before.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import threading
import time

import av
from aiortc.mediastreams import AUDIO_PTIME, VIDEO_CLOCK_RATE, MediaStreamError, MediaStreamTrack
from av.frame import Frame

from .encoders import install_encoding_at_source
from .encoding import EncodedFrame, EncoderSlot
from .sources import AUDIO_RATE, AUDIO_SAMPLES, AUDIO_TIME_BASE, CaptureTrack, Item, Kind

logger = logging.getLogger(__name__)

VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK_RATE)
# Calm dark blue-grey, in limited-range YUV.
PLACEHOLDER_YUV = (40, 140, 120)


def placeholder_frame(width: int = 640, height: int = 480) -> av.VideoFrame:
    """A plain dark picture: cheap to encode and nothing for the eye to catch."""
    frame = av.VideoFrame(width, height, "yuv420p")
    for plane, value in zip(frame.planes, PLACEHOLDER_YUV, strict=True):  # Y, U, V
        plane.update(bytes([value]) * plane.buffer_size)
    return frame


def silence_frame() -> av.AudioFrame:
    frame = av.AudioFrame(format="s16", layout="stereo", samples=AUDIO_SAMPLES)
    for plane in frame.planes:
        plane.update(bytes(plane.buffer_size))
    frame.sample_rate = AUDIO_RATE
    return frame


def _half_size(frame: av.VideoFrame) -> av.VideoFrame:
    """``frame`` at half its width and height (even, as 4:2:0 needs), in its own format."""
    return frame.reformat(width=max(2, frame.width // 4 * 2), height=max(2, frame.height // 4 * 2))


class SwappableTrack(MediaStreamTrack):
    """Forwards frames from the current source, or a filler when there is none."""

    def __init__(
        self,
        kind: Kind,
        source: MediaStreamTrack | None = None,
        placeholder_fps: float = 5.0,
        size: tuple[int, int] = (640, 480),
    ) -> None:
        super().__init__()
        self.kind = kind
        self._source = source
        self._swapped = asyncio.Event()
        self._pending: asyncio.Future[Item] | None = None
        self._waiter: asyncio.Future[None] | None = None  # recv waiting for a frame or a swap
        self._size = size
        self._filler_interval = 1.0 / placeholder_fps if kind == "video" else AUDIO_PTIME
        self._next_filler_at: float | None = None
        self._clock_start: float | None = None
        self._last_pts = -1
        self._audio_samples = 0
        self.frames_from_source = 0
        self.filler_frames = 0
        self._muted = False
        #: Half the size and every other frame (the call's link is narrow; kiosk.media.link.video_step).
        self.stepped_down = False
        self._frames_seen = 0
        self._stamp_lock = threading.Lock()  # video is shaped in the capture thread, the filler on the loop
        #: Filled in by the sender's encoder when it sees our first frame.
        self.encoder_slot = EncoderSlot()
        if kind == "video":
            install_encoding_at_source()  # so the sender's encoder can take our encoded frames

    @property
    def source(self) -> MediaStreamTrack | None:
        return self._source

    @property
    def muted(self) -> bool:
        """Send the filler even while a source is there (the citizen turned camera or sound off).
        Kept apart from :meth:`swap`, so a device plugged in meanwhile does not turn it back on."""
        return self._muted

    @muted.setter
    def muted(self, muted: bool) -> None:
        if muted != self._muted:
            self._muted = muted
            self._drop_pending()
            self._wake()
            logger.info("%s %s by the citizen", self.kind, "off" if muted else "on")

    def swap(self, source: MediaStreamTrack | None) -> MediaStreamTrack | None:
        """Use ``source`` from the next frame on; returns the previous one.

        The caller owns the previous source and decides whether to stop it.
        """
        previous, self._source = self._source, source
        if previous is not source:
            self._stop_encoding_at(previous)
            self._drop_pending()
            self._wake()
            logger.info("%s source is now %s", self.kind, getattr(source, "spec", source))
        return previous

    def stop(self) -> None:
        self._stop_encoding_at(self._source)
        self._drop_pending()
        self._wake()
        super().stop()

    def _encode_at(self, source: MediaStreamTrack) -> None:
        """Once the sender's encoder is known, a capture source encodes our frames in its thread."""
        if self.encoder_slot.encoder is not None and isinstance(source, CaptureTrack) and source.stage is None:
            source.stage = self._shape_and_encode

    def _stop_encoding_at(self, source: MediaStreamTrack | None) -> None:
        if isinstance(source, CaptureTrack) and source.stage == self._shape_and_encode:
            source.stage = None

    def _shape_and_encode(self, frame: av.VideoFrame) -> Item | None:
        """In the capture thread: the frame as sent, encoded by the sender's encoder."""
        shaped = self._shape(frame)
        encoder = self.encoder_slot.encoder
        if shaped is None or encoder is None:
            return shaped
        return encoder.encode_at_source(shaped)

    def _drop_pending(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None

    async def recv(self) -> Item:  # type: ignore[override]  # an EncodedFrame too, see Item
        while True:
            if self.readyState != "live":
                raise MediaStreamError
            source = None if self._muted else self._source
            if source is None:
                frame = await self._filler()
                if frame is None:
                    continue  # a source was swapped in while we waited
                self.filler_frames += 1
                return self._to_encode(self._stamp(frame))
            if self._pending is None:
                self._encode_at(source)
                self._pending = (
                    source.next_item() if isinstance(source, CaptureTrack) else asyncio.ensure_future(source.recv())
                )
            if isinstance(self._pending, asyncio.Task):
                if not self._pending.done():
                    await self._frame_or_swap(self._pending)
            elif not await self._arrived(self._pending):
                continue  # swapped, muted or stopped meanwhile: look again
            pending, self._pending = self._pending, None
            if pending is None or not pending.done() or pending.cancelled() or source is not self._source or (
                self._muted
            ):
                if pending is not None:
                    pending.cancel()
                continue
            try:
                received = pending.result()
            except MediaStreamError:
                # The device went away under us; hotplug will bring a new one.
                logger.info("%s source ended, sending filler", self.kind)
                if self._source is source:
                    self._source = None
                continue
            if isinstance(received, av.VideoFrame) and isinstance(source, CaptureTrack) and (
                source.stage == self._shape_and_encode
            ):
                continue  # read before the source encoded for us: sent now, it would come after newer ones
            self.frames_from_source += 1
            self._next_filler_at = None
            if isinstance(received, EncodedFrame):  # encoded in the capture thread, shaped there
                return received
            if isinstance(received, av.VideoFrame):
                shaped = self._shape(received)
                if shaped is None:
                    continue
                return self._to_encode(shaped)
            if isinstance(received, av.AudioFrame):
                return self._stamp(received)
            # anything else is not ours to send

    @staticmethod
    async def _arrived(pending: asyncio.Future[Item]) -> bool:
        """Wait for a capture track's next item; False if a swap, a mute or the end cancelled it.

        Awaited directly, the one future a frame needs: a frame costs the loop one turn fewer
        than :meth:`_frame_or_swap`, 30 times a second in every call."""
        try:
            await pending
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # we are cancelled, not just the wait
            return False
        except MediaStreamError:
            pass  # the source ended: recv reads that from the future
        return True

    async def _frame_or_swap(self, pending: asyncio.Future[Item]) -> None:
        """Until ``pending`` is done or the source is swapped, muted or stopped.

        One future and one callback per frame, not a second task racing ``asyncio.wait``:
        this runs 30 times a second in every call, and the track's own cost per frame fell
        from 39 to 20 µs (measured with an instant source; the media path's CPU target is
        1.25x the bare encoder)."""
        waiter = self._waiter = asyncio.get_running_loop().create_future()

        def wake(_: object) -> None:
            if not waiter.done():
                waiter.set_result(None)

        pending.add_done_callback(wake)
        try:
            await waiter
        finally:
            pending.remove_done_callback(wake)
            self._waiter = None

    def _wake(self) -> None:
        """A swap, a mute or the end: a ``recv`` waiting on the old source looks again."""
        self._swapped.set()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def _filler(self) -> Frame | None:
        """Wait for the next filler slot; ``None`` if a source arrived meanwhile."""
        now = time.monotonic()
        if self._next_filler_at is None:
            self._next_filler_at = now
        delay = self._next_filler_at - now
        self._next_filler_at = max(self._next_filler_at + self._filler_interval, now)
        self._swapped.clear()
        if delay > 0:
            try:
                await asyncio.wait_for(self._swapped.wait(), delay)
                return None
            except TimeoutError:
                pass
        if self._source is not None and not self._muted:
            return None
        return placeholder_frame(*self._size) if self.kind == "video" else silence_frame()

    def _shape(self, frame: av.VideoFrame) -> av.VideoFrame | None:
        """A source's frame as sent: halved in size and rate when stepped down (None: skipped), stamped.

        One hold of the lock a frame (it runs cold in the capture thread, 30 times a second)."""
        with self._stamp_lock:
            self._size = (frame.width, frame.height)
            halve = self.stepped_down
            if halve:
                self._frames_seen += 1
                if self._frames_seen % 2:
                    return None  # half the frame rate
            pts = self._next_video_pts()
        return self._stamp_video(_half_size(frame) if halve else frame, pts)

    def _to_encode(self, frame: Frame) -> Frame:
        """A frame aiortc will encode itself: a video frame carries our slot, so its encoder finds us.

        Only these: a frame encoded in the capture thread never meets aiortc's ``encode``, and
        a slot costs an allocation and a free on each of 30 frames a second."""
        if isinstance(frame, av.VideoFrame):
            frame.opaque = self.encoder_slot
        return frame

    def _stamp(self, frame: Frame) -> Frame:
        """Give ``frame`` the track's own, continuous timestamp."""
        if isinstance(frame, av.AudioFrame):
            # Audio timestamps count samples, so the remote side hears no gap
            # or overlap when the microphone changes.
            frame.pts = self._audio_samples
            frame.time_base = AUDIO_TIME_BASE
            self._audio_samples += frame.samples
            return frame
        assert isinstance(frame, av.VideoFrame)
        with self._stamp_lock:
            pts = self._next_video_pts()
        return self._stamp_video(frame, pts)

    def _next_video_pts(self) -> int:
        """The video clock now, never the same twice. Call with ``_stamp_lock`` held."""
        now = time.monotonic()
        if self._clock_start is None:
            self._clock_start = now
        pts = max(int((now - self._clock_start) * VIDEO_CLOCK_RATE), self._last_pts + 1)
        self._last_pts = pts
        return pts

    @staticmethod
    def _stamp_video(frame: av.VideoFrame, pts: int) -> av.VideoFrame:
        # Decoders of raw and MJPEG capture (and lavfi) mark every frame as
        # intra; libvpx obeys that and would send nothing but key frames,
        # several times the bits and the CPU.  Whether a frame is a key frame
        # is the encoder's decision (or a PLI's), never the camera's.
        frame.pict_type = av.video.frame.PictureType.NONE
        frame.pts = pts
        frame.time_base = VIDEO_TIME_BASE
        return frame
