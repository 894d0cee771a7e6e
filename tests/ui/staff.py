"""The staff browser's part in a call, played by a real aiortc peer in the test process.

Like the console in a browser: it receives the device's offer (a CallAnswer),
answers it with its own camera and microphone (small lavfi test sources, to
spare the CPU), and counts what it receives from the device. The peer is the
Python caregiver's (:class:`kiosk.server.call_client.AnsweringPeer`); here it
is driven by hand, without the server.
"""

from __future__ import annotations

from aiortc import RTCConfiguration

from kiosk.server.call_client import AnsweringPeer, CallError, TestMedia, open_test_media
from kiosk.ui.call_peer import LocalMedia

SMALL = TestMedia(width=176, height=144, fps=15, tone_hz=660)


async def small_media() -> LocalMedia:
    """What the device sends in in-process tests: the same tracks as a unit, smaller."""
    media = await open_test_media(SMALL)
    media.video_mime = "video/VP8"
    return media


class Counts:
    """Frames the staff peer received, per kind, waited for the way tests wait."""

    def __init__(self, peer: AnsweringPeer) -> None:
        self._peer = peer

    def count(self, kind: str) -> int:
        return self._peer.video_frames if kind == "video" else self._peer.audio_frames

    async def wait_for(self, kind: str, n: int, timeout: float = 10.0) -> None:
        try:
            await self._peer.wait_frames(**{kind: n}, timeout=timeout)
        except CallError:
            raise AssertionError(f"only {self.count(kind)} {kind} frames, wanted {n}") from None


class StaffBrowser(AnsweringPeer):
    def __init__(self, configuration: RTCConfiguration) -> None:
        super().__init__(configuration, small_media)
        self.received = Counts(self)

    async def wait_connected(self, timeout: float = 15.0) -> None:
        try:
            await super().wait_connected(timeout)
        except CallError:
            raise AssertionError(f"staff peer still {self.pc.connectionState}") from None
