"""The caregiver's camera and microphone: a lavfi test pattern and tone, any machine with PyAV."""

from __future__ import annotations

from dataclasses import dataclass

from kiosk.media.peer import LocalMedia
from kiosk.media.sources import lavfi_pattern_spec, lavfi_tone_spec, open_source
from kiosk.media.swappable import SwappableTrack

__all__ = ["TestMedia", "open_test_media"]


@dataclass(frozen=True)
class TestMedia:
    """What the test sources send.

    The default is small, to spare a shared CPU; a 640x480 call (what the
    page asks its camera for) is ``TestMedia(640, 480, 30)``.
    """

    __test__ = False  # not a pytest test class, despite its name

    width: int = 320
    height: int = 240
    fps: int = 15
    tone_hz: int = 660


async def open_test_media(spec: TestMedia = TestMedia()) -> LocalMedia:
    """Open the test sources, each behind a :class:`SwappableTrack`.

    The swappable track gives the frames continuous timestamps and takes away
    lavfi's "every frame is a key frame" mark (libvpx would obey it and send
    key frames only); it is what a unit sends through, too.
    """
    video_source = await open_source(lavfi_pattern_spec(spec.width, spec.height, spec.fps))
    try:
        audio_source = await open_source(lavfi_tone_spec(spec.tone_hz))
    except BaseException:
        video_source.stop()
        raise
    video = SwappableTrack("video", video_source, size=(spec.width, spec.height))
    audio = SwappableTrack("audio", audio_source)

    async def close() -> None:
        video_source.stop()
        audio_source.stop()

    return LocalMedia(video, audio, None, close)
