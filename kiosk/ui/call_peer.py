"""The device's side of one video call: an aiortc peer with the unit's camera and microphone.

The device makes the offer (the citizen's answer button starts it) and the
staff browser answers, with SDP exchanged whole: :meth:`DeviceCall.answer`
returns only after ICE gathering is complete, so the offer carries every
candidate and no trickle is needed.

ICE servers are always the ones the server put in the :class:`CallRing`, even
an empty list: aiortc would otherwise ask a public STUN server, which a closed
municipal system must never do. ``relay_only`` restricts ICE to our TURN relay.

Remote video frames go to ``on_video_frame`` (the Kivy screen draws them),
through :class:`~kiosk.media.stats.MeteredTrack` so freezes are counted; remote
audio goes to an :data:`AudioSink`. Headless, :class:`CountingAudioSink` just
consumes the frames; on a unit the speaker sink (ALSA/PipeWire, with echo
cancellation) plugs in there. At the end, :meth:`DeviceCall.hang_up` returns the
call's quality report when media flowed: numbers only, no media.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias

import av
from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcconfiguration import RTCIceTransportPolicy

from kiosk.media import FreezeCounter, MeteredTrack, measure, prefer_video_codec
from kiosk.protocol import messages as m

log = logging.getLogger("kiosk.ui.call")

#: ICE gathering on a healthy network takes well under a second; an unreachable
#: TURN server is what makes it slow, and then the call cannot work anyway.
GATHER_TIMEOUT = 15.0

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


@dataclass
class LocalMedia:
    """What one call sends: the unit's tracks, the preferred video codec, and how to close them."""

    video: MediaStreamTrack | None
    audio: MediaStreamTrack | None
    video_mime: str | None = None
    closer: Callable[[], Awaitable[None]] | None = field(default=None, repr=False)

    async def close(self) -> None:
        for track in (self.video, self.audio):
            if track is not None:
                track.stop()
        if self.closer is not None:
            await self.closer()


MediaOpener: TypeAlias = Callable[[], Awaitable[LocalMedia]]


async def open_device_media(demo: bool = False) -> LocalMedia:
    """The unit's camera and microphone (or, with ``demo``, test sources when it has none)."""
    from kiosk.media.session import start_media  # imported here: it probes encoders and udev

    media = await start_media(demo=demo)
    return LocalMedia(media.devices.video, media.devices.audio, media.encoder.mime_type, media.close)


def rtc_configuration(ice_servers: list[m.IceServer], relay_only: bool) -> RTCConfiguration:
    """Our ICE servers only, never aiortc's default public STUN (an empty list stays empty).

    Both peers of a call use it: the unit (from CallRing) and the Python caregiver
    (from CallPlaced, in kiosk.server.call_client)."""
    servers = [RTCIceServer(urls=list(s.urls), username=s.username, credential=s.credential)
               for s in ice_servers]
    policy = RTCIceTransportPolicy.RELAY if relay_only else RTCIceTransportPolicy.ALL
    return RTCConfiguration(iceServers=servers, iceTransportPolicy=policy)


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


class CallMediaError(Exception):
    """Media for the call could not be set up; the message says what to check."""


