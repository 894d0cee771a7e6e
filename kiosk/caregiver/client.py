"""One logged-in caregiver: the console's HTTP session and its call socket."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, Self

import aiohttp

from kiosk.media.peer import GATHER_TIMEOUT
from kiosk.protocol import messages as m
from kiosk.protocol.errors import ProtocolError
from kiosk.protocol.machine import Clock

from .call import DEFAULT_TIMEOUT, MEDIA_TIMEOUT, CallResult, CallTimes, StaffCall
from .errors import CallEndedEarly, CallError, CallRejected, CallTimeout, LoginFailed
from .media import TestMedia

__all__ = ["CaregiverClient"]

log = logging.getLogger("kiosk.caregiver")

#: What the socket reader puts in the inbox when the socket has closed.
_CLOSED = None
#: A call socket that drops while media flows (a server restart) is opened again and the
#: call resumed, for this long, retrying after a pause that doubles up to the cap.
RESUME_TIMEOUT = 60.0
RESUME_PAUSE = (0.2, 2.0)


class CaregiverClient:
    """Speaks exactly what the console page speaks to the server.

    One call at a time, like the page (the server refuses a second one on the
    same socket as ``busy``). Messages that belong to no call in progress
    (e.g. a ``rejected`` for a bad frame) wait in order for :meth:`receive`.
    """

    def __init__(self, console: str, *, media: TestMedia | None = None,
                 gather_timeout: float = GATHER_TIMEOUT, clock: Clock = time.monotonic) -> None:
        self.console = console.rstrip("/")
        self.media = media or TestMedia()
        self.gather_timeout = gather_timeout
        self.clock = clock
        # unsafe=True: keep cookies for an IP address such as 127.0.0.1 (aiohttp drops them otherwise)
        self.session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.call_in_progress: StaffCall | None = None
        self._inbox: asyncio.Queue[m.ServerToStaff | ProtocolError | None] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None
        self._resuming: asyncio.Task[None] | None = None
        self._closing = False
        self._send_lock = asyncio.Lock()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Hang up a call in progress, close the socket and the session."""
        self._closing = True
        if self._resuming is not None:
            self._resuming.cancel()
            await asyncio.gather(self._resuming, return_exceptions=True)
        call = self.call_in_progress
        if call is not None:
            with contextlib.suppress(CallError, ConnectionError, TimeoutError):
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
        item = await asyncio.wait_for(self._inbox.get(), timeout)
        if item is _CLOSED:
            self._inbox.put_nowait(_CLOSED)  # stays closed for the next caller
            raise ConnectionError("the call socket closed")
        if isinstance(item, ProtocolError):
            raise item
        return item

    # --- calls --------------------------------------------------------------------

    async def place_call(self, citizen_id: str, *, prepare_media: bool = True,
                         timeout: float = DEFAULT_TIMEOUT) -> StaffCall:
        """Press "call": returns once the server placed the call (the unit is being asked to ring).

        ``prepare_media`` opens the test camera and microphone at once, as the
        page opens the camera before it calls, so the citizen's answer is not
        held up by it; without it they open when the citizen answers.
        Raises :class:`CallRejected` (not in the care team, unknown citizen, ...).
        """
        if self.call_in_progress is not None:
            raise CallError("a call is already in progress on this client")
        await self.connect()
        call = StaffCall(citizen_id, self.media, send=self.send, on_over=self._call_over,
                         prepare_media=prepare_media, gather_timeout=self.gather_timeout, clock=self.clock)
        self.call_in_progress = call
        try:
            await self.send(call.press_call())  # timed before the send, so the send counts
            await call.wait_placed(timeout)
        except CallEndedEarly:
            if call.refused is not None:
                raise CallRejected(call.refused.reason, call.refused.detail) from None
            raise
        except BaseException:
            await call.hang_up()
            raise
        return call

    async def call(self, citizen_id: str, *, talk_seconds: float = 5.0,
                   answer_timeout: float = 60.0, timeout: float = DEFAULT_TIMEOUT,
                   media_timeout: float = MEDIA_TIMEOUT) -> CallResult:
        """A whole call: place it, wait for the answer and for media both ways,
        talk ``talk_seconds`` (or until the citizen hangs up), hang up.

        An unanswered or refused call is a result too (its ``end_reason`` or
        ``refused`` says why), not an error; only a broken setup raises.
        """
        try:
            call = await self.place_call(citizen_id, timeout=timeout)
        except CallRejected as exc:
            return CallResult(None, None, None, 0, 0, CallTimes(), error=str(exc), refused=exc.reason)
        try:
            await call.wait_answered(answer_timeout)
            await call.wait_media(video=1, audio=1, timeout=media_timeout)
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
                    self._inbox.put_nowait(exc)
                    continue
                call = self.call_in_progress
                if call is not None and call.belongs(message):
                    call.on_message(message, at)
                else:
                    self._inbox.put_nowait(message)
        finally:
            call = self.call_in_progress
            if call is not None and call.in_call and not self._closing:
                # Media flows peer to peer: the server going away (a restart) is no reason to end.
                log.info("call %s: the call socket dropped; media goes on, resuming", call.call_id)
                self._resuming = asyncio.ensure_future(self._resume(call))
            else:
                self._inbox.put_nowait(_CLOSED)
                if call is not None:
                    call.connection_lost()

    async def _resume(self, call: StaffCall) -> None:
        """Open the call socket again and take the call up; give up after :data:`RESUME_TIMEOUT`."""
        assert call.call_id is not None  # in call: it was placed
        deadline = self.clock() + RESUME_TIMEOUT
        pause, cap = RESUME_PAUSE
        while not call.ended and self.clock() < deadline:
            try:
                await self.connect()
                await self.send(m.CallResume(call_id=call.call_id))
            except (aiohttp.ClientError, ConnectionError, OSError) as exc:
                log.info("call %s: the server is not back yet (%s)", call.call_id, type(exc).__name__)
                await asyncio.sleep(pause)
                pause = min(cap, pause * 2)
                continue
            call.resumed()
            return
        if not call.ended:
            self._inbox.put_nowait(_CLOSED)
            call.connection_lost()
