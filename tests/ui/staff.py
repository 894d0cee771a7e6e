"""The staff browser's part in a call, played by a real aiortc peer in the test process.

Like the console in a browser: it receives the device's offer (a CallOffer while it
rings, or a CallAnswer carrying one), answers it with its own camera and microphone
(small lavfi test sources, to spare the CPU; attached only at the answer when
pre-connecting), and counts what it receives from the device. It is the call
peer both sides use (:class:`kiosk.media.peer.CallPeer`), with the Python
caregiver's test media; here it is driven by hand, without the server.
"""

from __future__ import annotations

from aiortc import RTCConfiguration

from kiosk.caregiver import TestMedia, open_test_media
from kiosk.media.peer import CallMediaError, CallPeer, LocalMedia
from kiosk.protocol import messages as m

SMALL = TestMedia(width=176, height=144, fps=15, tone_hz=660)


async def small_media() -> LocalMedia:
    """What the device sends in in-process tests: the same tracks as a unit, smaller."""
    media = await open_test_media(SMALL)
    media.video_mime = "video/VP8"
    return media


class Counts:
    """Frames the staff peer received, per kind, waited for the way tests wait."""

    def __init__(self, peer: CallPeer) -> None:
        self._peer = peer

    def count(self, kind: str) -> int:
        return self._peer.video_frames if kind == "video" else self._peer.audio_frames

    async def wait_for(self, kind: str, n: int, timeout: float = 10.0) -> None:
        try:
            await self._peer.wait_frames(**{kind: n}, timeout=timeout)
        except TimeoutError:
            raise AssertionError(f"only {self.count(kind)} {kind} frames, wanted {n}") from None


class StaffBrowser(CallPeer):
    def __init__(self, configuration: RTCConfiguration) -> None:
        super().__init__(configuration, label="staff")
        self.received = Counts(self)

    async def answer(self, offer_sdp: str, *, hold: bool = False) -> str:
        await self.open_media(small_media)
        return await super().answer(offer_sdp, hold=hold)

    async def answer_the_answer(self, answered: m.CallAnswer, ring_offers: list[m.CallOffer]) -> m.CallAccept | None:
        """What the page does when the unit's ``call-answer`` comes: answer the offer in it; or,
        if it has none, the offer made while it rang (here late, as a slow caller's would be)
        and start sending at once. The CallAccept to send, if one is due."""
        if answered.sdp is not None:
            return m.CallAccept(call_id=answered.call_id, sdp=await self.answer(answered.sdp))
        if self.held:  # answered while it rang: only our media is left to attach
            self.start_media()
            return None
        sdp = await self.answer(ring_offers[-1].sdp, hold=True)
        self.start_media()
        return m.CallAccept(call_id=answered.call_id, sdp=sdp)

    async def wait_connected(self, timeout: float = 15.0) -> None:
        try:
            await super().wait_connected(timeout)
        except (CallMediaError, TimeoutError):
            raise AssertionError(f"staff peer still {self.connection_state}") from None
