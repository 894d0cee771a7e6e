"""The citizen's own picture, small in a corner of the call, so they see what the caller sees.

:class:`TappedTrack` stands between the unit's video track and the peer: every
frame the peer sends passes through unchanged (the same object, no copy), and
some are also handed to the self-view. What the citizen sees is
exactly what is sent: with the camera off, the calm filler picture.
At most ``max_fps`` frames a second reach the self-view: it is small, and the
GPU upload of each frame is the cost.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import av
from aiortc.mediastreams import MediaStreamTrack

from kiosk.media.encoding import picture_of
from kiosk.media.sources import Item

#: The self-view is small: ten pictures a second are plenty.
SELF_VIEW_FPS = 10.0


class TappedTrack(MediaStreamTrack):
    kind = "video"

    def __init__(self, source: MediaStreamTrack, tap: Callable[[av.VideoFrame], None],
                 max_fps: float = SELF_VIEW_FPS, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.source = source
        self._tap = tap
        self._interval = 1.0 / max_fps
        self._clock = clock
        self._last: float | None = None

    async def recv(self) -> Item:  # type: ignore[override]  # the call's video: an EncodedFrame too
        frame = await self.source.recv()
        now = self._clock()
        picture = picture_of(frame)  # the call's video comes encoded, with its picture
        if picture is not None and (self._last is None or now - self._last >= self._interval):
            self._last = now
            self._tap(picture)
        return frame

    def stop(self) -> None:
        self.source.stop()
        super().stop()