class DeviceCall:
    """One call's peer connection on the unit, from the ring to the hang-up.

    ``on_state`` is called with aiortc's connection state ("connecting",
    "connected", "failed", "closed") whenever it changes, while the call is open.
    """

    def __init__(
        self,
        ring: m.CallRing,
        open_media: MediaOpener,
        *,
        on_state: Callable[[str], None] | None = None,
        on_video_frame: VideoSink | None = None,
        audio_sink: AudioSink | None = None,
        gather_timeout: float = GATHER_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.call_id = ring.call_id
        self.relay_only = ring.relay_only
        self.configuration = rtc_configuration(ring.ice_servers, ring.relay_only)
        self._open_media = open_media
        self._on_state = on_state
        self._on_video_frame = on_video_frame
        self.audio_sink: AudioSink = audio_sink if audio_sink is not None else CountingAudioSink()
        self._gather_timeout = gather_timeout
        self._clock = clock
        self.pc: RTCPeerConnection | None = None
        self.media: LocalMedia | None = None
        self.freezes = FreezeCounter()
        self.audio_frames_received = 0
        self.connected_at: float | None = None
        self._pumps: list[asyncio.Task[None]] = []
        self._closed = False
        self._quality: m.CallQualityReport | None = None

    # --- counters -----------------------------------------------------------------

    @property
    def frames_decoded(self) -> int:
        """Remote video frames received and decoded so far."""
        return self.freezes.frames

    @property
    def had_media(self) -> bool:
        return self.connected_at is not None

    @property
    def connection_state(self) -> str:
        return self.pc.connectionState if self.pc is not None else "new"

    async def sent_and_received(self) -> dict[str, int]:
        """RTP packets sent and received per kind, from aiortc's stats (for tests and diagnostics)."""
        counts = {"video_sent": 0, "audio_sent": 0, "video_received": 0, "audio_received": 0}
        if self.pc is None or self.pc.connectionState == "closed":
            return counts
        for stats in (await self.pc.getStats()).values():
            kind = getattr(stats, "type", None)
            if kind == "outbound-rtp":
                counts[f"{stats.kind}_sent"] += stats.packetsSent
            elif kind == "inbound-rtp":
                counts[f"{stats.kind}_received"] += stats.packetsReceived
        return counts

    # --- the call -----------------------------------------------------------------

    async def answer(self) -> m.CallAnswer:
        """The citizen answered: open camera and microphone, create the offer, gather.

        A media section left without any ICE candidate (a TURN login that failed
        once, say) would make the call fail after the connect timeout, so the
        offer is made again on a fresh peer (``OFFER_ATTEMPTS`` in all) before we give up.

        Raises :class:`CallMediaError` if media or ICE could not be set up.
        """
        if self._closed or self.pc is not None:
            raise CallMediaError("this call's peer was already started or has ended")
        try:
            media = await self._open_media()
        except Exception as exc:  # any device or codec failure: the call ends as media-failed
            raise CallMediaError(f"could not open camera/microphone: {type(exc).__name__}: {exc}") from exc
        if self._closed:  # hung up while the devices opened
            await media.close()
            raise CallMediaError("the call ended while the camera and microphone opened")
        self.media = media
        for attempt in range(1, OFFER_ATTEMPTS + 1):
            sdp = await self._offer(media)
            bare = sections_without_candidates(sdp)
            if not bare:
                return m.CallAnswer(call_id=self.call_id, sdp=sdp)
            log.warning("call %s: no ICE candidate for %s (attempt %d of %d)",
                        self.call_id, ", ".join(bare), attempt, OFFER_ATTEMPTS)
            pc, self.pc = self.pc, None
            if pc is not None:
                pc.remove_all_listeners()  # its "closed" is not the call's
                with contextlib.suppress(Exception):
                    await pc.close()
            if self._closed:
                break
            if attempt < OFFER_ATTEMPTS:
                await asyncio.sleep(OFFER_RETRY_PAUSE)
        raise CallMediaError(
            "no ICE candidate was gathered: "
            + ("the TURN server refused or did not answer (relay only)" if self.relay_only
               else "no usable network interface or ICE server")
        )

    async def _offer(self, media: LocalMedia) -> str:
        """A new peer with our tracks, and its offer with every candidate gathered."""
        if self._closed:
            raise CallMediaError("the call ended while the offer was made")
        pc = self.pc = RTCPeerConnection(self.configuration)
        pc.on("connectionstatechange", self._state_changed)
        pc.on("track", self._remote_track)
        video: RTCRtpTransceiver = pc.addTransceiver(media.video or "video",
                                                     direction="sendrecv" if media.video else "recvonly")
        if media.video_mime:
            prefer_video_codec(video, media.video_mime)
        pc.addTransceiver(media.audio or "audio", direction="sendrecv" if media.audio else "recvonly")
        try:
            # aiortc gathers every candidate inside setLocalDescription: the SDP is whole.
            await asyncio.wait_for(pc.setLocalDescription(await pc.createOffer()), self._gather_timeout)
        except TimeoutError:
            raise CallMediaError(
                f"ICE gathering took longer than {self._gather_timeout:.0f} s; is the TURN server reachable?"
            ) from None
        except Exception as exc:  # closed under us, or aiortc refused its own offer
            raise CallMediaError(f"could not create the offer: {type(exc).__name__}: {exc}") from exc
        if pc.iceGatheringState != "complete" or pc.localDescription is None:
            raise CallMediaError(f"ICE gathering did not complete ({pc.iceGatheringState})")
        return str(pc.localDescription.sdp)

    async def accept(self, sdp: str) -> None:
        """The staff browser's SDP answer. Raises :class:`CallMediaError` if it is unusable."""
        if self.pc is None or self._closed:
            raise CallMediaError("no offer was made for this call, or it has ended")
        try:
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
        except Exception as exc:  # aiortc raises ValueError, InvalidStateError, ... for a bad SDP
            raise CallMediaError(f"the caller's answer was refused: {type(exc).__name__}: {exc}") from exc

    async def hang_up(self) -> m.CallQualityReport | None:
        """Close the peer and the media; the quality report if media flowed. Idempotent."""
        if self._closed:
            return self._quality
        self._closed = True
        try:
            if self.pc is not None and self.connected_at is not None:
                self.freezes.close(self._clock())
                try:
                    quality = await measure(self.pc, self.freezes, self.connected_at, self._clock)
                    self._quality = m.CallQualityReport(call_id=self.call_id, quality=quality.as_record())
                except Exception as exc:  # stats are a nicety; closing the call is not
                    log.warning("call quality could not be measured: %s", exc)
        finally:  # even when cancelled: camera, microphone and sockets are released
            await self._release()
        return self._quality

    async def _release(self) -> None:
        if self.pc is not None:
            with contextlib.suppress(Exception):
                await self.pc.close()
        for pump in self._pumps:
            pump.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)
        if self.media is not None:
            with contextlib.suppress(Exception):
                await self.media.close()

    # --- internals ----------------------------------------------------------------

    def _state_changed(self) -> None:
        pc = self.pc
        if pc is None:
            return
        state = pc.connectionState
        if state == "connected" and self.connected_at is None:
            self.connected_at = self._clock()
        log.info("call %s: media %s", self.call_id, state)
        if self._on_state is not None and not self._closed:
            self._on_state(state)

    def _remote_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "video":
            metered = MeteredTrack(track, self.freezes, self._clock)
            self._pumps.append(asyncio.ensure_future(self._pump(metered, self._video_frame)))
        elif track.kind == "audio":
            self._pumps.append(asyncio.ensure_future(self._pump(track, self._audio_frame)))

    def _video_frame(self, frame: Any) -> None:
        if self._on_video_frame is not None:
            self._on_video_frame(frame)

    def _audio_frame(self, frame: Any) -> None:
        self.audio_frames_received += 1
        self.audio_sink(frame)

    async def _pump(self, track: MediaStreamTrack, deliver: Callable[[Any], None]) -> None:
        """Read every frame (aiortc's queues grow if nobody does) and hand it on."""
        complained = False
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            try:
                deliver(frame)
            except Exception:  # a broken renderer must not end the citizen's call
                if not complained:  # once per track, not 30 times a second
                    log.exception("a remote %s frame could not be delivered", track.kind)
                    complained = True
