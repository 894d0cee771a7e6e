"""The device's side of one video call: an aiortc peer with the unit's camera and microphone.

The device makes the offer while it rings (:meth:`DeviceCall.prepare`, sent as
:class:`~kiosk.protocol.messages.CallOffer` by :meth:`DeviceCall.ring_offer`) and the
caller answers it at once, so ICE and DTLS come up during the ring with no track
attached: the unit sends no picture and no sound, and shows and plays nothing of the
caller, before the citizen answers. The answer button then opens the camera and
microphone and attaches them (:meth:`DeviceCall.answer`, a
:class:`~kiosk.protocol.messages.CallAnswer` without SDP). Where that could not be done (the
offer failed while ringing, or the connection did), the answer carries a fresh offer
instead, as an older unit's does. SDP is exchanged whole: an offer is made only after ICE
gathering is complete, so it carries every candidate and no trickle is needed.

ICE servers are always the ones the server put in the :class:`CallRing`, even
an empty list: aiortc would otherwise ask a public STUN server, which a closed
municipal system must never do. ``relay_only`` restricts ICE to our TURN relay.

Remote video frames go to ``on_video_frame`` (the Kivy screen draws them),
counted for freezes; remote audio goes to an :data:`AudioSink`. Headless, :class:`CountingAudioSink` just
consumes the frames; on a unit the speaker sink (ALSA/PipeWire, with echo
cancellation) plugs in there. At the end, :meth:`DeviceCall.hang_up` returns the
call's quality report when media flowed: numbers only, no media.

The peer connection itself (media, SDP, pumping, quality, closing) is the one
both sides of a call use, :class:`kiosk.media.peer.CallPeer`; this module adds
what is the unit's own: the ring, re-offering, and the protocol's messages.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol, TypeAlias

import av
from aiortc import RTCConfiguration
from av.frame import Frame

from kiosk.media.link import LinkState
from kiosk.media.peer import (
    GATHER_TIMEOUT,
    CallMediaError,
    CallPeer,
    LocalMedia,
    MediaOpener,
    rtc_configuration,
)
from kiosk.protocol import messages as m

__all__ = [
    "GATHER_TIMEOUT",
    "AudioSink",
    "CallMediaError",
    "CountingAudioSink",
    "DeviceCall",
    "LocalMedia",
    "MediaOpener",
    "VideoSink",
    "open_device_media",
    "sections_without_candidates",
]

log = logging.getLogger("kiosk.ui.call")

#: Offers made before a call with a media section lacking ICE candidates fails,
#: and the pause between them (a TURN server's refusal can be a passing hiccup).
OFFER_ATTEMPTS = 3
OFFER_RETRY_PAUSE = 0.2

VideoSink: TypeAlias = Callable[[av.VideoFrame], None]


class AudioSink(Protocol):
    """Where the caller's voice goes: called on the event loop for every frame."""

    def __call__(self, frame: av.AudioFrame) -> None: ...


class CountingAudioSink:
    """Headless: consume the caller's audio, counting it. A unit's speaker sink
    (ALSA/PipeWire playback) takes its place through ``DeviceCall(audio_sink=...)``."""

    def __init__(self) -> None:
        self.frames = 0
        self.samples = 0

    def __call__(self, frame: av.AudioFrame) -> None:
        self.frames += 1
        self.samples += frame.samples


async def open_device_media(demo: bool = False) -> LocalMedia:
    """The unit's camera and microphone (or, with ``demo``, test sources when it has none)."""
    from kiosk.media.session import start_media  # imported here: it probes encoders and udev

    media = await start_media(demo=demo)
    return LocalMedia(media.devices.video, media.devices.audio, media.encoder.mime_type, media.close)


def sections_without_candidates(sdp: str) -> list[str]:
    """The audio/video media sections of ``sdp`` that carry no ICE candidate (by mid or kind).

    aiortc offers one ICE transport per section; a section without a candidate
    can never connect, and with BUNDLE the first section carries the whole call.
    """
    bare = []
    for section in sdp.replace("\r\n", "\n").split("\nm=")[1:]:
        kind = section.split(" ", 1)[0]
        if kind not in ("audio", "video"):
            continue
        if "\na=candidate:" not in section:
            mid = next((line[6:] for line in section.split("\n") if line.startswith("a=mid:")), None)
            bare.append(f"{kind} (mid {mid})" if mid is not None else kind)
    return bare


