"""One call as the caregiver sees it, from pressing "call" to the quality report.

The call is mirrored with the shared call state machine
(:class:`kiosk.protocol.call.Call`), as the unit mirrors its side: the rule
for who hung up, and whether media failed, is the machine's, never written
again here. The server is the authority: its
:class:`~kiosk.protocol.messages.CallEnded` reason is the call's reason; the
mirror decides only what the server does not tell us, our own hang-up (the
server tells the other side only) and a media failure we noticed first.
The server also keeps the ring and connect timers and tells us when they
run out, so the mirror's own are set beyond any call.

While the unit rings, its offer comes (:class:`~kiosk.protocol.messages.CallOffer`) and is
answered at once on a held connection: ICE and DTLS come up, our camera and microphone are
open but attached to nothing. The citizen's answer (:class:`~kiosk.protocol.messages.CallAnswer`
without SDP) attaches them: we send nothing for the minute a unit may ring over 4G, and
our video starts with a key frame from a fresh encoder when it matters. An answer with an
offer in it (an older unit, or a pre-connection that failed) is answered on a fresh connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any, Final, TypeAlias

from kiosk.media.keyframes import install_loss_recovery
from kiosk.media.link import LinkState
from kiosk.media.peer import GATHER_TIMEOUT, CallMediaError, CallPeer, LocalMedia, rtc_configuration
from kiosk.protocol import call as c
from kiosk.protocol import messages as m
from kiosk.protocol.machine import Clock

from .errors import CallEndedEarly, CallTimeout
from .media import TestMedia, open_test_media

__all__ = ["DEFAULT_TIMEOUT", "MEDIA_TIMEOUT", "CallResult", "CallTimes", "StaffCall"]

log = logging.getLogger("kiosk.caregiver")

#: Each wait is bounded; on loopback every step takes milliseconds, so this
#: only matters when something is broken, and then it says what.
DEFAULT_TIMEOUT: Final = 15.0
#: Media set-up is the server's to give up on (its connect timeout ends the call and
#: tells us); we wait as long as it does, so a slow but working link is not abandoned first.
MEDIA_TIMEOUT: Final = c.DEFAULT_CONNECT_TIMEOUT
#: The server's timers end an unanswered or unconnected call and tell us; the
#: mirror must never reach another verdict first.
_SERVER_KEEPS_THE_TIMERS: Final = c.CallConfig(ring_timeout=86400.0, connect_timeout=86400.0,
                                               ring_ack_timeout=86400.0)

Send: TypeAlias = Callable[[m.StaffToServer], Awaitable[None]]


@dataclass
class CallTimes:
    """When each step happened, on the client's clock (``time.monotonic`` by default).

    Message times are when the socket reader received them.
    """

    start_sent: float | None = None  # CallStart about to be sent ("call" pressed)
    placed: float | None = None  # CallPlaced received
    ringing: float | None = None  # CallRinging received: the unit rings
    ring_offer: float | None = None  # CallOffer received: the unit's offer while it rings
    offer: float | None = None  # CallAnswer received: the citizen answered (with an offer, if not pre-connected)
    accept_sent: float | None = None  # our CallAccept (the SDP answer) sent: while ringing, if pre-connected
    connected: float | None = None  # our peer connected (CallConnected sent)
    first_video_frame: float | None = None  # first remote video frame decoded
    first_audio_frame: float | None = None
    hang_up_sent: float | None = None
    ended: float | None = None  # CallEnded received, or our hang-up


@dataclass
class CallResult:
    """What one call came to: numbers and reasons, nothing personal."""

    call_id: str | None
    end_reason: c.EndReason | None  # None: the server refused to place the call (see ``refused``)
    facts: m.DeviceFacts | None
    video_frames: int
    audio_frames: int
    times: CallTimes
    quality: m.CallQuality | None = None
    error: str | None = None  # why media failed on our side, if it did
    refused: str | None = None  # the server's Rejected code, for a call it would not place

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["facts"] = m.to_builtins(self.facts) if self.facts is not None else None
        return out


class StaffCall:
    """One call, driven by the messages the client's socket reader hands it.

    Made by :meth:`kiosk.caregiver.CaregiverClient.place_call`. Its ``wait_*``
    methods return when a step is reached, raise :class:`CallEndedEarly` if
    the call ended first and :class:`CallTimeout` after ``timeout`` seconds.
    """

    def __init__(self, citizen_id: str, media: TestMedia, *, send: Send, on_over: Callable[[StaffCall], None],
                 prepare_media: bool, gather_timeout: float = GATHER_TIMEOUT, clock: Clock = time.monotonic) -> None:
        self.citizen_id = citizen_id
        self.media_spec = media
        self._send = send
        self._on_over = on_over
        self._prepare_media = prepare_media
        self._gather_timeout = gather_timeout
        self._clock = clock
        self.machine = c.Call(config=_SERVER_KEEPS_THE_TIMERS)
        self.times = CallTimes()
        self.placed: m.CallPlaced | None = None
        self.refused: m.Rejected | None = None
        self.peer: CallPeer | None = None
        self.end_reason: c.EndReason | None = None
        self.facts: m.DeviceFacts | None = None
        self.quality: m.CallQuality | None = None
        self.error: str | None = None
        #: What the caregiver is shown about the link, as (time, state), in order: "poor"
        #: and "lost" are the notice ("Dårlig forbindelse — billedet kan hakke"), "good" clears it.
        self.link_notices: list[tuple[float, LinkState]] = []
        #: Times the call socket dropped while media flowed and the call was taken up again.
        self.resumes = 0
        self._media_task: asyncio.Task[LocalMedia] | None = None
        self._answering: asyncio.Task[None] | None = None  # our SDP answer in the making
        self._tasks: set[asyncio.Task[Any]] = set()
        self._placed = asyncio.Event()
        self._ringing = asyncio.Event()
        self._offered = asyncio.Event()
        self._connected = asyncio.Event()
        self._ended = asyncio.Event()
        self._finished: asyncio.Task[None] | None = None

    @property
    def call_id(self) -> str | None:
        return self.placed.call_id if self.placed is not None else None

    @property
    def video_frames(self) -> int:
        return self.peer.video_frames if self.peer is not None else 0

    @property
    def audio_frames(self) -> int:
        return self.peer.audio_frames if self.peer is not None else 0

    @property
    def ended(self) -> bool:
        return self._ended.is_set()

    @property
    def in_call(self) -> bool:
        """Media connected and the call not over: it outlives the call socket."""
        return self.machine.state is c.CallState.IN_CALL and not self._ended.is_set()

    @property
    def link(self) -> LinkState:
        """The link as the caregiver is shown it now."""
        return self.link_notices[-1][1] if self.link_notices else LinkState.GOOD

    # --- waiting ------------------------------------------------------------------

    async def wait_placed(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        await self._wait(self._placed, "call-placed", timeout)

    async def wait_ringing(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        await self._wait(self._ringing, "ringing", timeout)

    async def wait_answered(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Until the citizen answered (the unit's offer arrived)."""
        await self._wait(self._offered, "the citizen's answer", timeout)

    async def wait_connected(self, timeout: float = MEDIA_TIMEOUT) -> None:
        await self._wait(self._connected, "media connected", timeout)

    async def wait_media(self, video: int = 1, audio: int = 1, timeout: float = MEDIA_TIMEOUT) -> None:
        """Until ``video`` and ``audio`` remote frames have been received."""
        deadline = self._clock() + timeout
        await self.wait_connected(timeout)
        assert self.peer is not None  # connected: the peer exists
        frames = asyncio.ensure_future(self.peer.wait_frames(video, audio, timeout=max(0.0, deadline - self._clock())))
        await self._wait(frames, f"{video} video and {audio} audio frames", timeout)

    async def wait_ended(self, timeout: float = DEFAULT_TIMEOUT) -> CallResult:
        """Until the call is over (and our side closed and reported); its result."""
        try:
            await asyncio.wait_for(self._ended.wait(), timeout)
        except TimeoutError:
            raise CallTimeout(f"the call did not end within {timeout} s") from None
        if self._finished is not None:
            await self._finished
        return self.result()

    async def _wait(self, step: asyncio.Event | asyncio.Future[None], what: str, timeout: float) -> None:
        """Until ``step`` (an event set, or a future done), unless the call ends first."""
        if isinstance(step, asyncio.Event) and step.is_set():
            return
        reached = asyncio.ensure_future(step.wait()) if isinstance(step, asyncio.Event) else step
        ender = asyncio.ensure_future(self._ended.wait())
        try:
            await asyncio.wait({reached, ender}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ender.cancel()
            if not reached.done():
                reached.cancel()
            await asyncio.gather(reached, ender, return_exceptions=True)
        if reached.done() and not reached.cancelled():
            try:
                reached.result()
            except TimeoutError as exc:
                raise CallTimeout(str(exc)) from None
            return
        if self._ended.is_set():
            raise CallEndedEarly(what, self.end_reason)
        raise CallTimeout(f"no {what} within {timeout} s (call {self.call_id})")

    # --- acting -------------------------------------------------------------------

    def press_call(self) -> m.CallStart:
        """The caregiver pressed "call": the mirror rings, and this is what to send."""
        self.times.start_sent = self._clock()
        self._mirror(c.Ring(), self.times.start_sent)
        return m.CallStart(citizen_id=self.citizen_id)

    async def hang_up(self) -> CallResult:
        """Hang up (or withdraw the call, before the answer); close the peer; report quality.

        Safe to call after the call ended: then it only waits for the closing.
        """
        if not self._ended.is_set():
            # The server feeds the page's hang-up to its machine as a Cancel
            # unless media is up, which ends an answered call the same way; so
            # does the mirror, and both reach the same verdict.
            self._mirror(c.Cancel(), self._clock())
            reason = self.machine.end_reason or c.EndReason.CANCELLED_BY_CALLER
            self._end(reason, None, tell_server="hung-up")
        if self._finished is not None:
            await self._finished
        return self.result()

    def result(self) -> CallResult:
        return CallResult(
            call_id=self.call_id, end_reason=self.end_reason, facts=self.facts,
            video_frames=self.video_frames, audio_frames=self.audio_frames, times=self.times,
            quality=self.quality, error=self.error,
            refused=self.refused.reason if self.refused is not None else None,
        )

    # --- the reader's side --------------------------------------------------------

    def belongs(self, message: m.ServerToStaff) -> bool:
        """Whether ``message`` is about this call (which is still going)."""
        if self.ended:
            return False
        if isinstance(message, m.CallPlaced):
            return self.placed is None
        if isinstance(message, m.Rejected):
            return True  # the socket carries one call: a refusal now is about it
        return message.call_id == self.call_id

    def on_message(self, message: m.ServerToStaff, at: float) -> None:
        """One message from the server for this call, received at ``at``."""
        match message:
            case m.CallPlaced():
                if self.placed is None:
                    self.placed = message
                    self.times.placed = at
                    log.info("call %s placed", message.call_id)
                    if self._prepare_media:  # as the page opens the camera before it calls
                        self._media_task = asyncio.ensure_future(open_test_media(self.media_spec))
                    self._placed.set()
            case m.CallRinging():
                if self._mirror(c.RingAck(), at):
                    self.times.ringing = at
                self._ringing.set()
            case m.CallOffer(sdp=sdp):
                if self.machine.state is c.CallState.RINGING:
                    self.times.ring_offer = at
                    self._answer_offer(sdp, hold=True)
            case m.CallAnswer(sdp=sdp):
                if self._mirror(c.Answer(), at):
                    self.times.offer = at
                    self._offered.set()
                    if sdp is None:
                        self._spawn(self._start_media())
                    else:
                        self._answer_offer(sdp, hold=False)
            case m.CallEnded(reason=reason, facts=facts):
                self.times.ended = at
                self._end(reason, facts)
            case m.Rejected(reason=reason, detail=detail):
                if self.placed is None:
                    self.refused = message
                    self._end(None, None)
                else:  # e.g. our SDP answer refused; the call's end follows from the server
                    log.warning("call %s: the server refused a message: %s (%s)", self.call_id, reason, detail)

    def resumed(self) -> None:
        """The call socket is open again and the server has the call (a server restart is behind us)."""
        self.resumes += 1
        log.info("call %s resumed", self.call_id)

    def connection_lost(self) -> None:
        """The call socket closed: the server ends the call as our hang-up then, and so do we."""
        if not self._ended.is_set():
            self.error = self.error or "the call socket closed"
            self._mirror(c.HangUp(c.Side.STAFF), self._clock())
            self._end(self.machine.end_reason or c.EndReason.CANCELLED_BY_CALLER, None)

    # --- internals ----------------------------------------------------------------

    def _mirror(self, event: c.Event, at: float) -> bool:
        """Feed the mirrored call machine; whether the event changed the call."""
        transition = c.step(self.machine, event, at)
        self.machine = transition.state
        return not any(isinstance(effect, c.Ignored) for effect in transition.actions)

    def _spawn(self, work: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _media(self) -> LocalMedia:
        if self._media_task is None:
            self._media_task = asyncio.ensure_future(open_test_media(self.media_spec))
        return await self._media_task

    def _answer_offer(self, offer_sdp: str, hold: bool) -> None:
        """Answer the unit's offer, replacing any answer before it (the newest offer counts)."""
        previous, self._answering = self._answering, asyncio.ensure_future(self._answer(offer_sdp, hold))
        if previous is not None:
            previous.cancel()
        self._tasks.add(self._answering)
        self._answering.add_done_callback(self._tasks.discard)

    async def _answer(self, offer_sdp: str, hold: bool) -> None:
        """``hold``: the unit rings; the connection comes up with nothing sent until :meth:`_start_media`."""
        assert self.placed is not None  # the server answers only a placed call
        call_id = self.placed.call_id
        install_loss_recovery()  # as the unit does: a lost packet must not freeze our picture for seconds
        previous, peer = self.peer, CallPeer(
            rtc_configuration(self.placed.ice_servers, self.placed.relay_only), label=f"call {call_id}",
            on_state=self._peer_state, on_link=self._link_changed, gather_timeout=self._gather_timeout,
            clock=self._clock)
        self.peer = peer
        if previous is not None:  # a connection made while it rang, which the unit gave up
            previous.media = None  # our camera and microphone stay open, for the new connection
            await previous.close()
        try:
            await peer.open_media(self._media)
            sdp = await peer.answer(offer_sdp, hold=hold)
        except CallMediaError as exc:  # media or ICE: the page reports media-failed too
            self.error = f"could not answer the offer: {exc}"
            log.warning("call %s: %s", call_id, self.error)
            if hold:  # while it rings the call is not ours to fail: the answer will find no connection
                peer.media = None  # our camera and microphone stay open for a fresh offer
                await peer.close()
                self.peer = None if self.peer is peer else self.peer
            else:
                self._media_failed()
            return
        if self._ended.is_set():
            return
        await self._send(m.CallAccept(call_id=call_id, sdp=sdp))
        self.times.accept_sent = self._clock()

    async def _start_media(self) -> None:
        """The citizen answered on the connection made while it rang: our media goes on it."""
        if self._answering is not None:  # our answer to the ring's offer may still be on its way
            await asyncio.gather(asyncio.shield(self._answering), return_exceptions=True)
        peer = self.peer
        try:
            if peer is None or not peer.held:
                raise CallMediaError(self.error or "the unit answered on a connection we did not make")
            peer.start_media()
        except CallMediaError as exc:
            self.error = str(exc)
            log.warning("call %s: %s", self.call_id, self.error)
            self._media_failed()

    def _peer_state(self, state: str) -> None:
        call_id = self.call_id
        if call_id is None or self._ended.is_set():
            return
        if state == "connected" and self._mirror(c.MediaConnected(), self._clock()):
            self.times.connected = self._clock()
            self._connected.set()
            self._spawn(self._send(m.CallConnected(call_id=call_id)))
        elif state == "failed":
            self.error = self.error or "ICE/DTLS failed"
            self._media_failed()

    def _link_changed(self, state: LinkState) -> None:
        if not self._ended.is_set():
            self.link_notices.append((self._clock(), state))

    def _media_failed(self) -> None:
        self._mirror(c.MediaFailed(), self._clock())
        self._end(self.machine.end_reason or c.EndReason.MEDIA_FAILED, None, tell_server="media-failed")

    def _end(self, reason: c.EndReason | None, facts: m.DeviceFacts | None,
             tell_server: m.HangUpReason | None = None) -> None:
        """The call is over (``reason`` None: the server refused it); close and report in the background."""
        if self._ended.is_set():
            return
        self.end_reason = reason
        self.facts = facts
        if self.times.ended is None:
            self.times.ended = self._clock()
        log.info("call %s ended: %s", self.call_id, reason or "refused")
        self._ended.set()
        self._finished = asyncio.ensure_future(self._finish(tell_server))

    async def _finish(self, tell_server: m.HangUpReason | None) -> None:
        """After the end: our hang-up, if we ended it, then the quality report on
        the same socket (so the server has ended the call when it arrives), then close."""
        if self.peer is not None:
            self.times.first_video_frame = self.peer.first_video_at
            self.times.first_audio_frame = self.peer.first_audio_at
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        call_id = self.call_id
        try:
            if call_id is not None and tell_server is not None:
                with contextlib.suppress(ConnectionError):
                    await self._send(m.CallHangUp(call_id=call_id, reason=tell_server))
                    self.times.hang_up_sent = self._clock()
            if self.peer is not None:
                quality = await self.peer.close()
                self.quality = quality.as_record() if quality is not None else None
                if self.quality is not None and call_id is not None:
                    with contextlib.suppress(ConnectionError):
                        await self._send(m.CallQualityReport(call_id=call_id, quality=self.quality))
        finally:
            if self.peer is not None:
                await self.peer.close()
            elif self._media_task is not None:
                self._media_task.cancel()
                media = (await asyncio.gather(self._media_task, return_exceptions=True))[0]
                if isinstance(media, LocalMedia):
                    await media.close()
            self._on_over(self)
