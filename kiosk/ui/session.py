"""The running UI, minus the drawing: agent socket + controller + call peers.

:class:`UiSession` feeds every event (the agent's messages, button presses,
the peer's state, deadlines) one at a time through
:func:`kiosk.ui.controller.step`, carries out the actions it returns, and
reports each new :class:`~kiosk.ui.controller.Screen` to ``on_screen``. The
headless CLI prints those screens; the Kivy app (a later issue) draws them and
calls :meth:`UiSession.press_answer` / :meth:`UiSession.press_hang_up`.

Slow work (opening the camera, gathering ICE, closing a peer) runs in tasks
that report back as events, so a press of hang-up is never stuck behind it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from kiosk.media.encoders import VP8_MIME
from kiosk.media.link import LinkState
from kiosk.media.swappable import SwappableTrack
from kiosk.protocol import messages as m
from kiosk.protocol.screenshot import shows_picture
from kiosk.ui import controller as ui
from kiosk.ui import memory
from kiosk.ui.agent_client import AgentClient
from kiosk.ui.call_peer import (
    GATHER_TIMEOUT,
    AudioSink,
    CallMediaError,
    CountingAudioSink,
    DeviceCall,
    LocalMedia,
    MediaOpener,
    VideoSink,
)
from kiosk.ui.screen_capture import CaptureError
from kiosk.ui.self_view import TappedTrack

log = logging.getLogger("kiosk.ui")

#: On stop, how long an ending call may take to close and report its quality.
STOP_TIMEOUT = 5.0
#: When the staff browser hangs up it closes its peer (DTLS close, straight to
#: us) and tells the server (whose call-ended reaches us a moment later). Give
#: the server's word this long to arrive, so the screen says "the caller hung
#: up" and we do not report a media failure that was none.
REMOTE_CLOSE_GRACE = 2.0
#: How often the wall clock is read for the clock on screen, reminders and night hours.
WALL_CLOCK_SECONDS = 5.0


def local_wall_clock(now: float | None = None) -> ui.WallClock:
    """The wall clock (``now`` or the time now), with that moment's offset from UTC (summer time followed)."""
    now = time.time() if now is None else now
    return ui.WallClock(now, float(time.localtime(now).tm_gmtoff))


def _log_volume(level: int) -> None:
    log.info("volume %d of %d (no speaker control attached)", level, ui.VOLUME_STEPS)


def _log_chime() -> None:
    log.info("reminder chime (no speaker attached)")


def _log_consent(answer: ui.ConsentGiven) -> None:
    log.info("look at the screen %s: %s", answer.request_id, answer.answer)


def _log_ring(ring: m.CallRing | None) -> None:
    log.info("ring tone %s (no speaker attached)", "on" if ring is not None else "off")


def _log_test_ring() -> None:
    log.info("test ring tone on (no speaker attached)")


async def _no_speaker() -> tuple[m.RingSound, str | None]:
    return "no-speaker", None


@dataclass(frozen=True)
class Effects:
    """What the session does for the sound actions (the speaker and chime plug in here;
    logged without them), and whom it tells of a consent answer besides the agent.

    ``test_ring`` rings for support's test (stopped by ``ring(None)`` like a call's ring);
    ``test_ring_sound`` says, once it stopped, what became of that ring's sound."""

    set_volume: Callable[[int], None] = _log_volume
    chime: Callable[[], None] = _log_chime
    consent: Callable[[ui.ConsentGiven], None] = _log_consent
    ring: Callable[[m.CallRing | None], None] = _log_ring  # the ring tone and announcement; None stops them
    test_ring: Callable[[], None] = _log_test_ring
    test_ring_sound: Callable[[], Awaitable[tuple[m.RingSound, str | None]]] = _no_speaker