class DeviceCall:
    """One call's peer connection on the unit, from the ring to the hang-up.

    ``on_state`` is called with aiortc's connection state ("connecting",
    "connected", "failed", "closed") whenever it changes, while the call is open;
    ``on_link`` with the link's state ("good", "poor", "lost") while connected,
    for the citizen's "Dårlig forbindelse" notice.
    Its connection, media and counters are its :attr:`peer`'s.
    """

    def __init__(
        self,
        ring: m.CallRing,
        open_media: MediaOpener,
        *,
        on_state: Callable[[str], None] | None = None,
        on_video_frame: VideoSink | None = None,
        audio_sink: AudioSink | None = None,
        on_link: Callable[[LinkState], None] | None = None,
        gather_timeout: float = GATHER_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.call_id = ring.call_id
        self.relay_only = ring.relay_only
        self._open_media = open_media
        self._on_video_frame = on_video_frame
        self.audio_sink: AudioSink = audio_sink if audio_sink is not None else CountingAudioSink()
        self.peer = CallPeer(
            rtc_configuration(ring.ice_servers, ring.relay_only),
            label=f"call {ring.call_id}",
            on_state=on_state,
            on_video_frame=self._video_frame,
            on_audio_frame=self._audio_frame,
            on_link=on_link,
            gather_timeout=gather_timeout,
            clock=clock,
        )
        self._quality: m.CallQualityReport | None = None
        self._preparing: asyncio.Future[None] | None = None  # gathering while the unit rings
        self._ring_offer_mime: str | None = None  # the video codec preferred by the offer made while ringing
        self._answered = False

    # --- what it knows ------------------------------------------------------------

    @property
    def configuration(self) -> RTCConfiguration:
        return self.peer.configuration

    @property
    def frames_decoded(self) -> int:
        """Remote video frames received and decoded so far."""
        return self.peer.video_frames

    @property
    def audio_frames_received(self) -> int:
        return self.peer.audio_frames

    @property
    def had_media(self) -> bool:
        return self.peer.connected_at is not None

    @property
    def connection_state(self) -> str:
        return self.peer.connection_state

    async def sent_and_received(self) -> dict[str, int]:
        """RTP packets sent and received per kind, from aiortc's stats (for tests and diagnostics)."""
        return await self.peer.sent_and_received()

    # --- the call -----------------------------------------------------------------

    async def ring_offer(self) -> m.CallOffer | None:
        """While it rings: the offer :meth:`prepare` made, to send now so the caller can answer
        it and the connection comes up before the citizen answers. None if there is none
        worth sending (gathering failed, or left a section without a candidate): the answer
        then carries a fresh offer."""
        if self._preparing is None:
            return None
        await asyncio.gather(self._preparing, return_exceptions=True)
        if self._answered or self.peer.closed:
            return None
        prepared = self.peer.take_prepared_offer()
        if prepared is None:
            return None
        mime, sdp = prepared
        bare = sections_without_candidates(sdp)
        if bare:
            log.info("call %s: no ICE candidate for %s while ringing; will offer at the answer",
                     self.call_id, ", ".join(bare))
            return None
        self._ring_offer_mime = mime
        return m.CallOffer(call_id=self.call_id, sdp=sdp)

    async def answer(self, preconnected: bool = False) -> m.CallAnswer:
        """The citizen answered: open camera and microphone and start sending.

        ``preconnected`` (the offer of :meth:`ring_offer` went to the caller, as the
        screen's controller knows): the media is attached to that connection, and the
        answer carries no SDP. Otherwise, or if that connection failed
        or the media wants another codec than it offered, a fresh offer is made and gathered.
        A media section left without any ICE candidate (a TURN login that failed
        once, say) would make the call fail after the connect timeout, so the
        offer is made again on a fresh peer (``OFFER_ATTEMPTS`` in all) before we give up.

        Raises :class:`CallMediaError` if media or ICE could not be set up.
        """
        if self.peer.closed or self._answered:
            raise CallMediaError("this call's peer was already started or has ended")
        self._answered = True
        if self._preparing is not None:  # begun at the ring: waiting for it is never slower than anew
            await asyncio.gather(self._preparing, return_exceptions=True)
        media = await self.peer.open_media(self._open_media)
        if (preconnected and self.peer.held and media.video_mime == self._ring_offer_mime
                and self.peer.connection_state not in ("failed", "closed")):
            self.peer.start_media()
            return m.CallAnswer(call_id=self.call_id)
        if preconnected:
            log.info("call %s: the connection made while ringing cannot carry this call (%s); offering anew",
                     self.call_id, self.peer.connection_state)
        for attempt in range(1, OFFER_ATTEMPTS + 1):
            sdp = await self.peer.offer()
            bare = sections_without_candidates(sdp)
            if not bare:
                return m.CallAnswer(call_id=self.call_id, sdp=sdp)
            log.warning("call %s: no ICE candidate for %s (attempt %d of %d)",
                        self.call_id, ", ".join(bare), attempt, OFFER_ATTEMPTS)
            if attempt < OFFER_ATTEMPTS:
                await asyncio.sleep(OFFER_RETRY_PAUSE)
        raise CallMediaError(
            "no ICE candidate was gathered: "
            + ("the TURN server refused or did not answer (relay only)" if self.relay_only
               else "no usable network interface or ICE server")
        )

    def prepare(self, video_mime: str | None) -> None:
        """The unit rings: gather (the TURN allocation) now, so :meth:`answer` need not.

        A failure here is only logged: :meth:`answer` then makes its offer afresh."""
        if self._preparing is None and not self._answered and not self.peer.closed:
            self._preparing = asyncio.ensure_future(self._prepare(video_mime))

    async def _prepare(self, video_mime: str | None) -> None:
        try:
            await self.peer.prepare_offer(video_mime)
        except CallMediaError as exc:
            log.info("call %s: could not gather while ringing (%s); will at the answer", self.call_id, exc)

    async def accept(self, sdp: str) -> None:
        """The staff browser's SDP answer. Raises :class:`CallMediaError` if it is unusable."""
        await self.peer.accept(sdp)

    async def hang_up(self) -> m.CallQualityReport | None:
        """Close the peer and the media; the quality report if media flowed. Idempotent."""
        if self._preparing is not None:
            self._preparing.cancel()
            await asyncio.gather(self._preparing, return_exceptions=True)
        quality = await self.peer.close()
        if quality is not None and self._quality is None:
            self._quality = m.CallQualityReport(call_id=self.call_id, quality=quality.as_record())
        return self._quality

    # --- internals ----------------------------------------------------------------

    # Nothing of the caller is shown or played before the citizen answered (the caller
    # sends nothing then either; this holds whatever a caller does).

    def _video_frame(self, frame: Frame) -> None:
        if self._answered and self._on_video_frame is not None and isinstance(frame, av.VideoFrame):
            self._on_video_frame(frame)

    def _audio_frame(self, frame: Frame) -> None:
        if self._answered and isinstance(frame, av.AudioFrame):
            self.audio_sink(frame)
