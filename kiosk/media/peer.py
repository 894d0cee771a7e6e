"""One call's aiortc peer connection, for either side of a call.

The unit (:class:`kiosk.ui.call_peer.DeviceCall`) offers and the Python
caregiver (:mod:`kiosk.caregiver`) answers; everything else about a peer is the
same on both sides and lives here once:

- its configuration: our ICE servers only (:func:`rtc_configuration`),
- the local media it sends (:class:`LocalMedia`, opened by a :data:`MediaOpener`),
- a DTLS handshake that resends a lost flight early (:mod:`kiosk.media.dtls`), and
  TURN requests and ICE checks that do too (:mod:`kiosk.media.stun_resends`),
- the SDP exchange, whole and without trickle: aiortc gathers every candidate
  inside ``setLocalDescription``, so an offer or answer carries them all,
- pre-connecting while the unit rings: the offer and the answer are exchanged with no
  track attached (the transceivers send nothing), ICE and DTLS come up, and the
  connection is *held*: not "connected" to the side, no link watch, until
  :meth:`CallPeer.start_media` attaches the camera and microphone at the answer
  (``replaceTrack``: no renegotiation; aiortc makes the encoder on the first frame, so
  media starts with a key frame),
- every remote track read to the end (aiortc's queues grow if nobody does),
  video through :class:`~kiosk.media.stats.MeteredTrack` so freezes are counted,
  each frame handed to the side's sink,
- connection state changes, the call's quality (numbers only), and closing:
  idempotent, and complete even when cancelled,
- while connected, a look at the link every :data:`WATCH_INTERVAL`: loss
  recovery follows the measured round trip (:func:`~kiosk.media.keyframes.follow_round_trip`),
  the link's state (good, poor, lost: :mod:`kiosk.media.link`) goes to ``on_link``,
  and media lost for good (:data:`~kiosk.media.link.GIVE_UP_AFTER`) is reported as
  the connection "failed", which aiortc itself would say only after 30 s.

Nothing here knows about the protocol's messages: the sides turn what it
returns into them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, TypeAlias

from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcconfiguration import RTCIceTransportPolicy
from av.frame import Frame

from .dtls import install_prompt_dtls
from .encoders import prefer_video_codec
from .keyframes import Clock, follow_round_trip
from .link import Counters, LinkState, LinkWatch, LossBasedCap, VideoStep
from .stats import CallQuality, FreezeCounter, MeteredTrack, measure
from .stun_resends import install_prompt_stun
from .swappable import SwappableTrack

__all__ = [
    "GATHER_TIMEOUT",
    "CallMediaError",
    "CallPeer",
    "FrameSink",
    "IceServerEntry",
    "LocalMedia",
    "MediaOpener",
    "ice_path",
    "rtc_configuration",
]

log = logging.getLogger("kiosk.media.peer")

#: ICE gathering on a healthy network takes well under a second; an unreachable
#: TURN server is what makes it slow, and then the call cannot work anyway.
GATHER_TIMEOUT: Final = 15.0
#: How often a connected peer looks at its link (the round trip, the counters, media arriving).
WATCH_INTERVAL: Final = 0.5

FrameSink: TypeAlias = Callable[[Frame], None]


class IceServerEntry(Protocol):
    """The shape of one ``iceServers`` entry (``kiosk.protocol.messages.IceServer`` has it)."""

    @property
    def urls(self) -> Sequence[str]: ...
    @property
    def username(self) -> str | None: ...
    @property
    def credential(self) -> str | None: ...


def rtc_configuration(ice_servers: Iterable[IceServerEntry], relay_only: bool) -> RTCConfiguration:
    """Our ICE servers only, never aiortc's default public STUN (an empty list stays empty);
    ``relay_only`` restricts ICE to the TURN relay.

    Not max-bundle, though it would save a round trip over a slow link (aiortc gathers
    a transport per section and tears the spare one down, a TURN deallocation, inside
    ``setRemoteDescription``): with it, Chromium's relay-only calls to the unit never
    connected (tests/e2e/test_browser_call.py::test_call_through_turn_only)."""
    servers = [RTCIceServer(urls=list(s.urls), username=s.username, credential=s.credential) for s in ice_servers]
    policy = RTCIceTransportPolicy.RELAY if relay_only else RTCIceTransportPolicy.ALL
    return RTCConfiguration(iceServers=servers, iceTransportPolicy=policy)


def ice_path(pc: RTCPeerConnection) -> str | None:
    """"relay" if the call's media goes through TURN, "direct" if not, None before ICE chose a pair.

    aiortc does not report the selected candidate pair in its stats; aioice keeps
    it in its connection (private names, read defensively)."""
    for transceiver in pc.getTransceivers():
        ice = getattr(getattr(transceiver.sender, "transport", None), "transport", None)
        connection = getattr(ice, "_connection", None)
        for pair in getattr(connection, "_nominated", {}).values():
            types = {getattr(pair.local_candidate, "type", None), getattr(pair.remote_candidate, "type", None)}
            return "relay" if "relay" in types else "direct"
    return None


@dataclass(frozen=True)
class _LinkSample:
    counters: Counters
    rtt: float | None  # seconds; None until measured
    video_fraction_lost: float | None  # 0..1, from the other side's latest receiver report on our video
    video_report_at: float | None  # when that report came (POSIX seconds); None: none yet


async def _link_sample(pc: RTCPeerConnection) -> _LinkSample:
    """The RTP counters, the measured round trip and the loss reported on our video."""
    received = lost = sent = 0
    rtts: list[float] = []
    video_lost: float | None = None
    video_report_at: float | None = None
    for stats in (await pc.getStats()).values():
        kind = getattr(stats, "type", None)
        if kind == "inbound-rtp":
            received += stats.packetsReceived
            lost += max(0, stats.packetsLost)
        elif kind == "outbound-rtp":
            sent += stats.bytesSent
        elif kind == "remote-inbound-rtp":
            if stats.roundTripTime is not None:
                rtts.append(stats.roundTripTime)
            if stats.kind == "video":
                video_lost = stats.fractionLost / 256  # RTCP's 8-bit fixed point
                video_report_at = stats.timestamp.timestamp()
    return _LinkSample(Counters(received, lost, sent), max(rtts) if rtts else None, video_lost, video_report_at)


def _cap_video_bitrate(pc: RTCPeerConnection, cap: int) -> int | None:
    """Hold our video encoders at or below ``cap`` bit/s (aiortc raises them again on each REMB);
    the target the encoder then has (None before it exists)."""
    target = None
    for sender in pc.getSenders():
        encoder: Any = getattr(sender, "_RTCRtpSender__encoder", None)  # aiortc keeps it private
        if sender.kind == "video" and getattr(encoder, "target_bitrate", 0) > cap:
            encoder.target_bitrate = cap
        if sender.kind == "video" and encoder is not None:
            target = int(encoder.target_bitrate)
    return target


def _sending_video(pc: RTCPeerConnection) -> SwappableTrack | None:
    """Our video track, followed through ``source`` from the sender's (the unit's self-view tap wraps it)."""
    for sender in pc.getSenders():
        track: object = sender.track
        while track is not None and not isinstance(track, SwappableTrack):
            track = getattr(track, "source", None)
        if sender.kind == "video" and isinstance(track, SwappableTrack):
            return track
    return None


class CallMediaError(Exception):
    """Media for the call could not be set up; the message says what to check."""


@dataclass
class LocalMedia:
    """What one side sends: its tracks, the preferred video codec, and how to close them."""

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


class CallPeer:
    """One call's peer connection, from opening the media to closing.

    ``on_state`` gets aiortc's connection state ("connecting", "connected",
    "failed", "closed") on every change while the peer is open; remote frames
    go to ``on_video_frame`` and ``on_audio_frame`` (a sink that raises is
    logged once per track and never ends the call). ``label`` names the peer
    in logs: a call id, never anything personal.
    """

    def __init__(
        self,
        configuration: RTCConfiguration,
        *,
        label: str = "call",
        on_state: Callable[[str], None] | None = None,
        on_video_frame: FrameSink | None = None,
        on_audio_frame: FrameSink | None = None,
        on_link: Callable[[LinkState], None] | None = None,
        gather_timeout: float = GATHER_TIMEOUT,
        clock: Clock = time.monotonic,
    ) -> None:
        install_prompt_dtls()  # a lost handshake flight costs 0.4 s, not OpenSSL's 1, 2, 4 s
        install_prompt_stun()  # a lost TURN request or ICE check costs 0.25 s, not aioice's 0.5, 1.5, 3.5 s
        self.configuration = configuration
        self.label = label
        self.gather_timeout = gather_timeout
        self._on_state = on_state
        self._on_video_frame = on_video_frame
        self._on_audio_frame = on_audio_frame
        self._on_link = on_link
        self._clock = clock
        self.pc: RTCPeerConnection | None = None
        self.media: LocalMedia | None = None
        self.freezes = FreezeCounter()
        self.link = LinkWatch()
        self.video_step = VideoStep()  # our video's size and rate on a narrow link
        self.hole_wait: float | None = None  # loss recovery's wait for a hole, as the round trip set it
        self.loss_cap = LossBasedCap()  # our video's cap from reported loss
        self.audio_frames = 0
        self.connected_at: float | None = None
        self.first_video_at: float | None = None
        self.first_audio_at: float | None = None
        self._pumps: list[asyncio.Task[None]] = []
        self._watcher: asyncio.Task[None] | None = None
        self._progress = asyncio.Event()  # set on every state change and remote frame
        self._closed = False
        self._quality: CallQuality | None = None
        self._prepared: tuple[str | None, str] | None = None  # (video mime, offer) made while ringing
        #: Connected (or connecting) with no media yet, before the answer: see :meth:`start_media`.
        self._held = False
        #: When ICE and DTLS first connected, held or not: before the answer when pre-connected.
        self.ice_connected_at: float | None = None

    # --- what it knows ------------------------------------------------------------

    @property
    def video_frames(self) -> int:
        """Remote video frames received and decoded so far."""
        return self.freezes.frames

    @property
    def connection_state(self) -> str:
        return str(self.pc.connectionState) if self.pc is not None else "new"

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def held(self) -> bool:
        """Set up before the answer and sending nothing yet (:meth:`start_media` ends it)."""
        return self._held

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

    # --- setting up -------------------------------------------------------------------

    async def open_media(self, opener: MediaOpener) -> LocalMedia:
        """Open the camera and microphone (or test sources) for this call, once."""
        if self.media is not None:
            return self.media
        try:
            media = await opener()
        except Exception as exc:  # any device or codec failure: the call ends as media-failed
            raise CallMediaError(f"could not open camera/microphone: {type(exc).__name__}: {exc}") from exc
        if self._closed:  # hung up while the devices opened
            await media.close()
            raise CallMediaError("the call ended while the camera and microphone opened")
        self.media = media
        return media

    async def prepare_offer(self, video_mime: str | None) -> None:
        """While the unit rings: a connection with every candidate gathered, sending nothing.

        Gathering means a TURN allocation, two round trips or more over a slow link
        (0.65 s at 300 ms, 1.15 s when a request is lost); done during the ring, it is
        out of the citizen's wait. No camera or microphone is opened: :meth:`offer`
        attaches them once the citizen has answered, if they match ``video_mime``
        (the codec offered first) and both exist; otherwise it makes a fresh offer."""
        pc = await self._fresh_connection()
        self._held = True
        video = pc.addTransceiver("video", direction="sendrecv")
        if video_mime:
            prefer_video_codec(video, video_mime)
        pc.addTransceiver("audio", direction="sendrecv")
        self._prepared = (video_mime, await self._describe(pc, pc.createOffer))

    def take_prepared_offer(self) -> tuple[str | None, str] | None:
        """The offer :meth:`prepare_offer` made, as (video mime, SDP), to send while it rings:
        taken, so that :meth:`offer` never hands out the same one again (its answer may come)."""
        prepared, self._prepared = self._prepared, None
        return prepared

    async def offer(self) -> str:
        """A connection sending our media, and its offer with every candidate: the prepared
        one (:meth:`prepare_offer`) if it suits our media, else a fresh one.

        Making an offer again drops the previous connection quietly (its
        "closed" is not the call's)."""
        prepared, self._prepared = self._prepared, None
        media = self.media or LocalMedia(None, None)
        if (prepared is not None and self.pc is not None and prepared[0] == media.video_mime
                and media.video is not None and media.audio is not None):
            self.start_media()
            return prepared[1]
        pc = await self._fresh_connection()
        video = pc.addTransceiver(media.video or "video", direction="sendrecv" if media.video else "recvonly")
        if media.video_mime:
            prefer_video_codec(video, media.video_mime)
        pc.addTransceiver(media.audio or "audio", direction="sendrecv" if media.audio else "recvonly")
        return await self._describe(pc, pc.createOffer)

    async def answer(self, offer_sdp: str, *, hold: bool = False) -> str:
        """Our answer to the other side's offer, sending our media, with every candidate.

        ``hold``: the offer came while the unit rings; the answer sends nothing until
        :meth:`start_media` (its transceivers send and receive, with no track yet)."""
        pc = await self._fresh_connection()
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        except Exception as exc:  # aiortc raises ValueError, InvalidStateError, ... for a bad SDP
            raise CallMediaError(f"the offer was refused: {type(exc).__name__}: {exc}") from exc
        if not pc.getTransceivers():
            raise CallMediaError("the offer was refused: it has no audio or video")
        if hold:  # ready to send, with nothing to send: start_media attaches the tracks
            self._held = True
            for transceiver in pc.getTransceivers():
                transceiver.direction = "sendrecv"
            return await self._describe(pc, pc.createAnswer)
        # As aiortc's own server example does: tracks added after the offer take
        # over the offer's transceivers, which then send as well as receive.
        media = self.media or LocalMedia(None, None)
        for track in (media.video, media.audio):
            if track is not None:
                pc.addTrack(track)
        return await self._describe(pc, pc.createAnswer)

    def start_media(self) -> None:
        """The citizen answered: attach our camera and microphone to the connection (set up
        while it rang) with ``replaceTrack``, and let it count as connected from now.

        No renegotiation: the other side sees RTP begin on the transceivers it already
        has, and each sender's encoder is made on its first frame, so video starts with a
        key frame. A connection that came up (or failed) while held is told on the loop's
        next turn: after the side has sent word of the answer, which must reach the server
        before "connected" does."""
        if self.pc is None or self._closed:
            raise CallMediaError("no connection was set up for this call, or it has ended")
        media = self.media or LocalMedia(None, None)
        for transceiver in self.pc.getTransceivers():
            track = media.video if transceiver.kind == "video" else media.audio
            if track is not None:
                transceiver.sender.replaceTrack(track)
        if self._held:
            self._held = False
            if self.connection_state in ("connected", "failed", "closed"):
                asyncio.get_running_loop().call_soon(self._report_current, self.pc)

    async def accept(self, answer_sdp: str) -> None:
        """The other side's answer to our offer."""
        if self.pc is None or self._closed:
            raise CallMediaError("no offer was made for this call, or it has ended")
        try:
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer_sdp, type="answer"))
        except Exception as exc:  # aiortc raises ValueError, InvalidStateError, ... for a bad SDP
            raise CallMediaError(f"the caller's answer was refused: {type(exc).__name__}: {exc}") from exc

    # --- waiting ----------------------------------------------------------------------

    async def wait_connected(self, timeout: float) -> None:
        """Until media is connected. Raises :class:`CallMediaError` if the connection
        failed or closed, ``TimeoutError`` after ``timeout`` seconds."""

        def connected() -> bool:
            state = self.connection_state
            if state in ("failed", "closed"):
                raise CallMediaError(f"media could not be set up: the connection is {state}")
            return state == "connected"

        await self._until(connected, timeout, lambda: f"media not connected ({self.connection_state})")

    async def wait_frames(self, video: int = 0, audio: int = 0, *, timeout: float) -> None:
        """Until at least ``video`` and ``audio`` remote frames have arrived (``TimeoutError`` if not)."""
        await self._until(lambda: self.video_frames >= video and self.audio_frames >= audio, timeout,
                          lambda: f"only {self.video_frames}/{video} video and {self.audio_frames}/{audio} "
                                  "audio frames")

    # --- the end ----------------------------------------------------------------------

    async def close(self) -> CallQuality | None:
        """Measure the call's quality (if media flowed), then release the connection
        and the media. Idempotent, and complete even when cancelled."""
        if self._closed:
            return self._quality
        self._closed = True
        try:
            if self.pc is not None and self.connected_at is not None:
                self.freezes.close(self._clock())
                try:
                    quality = await measure(self.pc, self.freezes, self.connected_at, self._clock)
                    self._quality = dataclasses.replace(quality, **self.link.record(), ice_path=ice_path(self.pc))
                except Exception as exc:  # stats are a nicety; closing the call is not
                    log.warning("%s: call quality could not be measured: %s", self.label, exc, exc_info=True)
        finally:  # even when cancelled: camera, microphone and sockets are released
            await self._release()
        return self._quality

    async def _release(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
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

    async def _fresh_connection(self) -> RTCPeerConnection:
        if self._closed:
            raise CallMediaError("the call has ended")
        old, self.pc = self.pc, None
        if old is not None:
            old.remove_all_listeners()
            with contextlib.suppress(Exception):
                await old.close()
        self._held = False
        self.ice_connected_at = None
        pc = self.pc = RTCPeerConnection(self.configuration)
        pc.on("connectionstatechange", self._state_changed)
        pc.on("track", self._remote_track)
        return pc

    async def _describe(self, pc: RTCPeerConnection, create: Callable[[], Awaitable[RTCSessionDescription]]) -> str:
        """Set our side's description; aiortc gathers every candidate in it, so the SDP is whole."""
        try:
            await asyncio.wait_for(pc.setLocalDescription(await create()), self.gather_timeout)
        except TimeoutError:
            raise CallMediaError(
                f"ICE gathering took longer than {self.gather_timeout:.0f} s; is the TURN server reachable?"
            ) from None
        except Exception as exc:  # closed under us, or aiortc refused its own description
            raise CallMediaError(f"could not create the session description: {type(exc).__name__}: {exc}") from exc
        description = pc.localDescription
        if pc.iceGatheringState != "complete" or description is None:
            raise CallMediaError(f"ICE gathering did not complete ({pc.iceGatheringState})")
        return str(description.sdp)

    async def _until(self, done: Callable[[], bool], timeout: float, what: Callable[[], str]) -> None:
        deadline = self._clock() + timeout
        while not done():
            remaining = deadline - self._clock()
            if remaining <= 0:
                raise TimeoutError(f"{self.label}: {what()} after {timeout} s")
            self._progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._progress.wait(), remaining)

    def _state_changed(self) -> None:
        pc = self.pc
        if pc is None:
            return
        state = str(pc.connectionState)
        if state == "connected" and self.ice_connected_at is None:
            self.ice_connected_at = self._clock()
        if self._held:  # before the answer: nothing flows, and the side is told at start_media
            log.info("%s: %s while it rings (no media yet)", self.label, state)
            self._progress.set()
            return
        self._report(state)

    def _report_current(self, pc: RTCPeerConnection) -> None:
        if pc is self.pc and not self._held and not self._closed:
            self._report(str(pc.connectionState))

    def _report(self, state: str) -> None:
        """The connection's state, told to the side; media counts as connected from here."""
        pc = self.pc
        assert pc is not None  # reported only for the current connection
        if state == "connected" and self.connected_at is None:
            self.connected_at = self._clock()
            self._watcher = asyncio.ensure_future(self._watch(pc))
        log.info("%s: media %s", self.label, state)
        self._progress.set()
        if self._on_state is not None and not self._closed:
            self._on_state(state)

    def _remote_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "video":
            metered = MeteredTrack(track, self.freezes, self._clock)
            self._pumps.append(asyncio.ensure_future(self._pump(metered, self._video_frame)))
        elif track.kind == "audio":
            self._pumps.append(asyncio.ensure_future(self._pump(track, self._audio_frame)))

    async def _watch(self, pc: RTCPeerConnection) -> None:
        """While connected: loss recovery follows the round trip; the link's state is told;
        media lost for good fails the connection."""
        while not self._closed and pc is self.pc:
            await asyncio.sleep(WATCH_INTERVAL)
            try:
                sample = await _link_sample(pc)
            except Exception:  # closing under us; stats are never worth a call
                log.debug("%s: link sample failed", self.label, exc_info=True)
                continue
            self.hole_wait = follow_round_trip(pc.getReceivers(), sample.rtt)
            cap = self.loss_cap.report(sample.video_report_at, sample.video_fraction_lost)
            now = self._clock()
            target = _cap_video_bitrate(pc, cap)
            stepped = self.video_step.observe(now, target)
            track = _sending_video(pc)
            if stepped is not None and track is not None:
                log.info("%s: video steps %s (the encoder aims at %s bit/s)", self.label,
                         "down" if stepped else "up", target)
                track.stepped_down = stepped
            change = self.link.observe(now, sample.counters)
            if change is not None:
                log.info("%s: link %s", self.label, change)
                if self._on_link is not None and not self._closed:
                    self._on_link(change)
            if self.link.gave_up(now):
                log.warning("%s: no media for %.0f s: the peers lost each other", self.label,
                            self.link.give_up_after)
                self._progress.set()
                if self._on_state is not None and not self._closed:
                    self._on_state("failed")
                return

    def _video_frame(self, frame: Frame) -> None:
        # MeteredTrack has counted it already; recv() returning means it was decoded.
        self.link.frame("video", self._clock())
        if self.first_video_at is None:
            self.first_video_at = self._clock()
        if self._on_video_frame is not None:
            self._on_video_frame(frame)

    def _audio_frame(self, frame: Frame) -> None:
        self.audio_frames += 1
        self.link.frame("audio", self._clock())
        if self.first_audio_at is None:
            self.first_audio_at = self._clock()
        if self._on_audio_frame is not None:
            self._on_audio_frame(frame)

    async def _pump(self, track: MediaStreamTrack, deliver: FrameSink) -> None:
        """Read every frame and hand it on."""
        complained = False
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            self._progress.set()
            if not isinstance(frame, Frame):  # a remote track yields decoded frames only
                continue
            try:
                deliver(frame)
            except Exception:  # a broken renderer or speaker must not end the citizen's call
                if not complained:  # once per track, not 30 times a second
                    log.exception("%s: a remote %s frame could not be delivered", self.label, track.kind)
                    complained = True
