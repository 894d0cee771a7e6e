"""A caregiver's call client in Python: what the console page does for a call, without a browser.

It speaks exactly what ``kiosk/server/static/caregiver.js`` speaks to the server:
log in (``POST /api/login``, session cookie), open the call socket
(``/api/calls/socket``), send :class:`~kiosk.protocol.messages.CallStart`, and
answer the unit's SDP offer (the :class:`~kiosk.protocol.messages.CallAnswer`
sent when the citizen presses answer) with an aiortc peer, SDP whole, no trickle.

Why it exists: ``make demo`` can drive a real call where no browser is at hand,
the call benchmark (``bench/calls.py``) needs a caller whose every step it can
time, and end-to-end tests need a caregiver that counts what it receives. Its
media are ``lavfi`` test sources (:mod:`kiosk.media.sources`), so it runs on any
machine with PyAV.

The peer is configured with the ICE servers the server sent in
:class:`~kiosk.protocol.messages.CallPlaced` and nothing else (an empty list
stays empty: aiortc would otherwise ask a public STUN server), and
``relay_only`` becomes the ``relay`` ICE transport policy, as on the page.

Every step is timed on :func:`time.monotonic` (system-wide on Linux, so other
local processes' timestamps compare) when the message is *received* by the
socket reader, not when someone gets round to awaiting it. At the end it sends
the call's quality report (:mod:`kiosk.media.stats`: numbers only) as the page
does. Logs carry call ids, steps and reasons only: never the citizen's name
(which :class:`~kiosk.protocol.messages.CallPlaced` carries), SDP or credentials.

    async with CaregiverClient("http://127.0.0.1:8080") as anne:
        await anne.login("anne", password)
        result = await anne.call(citizen_id, talk_seconds=5)

or, one call from a shell (the password on stdin)::

    python -m kiosk.server.call_client --console URL --user anne --citizen ID --password-stdin
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any, Final

import aiohttp
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from kiosk.media.sources import lavfi_pattern_spec, lavfi_tone_spec, open_source
from kiosk.media.stats import FreezeCounter, MeteredTrack, measure
from kiosk.media.swappable import SwappableTrack
from kiosk.protocol import messages as m
from kiosk.protocol.errors import ProtocolError
from kiosk.ui.call_peer import LocalMedia, MediaOpener, rtc_configuration

__all__ = [
    "AnsweringPeer",
    "CallEndedEarly",
    "CallError",
    "CallRefused",
    "CallResult",
    "CallTimeout",
    "CallTimes",
    "CaregiverClient",
    "LoginFailed",
    "StaffCall",
    "TestMedia",
    "open_test_media",
]

log = logging.getLogger("kiosk.call_client")

#: Each wait is bounded; on loopback every step takes milliseconds, so this
#: only matters when something is broken, and then it says what.
DEFAULT_TIMEOUT: Final = 15.0
#: aiortc gathers every candidate inside setLocalDescription; only an
#: unreachable TURN server makes that slow (the unit uses the same bound).
GATHER_TIMEOUT: Final = 15.0
Clock = Callable[[], float]


# --------------------------------------------------------------------------- errors


class CallError(Exception):
    """A call could not go the way it was asked to; the message says what happened."""


class LoginFailed(CallError):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"login refused (HTTP {status}): {text[:200]}")
        self.status = status


class CallRefused(CallError):
    """The server refused the call (``reason`` is the Rejected code, e.g. ``forbidden``)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"call refused: {reason}: {detail}")
        self.reason = reason
        self.detail = detail


class CallEndedEarly(CallError):
    """The call ended before the step that was waited for (``reason``: the server's EndReason)."""

    def __init__(self, waited_for: str, reason: str | None) -> None:
        super().__init__(f"the call ended ({reason}) before {waited_for}")
        self.reason = reason


class CallTimeout(CallError):
    pass


# --------------------------------------------------------------------------- media