class UiSession:
    def __init__(
        self,
        client: AgentClient,
        open_media: MediaOpener,
        *,
        on_screen: Callable[[ui.Screen], None] = lambda _screen: None,
        on_video_frame: VideoSink | None = None,
        on_self_frame: VideoSink | None = None,
        audio_sink: Callable[[], AudioSink] = CountingAudioSink,
        screen_awake: bool = True,
        settings: ui.Settings | None = None,
        effects: Effects | None = None,
        read_wall_clock: Callable[[], ui.WallClock] = local_wall_clock,
        gather_timeout: float = GATHER_TIMEOUT,
        remote_close_grace: float = REMOTE_CLOSE_GRACE,
        clock: Callable[[], float] = time.monotonic,
        capture: Callable[[], Awaitable[bytes]] | None = None,
        settings_changed: Callable[[], ui.Settings | None] = lambda: None,
    ) -> None:
        self.client = client
        self.remote_close_grace = remote_close_grace
        self._open_media = open_media
        self._on_screen = on_screen
        self._on_video_frame = on_video_frame
        self._on_self_frame = on_self_frame
        self._audio_sink = audio_sink
        self._gather_timeout = gather_timeout
        self._clock = clock
        self._capture = capture  # a picture of the screen as a PNG; None: headless, there is none
        self._settings_changed = settings_changed  # asked after each status from the agent
        self._read_wall_clock = read_wall_clock
        self.effects = effects or Effects()
        self.state = ui.initial_state(clock(), screen_awake, settings)
        self.state = ui.step(self.state, read_wall_clock(), clock()).state
        self.screen = ui.screen(self.state)
        self.peers: dict[str, DeviceCall] = {}
        #: Peers gathering while their call rings, not answered yet (see DeviceCall.prepare).
        self.ringing: dict[str, DeviceCall] = {}
        #: The codec the last call's media offered first: the next ring gathers for it.
        self._video_mime: str | None = VP8_MIME
        self.last_call: DeviceCall | None = None  # kept after it closed: its counters stay readable
        #: Peers whose closing has begun and not finished: a stop that cannot wait for it
        #: (its time is up) closes them itself, so no speaker plays on after the screen stopped.
        self._closing: set[DeviceCall] = set()
        self._events: asyncio.Queue[ui.Event] = asyncio.Queue()
        self._tasks: set[asyncio.Task[None]] = set()
        self._stop_at: float | None = None

    # --- input --------------------------------------------------------------------

    def post(self, event: ui.Event) -> None:
        self._events.put_nowait(event)

    def press_answer(self, call_id: str | None = None) -> None:
        self.post(ui.AnswerPressed(call_id))

    def press_hang_up(self, call_id: str | None = None) -> None:
        self.post(ui.HangUpPressed(call_id))

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """End :meth:`run`: a call with media ends (as media-failed: the citizen did
        not choose it), its quality is reported, then the socket closes."""
        if self._stop_at is None:
            self._stop_at = self._clock() + timeout
            view = self.state.call
            if view is not None and view.peer != "none" and not view.ended:
                self.post(ui.MediaDown(view.call_id, "the UI is stopping"))
            else:
                self.post(ui.TimePassed())  # wake the loop

    # --- the loop -----------------------------------------------------------------

    async def run(self) -> None:
        reader = asyncio.create_task(self._read_agent(), name="ui-agent-reader")
        wall = asyncio.create_task(self._read_wall(), name="ui-wall-clock")
        self._on_screen(self.screen)
        try:
            while not self._finished():
                try:
                    event = await asyncio.wait_for(self._events.get(), self._wait())
                except TimeoutError:
                    event = ui.TimePassed()
                await self.handle(event)
        finally:
            reader.cancel()
            wall.cancel()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(reader, wall, *self._tasks, return_exceptions=True)
            for peer in [*self.peers.values(), *self.ringing.values(), *self._closing]:
                await self._end(peer)
            self.peers.clear()
            self.ringing.clear()
            self._closing.clear()
            await self.client.close()

    async def handle(self, event: ui.Event) -> None:
        """One event through the controller; the screen first, then the actions."""
        transition = ui.step(self.state, event, self._clock())
        self.state = transition.state
        new_screen = ui.screen(self.state)
        # New settings may change the words and sizes of the same screen: drawn again.
        if new_screen != self.screen or isinstance(event, ui.SettingsChanged):
            self.screen = new_screen
            self._on_screen(new_screen)
        for action in transition.actions:
            await self._do(action)

    def _finished(self) -> bool:
        if self._stop_at is None:
            return False
        idle = not self._tasks and self._events.empty()
        return idle or self._clock() >= self._stop_at

    def _wait(self) -> float | None:
        deadline = ui.next_deadline(self.state)
        wait = None if deadline is None else max(0.0, deadline - self._clock())
        if self._stop_at is not None:  # look at the tasks again soon
            wait = min(wait if wait is not None else 0.05, 0.05)
        return wait

    async def _read_wall(self) -> None:
        while True:
            await asyncio.sleep(WALL_CLOCK_SECONDS)
            self.post(self._read_wall_clock())

    async def _read_agent(self) -> None:
        async for event in self.client.events():
            if isinstance(event, m.Rejected):
                log.warning("the agent refused a message: %s", event.reason)
            self.post(event)
            if isinstance(event, m.AgentStatus) and (settings := self._settings_changed()) is not None:
                log.info("the screen's settings changed")
                self.post(ui.SettingsChanged(settings))

    # --- actions ------------------------------------------------------------------

    async def _do(self, action: ui.Action) -> None:
        match action:
            case ui.Send(message=message):
                await self.client.send(message)
            case ui.StartPeer(ring=ring, preconnected=preconnected):
                started = self.ringing.pop(ring.call_id, None) or self._start_peer(ring)
                self.peers[ring.call_id] = self.last_call = started
                self._spawn(self._offer(started, preconnected))
            case ui.AcceptAnswer(call_id=call_id, sdp=sdp):
                accepting = self.peers.get(call_id) or self.ringing.get(call_id)  # answered or still ringing
                if accepting is not None:
                    self._spawn(self._accept(accepting, sdp))
            case ui.ClosePeer(call_id=call_id):
                closing = self.peers.pop(call_id, None) or self.ringing.pop(call_id, None)
                if closing is not None:
                    self._closing.add(closing)
                    self._spawn(self._close(closing))
            case ui.SetCamera(call_id=call_id, on=on) | ui.SetMicrophone(call_id=call_id, on=on):
                self._mute(call_id, "video" if isinstance(action, ui.SetCamera) else "audio", not on)
            case ui.SetVolume(level=level):
                self.effects.set_volume(level)
            case ui.Chime():
                self.effects.chime()
            case ui.ConsentGiven():
                self.effects.consent(action)
                self._spawn(self._reply_to_look(action))
            case ui.StartRinging(ring=ring):
                self.effects.ring(ring)
                if ring.call_id not in self.peers:  # connect while it rings: out of the citizen's wait
                    ringing = self.ringing[ring.call_id] = self._start_peer(ring)
                    ringing.prepare(self._video_mime)
                    self._spawn(self._offer_while_ringing(ringing))
            case ui.StartTestRinging():
                self.effects.test_ring()
            case ui.RingTestOver():
                self._spawn(self._reply_to_test_ring(action))
            case ui.StopRinging(call_id=call_id):
                self.effects.ring(None)
                unanswered = self.ringing.pop(call_id, None)  # answered: StartPeer took it first
                if unanswered is not None:
                    self._closing.add(unanswered)
                    self._spawn(self._close(unanswered))

    async def _reply_to_look(self, given: ui.ConsentGiven) -> None:
        """The citizen's answer to the agent, with the picture only after a yes (or when nobody
        was asked). The picture goes from memory to the socket: never to disk, never to a log."""
        png, error = None, None
        if shows_picture(given.answer):
            try:
                if self._capture is None:
                    raise CaptureError("this screen runs without a window (headless): there is no picture")
                png = await self._capture()
            except CaptureError as exc:
                log.warning("no picture of the screen: %s", exc)
                error = str(exc)
        await self.client.send(m.ScreenshotReply(request_id=given.request_id, answer=given.answer, png=png,
                                                 error=error))

    async def _reply_to_test_ring(self, over: ui.RingTestOver) -> None:
        """How support's test ring went, with its sound as the speaker knows it (it never rang in a call)."""
        sound, problem = (None, None) if over.answer == "in-call" else await self.effects.test_ring_sound()
        heard = m.RingTestHeard(over.answer, over.answered_after, sound, problem if sound == "failed" else None)
        log.info("test ring %s: %s, sound %s", over.request_id, over.answer, sound)
        await self.client.send(m.RingTestReply(request_id=over.request_id, heard=heard))

    async def _media_with_self_view(self) -> LocalMedia:
        media = await self._open_media()
        if self._on_self_frame is not None and media.video is not None:
            media.video = TappedTrack(media.video, self._on_self_frame)
        return media

    def _mute(self, call_id: str, kind: str, muted: bool) -> None:
        """The citizen's camera or sound off/on: the call's track sends its filler meanwhile."""
        peer = self.peers.get(call_id)
        media = peer.peer.media if peer is not None else None
        track = None if media is None else media.video if kind == "video" else media.audio
        if isinstance(track, TappedTrack):
            track = track.source
        if isinstance(track, SwappableTrack):
            track.muted = muted
        else:
            log.warning("call %s: the %s track cannot be turned off (%s)", call_id, kind, type(track).__name__)

    def _start_peer(self, ring: m.CallRing) -> DeviceCall:
        call_id = ring.call_id

        def on_state(state: str) -> None:
            self._peer_state(call_id, state)

        def on_link(link: LinkState) -> None:  # "Dårlig forbindelse" on the citizen's screen
            self.post(ui.LinkChanged(call_id, link.value))

        peer = DeviceCall(
            ring,
            self._media_with_self_view,
            on_state=on_state,
            on_link=on_link,
            on_video_frame=self._on_video_frame,
            audio_sink=self._audio_sink(),
            gather_timeout=self._gather_timeout,
            clock=self._clock,
        )
        return peer

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _peer_state(self, call_id: str, state: str) -> None:
        if state == "connected":
            self.post(ui.MediaUp(call_id))
        elif state == "failed":
            self.post(ui.MediaDown(call_id, "connection failed"))
        elif state == "closed":  # by the other side: most likely staff hung up, see REMOTE_CLOSE_GRACE
            asyncio.get_running_loop().call_later(
                self.remote_close_grace, self.post, ui.MediaDown(call_id, "closed by the other side"))

    async def _offer(self, peer: DeviceCall, preconnected: bool) -> None:
        try:
            offer = await peer.answer(preconnected)
            media = peer.peer.media
            if media is not None and media.video_mime:  # the next ring gathers for the same codec
                self._video_mime = media.video_mime
            self.post(ui.OfferReady(offer))
        except CallMediaError as exc:
            log.warning("call %s: %s", peer.call_id, exc)
            self.post(ui.MediaDown(peer.call_id, str(exc)))

    async def _offer_while_ringing(self, peer: DeviceCall) -> None:
        offer = await peer.ring_offer()
        if offer is not None:
            self.post(ui.OfferReady(offer))

    async def _accept(self, peer: DeviceCall, sdp: str) -> None:
        try:
            await peer.accept(sdp)
        except CallMediaError as exc:
            log.warning("call %s: %s", peer.call_id, exc)
            self.post(ui.MediaDown(peer.call_id, str(exc)))

    async def _end(self, peer: DeviceCall) -> m.CallQualityReport | None:
        """Hang ``peer`` up and close its speaker sink: the caller's voice stops at
        once and the player process ends with the call, not some seconds later."""
        report = await peer.hang_up()
        close_sink = getattr(peer.audio_sink, "close", None)  # a headless sink has nothing to close
        if close_sink is not None:
            await close_sink()
        return report

    async def _close(self, peer: DeviceCall) -> None:
        report = await self._end(peer)
        self._closing.discard(peer)  # not when cancelled half-way: then the stop closes it
        memory.give_back()
        if report is not None:
            self.post(ui.QualityReady(report))
