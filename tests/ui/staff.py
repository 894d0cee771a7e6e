"""The staff browser's part in a call, played by a real aiortc peer in the test process.

Like the console in a browser: it receives the device's offer (a CallAnswer),
answers it with its own camera and microphone (small lavfi test sources, to
spare the CPU), and counts what it receives from the device.
"""

from __future__ import annotations

import asyncio
import time

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from kiosk.media.sources import lavfi_pattern_spec, lavfi_tone_spec, open_source
from kiosk.media.swappable import SwappableTrack
from kiosk.ui.call_peer import LocalMedia

from tests.media.calls import Received, collect

SMALL_VIDEO = dict(width=176, height=144, fps=15)


async def small_media() -> LocalMedia:
    """What the device sends in in-process tests: the same tracks as a unit, smaller."""
    video = SwappableTrack("video", await open_source(lavfi_pattern_spec(**SMALL_VIDEO)), size=(176, 144))
    audio = SwappableTrack("audio", await open_source(lavfi_tone_spec(660)))
    sources = [video.source, audio.source]

    async def close() -> None:
        for source in sources:
            if source is not None:
                source.stop()

    return LocalMedia(video, audio, "video/VP8", close)


class StaffBrowser:
    def __init__(self, configuration: RTCConfiguration) -> None:
        self.pc = RTCPeerConnection(configuration)
        self.received: Received = collect(self.pc, keep_video=False)
        self._media: LocalMedia | None = None

    async def answer(self, offer_sdp: str, timeout: float = 15.0) -> str:
        media = self._media = await small_media()
        assert media.video is not None and media.audio is not None
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        # As aiortc's own server example does: tracks added after the offer take
        # over the offer's transceivers, which then send as well as receive.
        self.pc.addTrack(media.video)
        self.pc.addTrack(media.audio)
        await asyncio.wait_for(self.pc.setLocalDescription(await self.pc.createAnswer()), timeout)
        return self.pc.localDescription.sdp

    async def wait_connected(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while self.pc.connectionState != "connected":
            assert time.monotonic() < deadline, f"staff peer still {self.pc.connectionState}"
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        await self.pc.close()
        for task in self.received.tasks:
            task.cancel()
        await asyncio.gather(*self.received.tasks, return_exceptions=True)
        if self._media is not None:
            await self._media.close()