@dataclass(frozen=True)
class TestMedia:
    """The caller's camera and microphone: a lavfi test pattern and tone.

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


# --------------------------------------------------------------------------- the peer


class AnsweringPeer:
    """The caller's aiortc peer: answers the unit's offer with ``open_media``'s
    tracks and consumes (and counts) everything the unit sends.

    Remote tracks must be read, or aiortc's queues grow; video is read through
    :class:`MeteredTrack`, as on the unit, so freezes are counted the same way.
    ``on_state`` gets aiortc's connection state on every change.
    """

    def __init__(
        self,
        configuration: RTCConfiguration,
        open_media: MediaOpener,
        *,
        on_state: Callable[[str], None] | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self.configuration = configuration
        self.pc = RTCPeerConnection(configuration)
        self._open_media = open_media
        self._on_state = on_state
        self._clock = clock
        self.media: LocalMedia | None = None
        self.freezes = FreezeCounter()
        self.audio_frames = 0
        self.connected_at: float | None = None
        self.first_video_at: float | None = None
        self.first_audio_at: float | None = None
        self._pumps: list[asyncio.Task[None]] = []
        self._closed = False
        self.pc.on("track", self._remote_track)
        self.pc.on("connectionstatechange", self._state_changed)

    @property
    def video_frames(self) -> int:
        """Remote video frames received and decoded so far."""
        return self.freezes.frames

    @property
    def connection_state(self) -> str:
        return str(self.pc.connectionState)

    async def answer(self, offer_sdp: str, gather_timeout: float = GATHER_TIMEOUT) -> str:
        """Our SDP answer to the unit's offer, with every ICE candidate in it."""
        media = self.media = await self._open_media()
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        # As aiortc's own server example does: tracks added after the offer take
        # over the offer's transceivers, which then send as well as receive.
        for track in (media.video, media.audio):
            if track is not None:
                self.pc.addTrack(track)
        try:
            await asyncio.wait_for(self.pc.setLocalDescription(await self.pc.createAnswer()), gather_timeout)
        except TimeoutError:
            raise CallTimeout(f"ICE gathering took longer than {gather_timeout:.0f} s; "
                              "is the TURN server reachable?") from None
        description = self.pc.localDescription
        assert description is not None  # set just above
        return str(description.sdp)

    async def wait_connected(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        deadline = self._clock() + timeout
        while self.pc.connectionState != "connected":
            if self.pc.connectionState in ("failed", "closed"):
                raise CallError(f"media could not be set up: the connection is {self.pc.connectionState}")
            if self._clock() >= deadline:
                raise CallTimeout(f"media not connected after {timeout} s ({self.pc.connectionState})")
            await asyncio.sleep(0.01)

    async def wait_frames(self, video: int = 0, audio: int = 0, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Until at least ``video`` and ``audio`` remote frames have arrived."""
        deadline = self._clock() + timeout
        while self.video_frames < video or self.audio_frames < audio:
            if self._clock() >= deadline:
                raise CallTimeout(f"only {self.video_frames}/{video} video and {self.audio_frames}/{audio} "
                                  f"audio frames after {timeout} s")
            await asyncio.sleep(0.01)

    async def quality(self) -> dict[str, float | int | None] | None:
        """The call's quality record, if media flowed (numbers only)."""
        if self.connected_at is None or self.pc.connectionState == "closed":
            return None
        self.freezes.close(self._clock())
        report = await measure(self.pc, self.freezes, self.connected_at, self._clock)
        return dict(report.as_record())

    async def close(self) -> None:
        """Close the peer and the media. Idempotent, and complete even when cancelled."""
        if self._closed:
            return
        self._closed = True
        try:
            with contextlib.suppress(Exception):
                await self.pc.close()
        finally:
            for pump in self._pumps:
                pump.cancel()
            await asyncio.gather(*self._pumps, return_exceptions=True)
            if self.media is not None:
                with contextlib.suppress(Exception):
                    await self.media.close()

    def _state_changed(self) -> None:
        state = str(self.pc.connectionState)
        if state == "connected" and self.connected_at is None:
            self.connected_at = self._clock()
        if self._on_state is not None and not self._closed:
            self._on_state(state)

    def _remote_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "video":
            self._pumps.append(asyncio.ensure_future(
                self._pump(MeteredTrack(track, self.freezes, self._clock), self._video_frame)))
        elif track.kind == "audio":
            self._pumps.append(asyncio.ensure_future(self._pump(track, self._audio_frame)))

    def _video_frame(self) -> None:
        # MeteredTrack has counted it already; recv() returning means it was decoded.
        if self.first_video_at is None:
            self.first_video_at = self._clock()

    def _audio_frame(self) -> None:
        self.audio_frames += 1
        if self.first_audio_at is None:
            self.first_audio_at = self._clock()

    async def _pump(self, track: MediaStreamTrack, arrived: Callable[[], None]) -> None:
        while True:
            try:
                await track.recv()
            except MediaStreamError:
                return
            arrived()


# --------------------------------------------------------------------------- one call


@dataclass
class CallTimes:
    """When each step happened, on the client's clock (``time.monotonic`` by default).

    Message times are when the socket reader received them.
    """

    start_sent: float | None = None  # CallStart about to be sent ("call" pressed)
    placed: float | None = None  # CallPlaced received
    ringing: float | None = None  # CallRinging received: the unit rings
    offer: float | None = None  # CallAnswer received: the citizen answered, with the unit's offer
    accept_sent: float | None = None  # our CallAccept (the SDP answer) sent
    connected: float | None = None  # our peer connected (CallConnected sent)
    first_video_frame: float | None = None  # first remote video frame decoded
    first_audio_frame: float | None = None
    hang_up_sent: float | None = None
    ended: float | None = None  # CallEnded received, or our hang-up


@dataclass
class CallResult:
    """What one call came to: numbers and reasons, nothing personal."""

    call_id: str | None
    end_reason: str | None  # an EndReason value; for our own hang-up, the page's verdict
    facts: m.DeviceFacts | None
    video_frames: int
    audio_frames: int
    times: CallTimes
    quality: dict[str, float | int | None] | None = None
    error: str | None = None  # why media failed on our side, if it did

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["facts"] = m.to_builtins(self.facts) if self.facts is not None else None
        return out


class StaffCall:
    """One call as the caller sees it, driven by the messages the socket reader hands it.

    Made by :meth:`CaregiverClient.place_call`. Its ``wait_*`` methods return
    when a step is reached, raise :class:`CallEndedEarly` if the call ended
    first and :class:`CallTimeout` after ``timeout`` seconds.
    """

    def __init__(self, client: CaregiverClient, citizen_id: str, media: TestMedia, *,
                 prepare_media: bool, gather_timeout: float, clock: Clock) -> None:
        self._client = client
        self.citizen_id = citizen_id
        self.media_spec = media
        self._prepare_media = prepare_media
        self._gather_timeout = gather_timeout
        self._clock = clock
        self.times = CallTimes()
        self.placed: m.CallPlaced | None = None
        self.refused: m.Rejected | None = None
        self.peer: AnsweringPeer | None = None
        self.end_reason: str | None = None
        self.facts: m.DeviceFacts | None = None
        self.quality: dict[str, float | int | None] | None = None
        self.error: str | None = None
        self._media_task: asyncio.Task[LocalMedia] | None = None
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

    # --- waiting ------------------------------------------------------------------

    async def _wait(self, event: asyncio.Event, what: str, timeout: float) -> None:
        if event.is_set():
            return
        waiter = asyncio.ensure_future(event.wait())
        ender = asyncio.ensure_future(self._ended.wait())
        try:
            await asyncio.wait({waiter, ender}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            ender.cancel()
        if event.is_set():
            return
        if self._ended.is_set():
            raise CallEndedEarly(what, self.end_reason)
        raise CallTimeout(f"no {what} within {timeout} s (call {self.call_id})")

    async def wait_ringing(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        await self._wait(self._ringing, "ringing", timeout)

    async def wait_answered(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Until the citizen answered (the unit's offer arrived)."""
        await self._wait(self._offered, "the citizen's answer", timeout)

    async def wait_connected(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        await self._wait(self._connected, "media connected", timeout)

    async def wait_media(self, video: int = 1, audio: int = 1, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Until ``video`` and ``audio`` remote frames have been received."""
        deadline = self._clock() + timeout
        await self.wait_connected(timeout)
        assert self.peer is not None
        waiting = asyncio.ensure_future(
            self.peer.wait_frames(video, audio, max(0.0, deadline - self._clock())))
        ender = asyncio.ensure_future(self._ended.wait())
        try:
            await asyncio.wait({waiting, ender}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ender.cancel()
        if not waiting.done():
            waiting.cancel()
            await asyncio.gather(waiting, return_exceptions=True)
            raise CallEndedEarly(f"{video} video and {audio} audio frames", self.end_reason)
        waiting.result()  # raises CallTimeout

    async def wait_ended(self, timeout: float = DEFAULT_TIMEOUT) -> CallResult:
        """Until the call is over (and our side closed and reported); its result."""
        try:
            await asyncio.wait_for(self._ended.wait(), timeout)
        except TimeoutError:
            raise CallTimeout(f"the call did not end within {timeout} s") from None
        if self._finished is not None:
            await self._finished
        return self.result()

    # --- acting -------------------------------------------------------------------

    async def hang_up(self) -> CallResult:
        """Hang up (or withdraw the call, before the answer); close the peer; report quality.

        The server tells the other side only, as for the page: our end reason is
        ``hung_up_by_staff`` if media was connected, else ``cancelled_by_caller``.
        Safe to call after the call ended: then it only waits for the closing.
        """
        if not self._ended.is_set():
            if self.call_id is not None:
                await self._client.send(m.CallHangUp(call_id=self.call_id, reason="hung-up"))
                self.times.hang_up_sent = self._clock()
            connected = self.peer is not None and self.peer.connection_state == "connected"
            self._end("hung_up_by_staff" if connected else "cancelled_by_caller", None)
        if self._finished is not None:
            await self._finished
        return self.result()

    def result(self) -> CallResult:
        return CallResult(
            call_id=self.call_id, end_reason=self.end_reason, facts=self.facts,
            video_frames=self.video_frames, audio_frames=self.audio_frames, times=self.times,
            quality=self.quality, error=self.error,
        )

    # --- the reader's side --------------------------------------------------------

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
                if self.times.ringing is None:
                    self.times.ringing = at
                self._ringing.set()
            case m.CallAnswer(sdp=sdp):
                if self.peer is None and not self._ended.is_set():
                    self.times.offer = at
                    self._offered.set()
                    self._spawn(self._answer(sdp))
            case m.CallEnded(reason=reason, facts=facts):
                self.times.ended = at
                self._end(reason, facts)
            case m.Rejected(reason=reason, detail=detail):
                if self.placed is None:
                    self.refused = message
                    self._end(reason, None)
                else:  # e.g. our SDP answer refused; the call's end follows from the server
                    log.warning("call %s: the server refused a message: %s (%s)", self.call_id, reason, detail)
            case _:
                pass

    def connection_lost(self) -> None:
        if not self._ended.is_set():
            self.error = self.error or "the call socket closed"
            self._end("media_failed", None)

    def _spawn(self, work: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _media(self) -> LocalMedia:
        if self._media_task is None:
            self._media_task = asyncio.ensure_future(open_test_media(self.media_spec))
        return await self._media_task

    async def _answer(self, offer_sdp: str) -> None:
        assert self.placed is not None
        call_id = self.placed.call_id
        peer = self.peer = AnsweringPeer(
            rtc_configuration(self.placed.ice_servers, self.placed.relay_only), self._media,
            on_state=self._peer_state, clock=self._clock)
        try:
            sdp = await peer.answer(offer_sdp, self._gather_timeout)
        except Exception as exc:  # media or ICE: the page reports media-failed too
            self.error = f"could not answer the offer: {type(exc).__name__}: {exc}"
            log.warning("call %s: %s", call_id, self.error)
            await self._client.send(m.CallHangUp(call_id=call_id, reason="media-failed"))
            self._end("media_failed", None)
            return
        if self._ended.is_set():
            return
        await self._client.send(m.CallAccept(call_id=call_id, sdp=sdp))
        self.times.accept_sent = self._clock()

    def _peer_state(self, state: str) -> None:
        call_id = self.call_id
        if call_id is None or self._ended.is_set():
            return
        log.info("call %s: media %s", call_id, state)
        if state == "connected" and not self._connected.is_set():
            self.times.connected = self._clock()
            self._connected.set()
            self._spawn(self._client.send(m.CallConnected(call_id=call_id)))
        elif state == "failed":
            self.error = self.error or "ICE/DTLS failed"
            self._spawn(self._client.send(m.CallHangUp(call_id=call_id, reason="media-failed")))
            self._end("media_failed", None)

    def _end(self, reason: str, facts: m.DeviceFacts | None) -> None:
        if self._ended.is_set():
            return
        self.end_reason = reason
        self.facts = facts
        if self.times.ended is None:
            self.times.ended = self._clock()
        log.info("call %s ended: %s", self.call_id, reason)
        self._ended.set()
        self._finished = asyncio.ensure_future(self._finish())

    async def _finish(self) -> None:
        """After the end: the quality report (the server has ended the call by now:
        it told us, or our hang-up went out first on the same socket), then close."""
        if self.peer is not None:
            self.times.first_video_frame = self.peer.first_video_at
            self.times.first_audio_frame = self.peer.first_audio_at
        for task in list(self._tasks):
            if task is not asyncio.current_task():
                task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            if self.peer is not None and self.call_id is not None:
                try:
                    self.quality = await self.peer.quality()
                except Exception as exc:  # stats are a nicety; closing the call is not
                    log.warning("call %s: quality could not be measured: %s", self.call_id, exc)
                if self.quality is not None:
                    with contextlib.suppress(ConnectionError):
                        await self._client.send(m.CallQualityReport(call_id=self.call_id, quality=self.quality))
        finally:
            if self.peer is not None:
                await self.peer.close()
            elif self._media_task is not None:
                self._media_task.cancel()
                media = (await asyncio.gather(self._media_task, return_exceptions=True))[0]
                if isinstance(media, LocalMedia):
                    await media.close()
            self._client._call_over(self)


# --------------------------------------------------------------------------- the client


_CLOSED: Final = object()


class CaregiverClient:
    """One logged-in caregiver: the console's HTTP session and its call socket.

    One call at a time, like the page (the server refuses a second one on the
    same socket as ``busy``). Messages that belong to no call in progress
    (e.g. a ``rejected`` for a bad frame) wait in order for :meth:`receive`.
    """

    def __init__(self, console: str, *, media: TestMedia = TestMedia(),
                 gather_timeout: float = GATHER_TIMEOUT, clock: Clock = time.monotonic) -> None:
        self.console = console.rstrip("/")
        self.media = media
        self.gather_timeout = gather_timeout
        self.clock = clock
        # unsafe=True: keep cookies for an IP address such as 127.0.0.1 (aiohttp drops them otherwise)
        self.session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.call_in_progress: StaffCall | None = None
        self._inbox: asyncio.Queue[tuple[float, m.ServerToStaff | ProtocolError | object]] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None
        self._send_lock = asyncio.Lock()

    async def __aenter__(self) -> CaregiverClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Hang up a call in progress, close the socket and the session."""
        call = self.call_in_progress
        if call is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(call.hang_up(), 10)
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        await self.session.close()

    # --- the console --------------------------------------------------------------

    async def login(self, username: str, password: str) -> dict[str, Any]:
        """Log in as the page does; the session cookie is kept. Returns the user (``/api/login``'s reply)."""
        async with self.session.post(f"{self.console}/api/login",
                                     json={"username": username, "password": password}) as resp:
            if resp.status != 200:
                raise LoginFailed(resp.status, await resp.text())
            return dict(await resp.json())

    async def citizens(self) -> list[dict[str, Any]]:
        """The citizens this caregiver may call (id, name, online)."""
        async with self.session.get(f"{self.console}/api/citizens") as resp:
            resp.raise_for_status()
            return list(await resp.json())

    async def connect(self) -> None:
        """Open the call socket (after :meth:`login`). Idempotent."""
        if self.ws is not None and not self.ws.closed:
            return
        self.ws = await self.session.ws_connect(f"{self.console}/api/calls/socket")
        self._reader = asyncio.ensure_future(self._read(self.ws))

    async def send(self, message: m.StaffToServer) -> None:
        if self.ws is None or self.ws.closed:
            raise ConnectionError("the call socket is not open")
        async with self._send_lock:
            await self.ws.send_str(m.encode(message).decode())

    async def receive(self, timeout: float = DEFAULT_TIMEOUT) -> m.ServerToStaff:
        """The next message that belongs to no call in progress.

        Raises :class:`~kiosk.protocol.errors.ProtocolError` for a frame that is
        not a valid message, ``ConnectionError`` when the socket has closed.
        """
        _, item = await asyncio.wait_for(self._inbox.get(), timeout)
        if item is _CLOSED:
            self._inbox.put_nowait((self.clock(), _CLOSED))  # stays closed for the next caller
            raise ConnectionError("the call socket closed")
        if isinstance(item, ProtocolError):
            raise item
        return item  # type: ignore[return-value]

    # --- calls --------------------------------------------------------------------

    async def place_call(self, citizen_id: str, *, prepare_media: bool = True,
                         timeout: float = DEFAULT_TIMEOUT) -> StaffCall:
        """Press "call": returns once the server placed the call (the unit is being asked to ring).

        ``prepare_media`` opens the test camera and microphone at once, as the
        page opens the camera before it calls, so the citizen's answer is not
        held up by it; without it they open when the citizen answers.
        Raises :class:`CallRefused` (not in the care team, unknown citizen, ...).
        """
        if self.call_in_progress is not None:
            raise CallError("a call is already in progress on this client")
        await self.connect()
        call = StaffCall(self, citizen_id, self.media, prepare_media=prepare_media,
                         gather_timeout=self.gather_timeout, clock=self.clock)
        self.call_in_progress = call
        try:
            call.times.start_sent = self.clock()  # the press: before the send, so the send counts
            await self.send(m.CallStart(citizen_id=citizen_id))
            await call._wait(call._placed, "call-placed", timeout)
        except CallEndedEarly:
            if call.refused is not None:
                raise CallRefused(call.refused.reason, call.refused.detail) from None
            raise
        except BaseException:
            await call.hang_up()
            raise
        return call

    async def call(self, citizen_id: str, *, talk_seconds: float = 5.0,
                   answer_timeout: float = 60.0, timeout: float = DEFAULT_TIMEOUT) -> CallResult:
        """A whole call: place it, wait for the answer and for media both ways,
        talk ``talk_seconds`` (or until the citizen hangs up), hang up.

        An unanswered or refused call is a result too (its ``end_reason`` says
        why), not an error; only a broken setup raises.
        """
        try:
            call = await self.place_call(citizen_id, timeout=timeout)
        except CallRefused as exc:
            return CallResult(None, exc.reason, None, 0, 0, CallTimes(), error=str(exc))
        try:
            await call.wait_answered(answer_timeout)
            await call.wait_media(video=1, audio=1, timeout=timeout)
            with contextlib.suppress(CallTimeout):
                await call.wait_ended(talk_seconds)
        except CallEndedEarly:
            pass
        finally:
            result = await call.hang_up()
        return result

    # --- the socket reader --------------------------------------------------------

    def _call_over(self, call: StaffCall) -> None:
        if self.call_in_progress is call:
            self.call_in_progress = None

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Reads every frame as it arrives, so each gets its true arrival time."""
        try:
            async for frame in ws:
                at = self.clock()
                if frame.type != aiohttp.WSMsgType.TEXT:
                    continue
                try:
                    message = m.SERVER_TO_STAFF.decode(frame.data)
                except ProtocolError as exc:
                    log.warning("the server sent a frame that is not a message: %s", exc.reason)
                    self._inbox.put_nowait((at, exc))
                    continue
                call = self.call_in_progress
                if call is not None and _belongs(call, message):
                    call.on_message(message, at)
                else:
                    self._inbox.put_nowait((at, message))
        finally:
            self._inbox.put_nowait((self.clock(), _CLOSED))
            if self.call_in_progress is not None:
                self.call_in_progress.connection_lost()


def _belongs(call: StaffCall, message: m.ServerToStaff) -> bool:
    if call.ended:
        return False
    if isinstance(message, m.CallPlaced):
        return call.placed is None
    if isinstance(message, m.Rejected):
        return True  # the socket carries one call: a refusal now is about it
    return getattr(message, "call_id", None) == call.call_id


# --------------------------------------------------------------------------- command line


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m kiosk.server.call_client",
        description="Call one citizen as a caregiver, with test media, and print the result as JSON.")
    p.add_argument("--console", required=True, help="the console's address, e.g. http://127.0.0.1:8080")
    p.add_argument("--user", required=True, help="the caregiver's user name")
    p.add_argument("--password-stdin", action="store_true", required=True,
                   help="read the password from the first line of stdin (never from the command line)")
    p.add_argument("--citizen", required=True, metavar="CITIZEN_ID")
    p.add_argument("--talk", type=float, default=5.0, metavar="SECONDS",
                   help="how long to stay in the call once media flows (default 5)")
    p.add_argument("--answer-timeout", type=float, default=60.0, metavar="SECONDS")
    p.add_argument("--size", default="320x240", help="the test video's size (default 320x240)")
    p.add_argument("--fps", type=int, default=15)
    return p


async def _one_call(args: argparse.Namespace, password: str) -> CallResult:
    width, _, height = args.size.partition("x")
    media = TestMedia(int(width), int(height), args.fps)
    async with CaregiverClient(args.console, media=media) as client:
        await client.login(args.user, password)
        return await client.call(args.citizen, talk_seconds=args.talk, answer_timeout=args.answer_timeout)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("aiortc", "aioice", "libav"):  # they log SDP and addresses at DEBUG
        logging.getLogger(noisy).setLevel(logging.WARNING)
    password = sys.stdin.readline().rstrip("\n")
    try:
        result = asyncio.run(_one_call(args, password))
    except (CallError, aiohttp.ClientError, OSError) as exc:
        print(f"call_client: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result.as_dict()))
    return 0 if result.video_frames > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
