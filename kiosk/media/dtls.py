"""A DTLS handshake that does not wait a whole second for each lost flight.

aiortc drives the handshake with OpenSSL's DTLS timer, which starts at 1 s and
doubles (1, 2, 4 s); pyOpenSSL does not expose ``DTLS_set_timer_cb``, so the
timer cannot be shortened. On a link losing 5 % of its packets each way, one
handshake in five or so loses a flight, and each loss cost a second or more of
the citizen's "connecting" (measured: answer → connected clustered at 1.3,
2.3 and 8.3 s, the shape of that back-off).

:class:`PromptDtlsTransport` watches the handshake's datagrams: when a flight
of ours has gone unanswered for :data:`FIRST_RESEND` (then twice as long each
time, :data:`RESENDS` times), it sends the same datagram again. DTLS is built
for this: a receiver drops a duplicate record, and a peer that sees our previous
flight again resends its own reply, so the lost half of an exchange is repaired
whichever way it was lost. OpenSSL's own timer goes on underneath; its
retransmissions simply count as a new flight. Once the handshake is done,
nothing of ours is in the path.

:func:`install_prompt_dtls` makes aiortc build its DTLS transports from this
class (the name ``RTCDtlsTransport`` in ``aiortc.rtcpeerconnection``, as
:func:`kiosk.media.keyframes.install_loss_recovery` does for the jitter buffer).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

import aiortc.rtcpeerconnection
from aiortc.rtcdtlstransport import RTCDtlsParameters, RTCDtlsTransport

__all__ = ["FIRST_RESEND", "RESENDS", "FlightResends", "PromptDtlsTransport", "install_prompt_dtls"]

#: A flight unanswered this long is sent again: a 300 ms round trip and the peer's work on the
#: flight (a signature, on a loaded machine) fit; a spurious resend costs one datagram.
FIRST_RESEND: Final = 0.4
#: Resends per flight, each waiting twice as long as the one before (0.4, 0.8, 1.6 s).
RESENDS: Final = 3
#: How often the handshake is looked at while it runs (it lasts a few round trips).
POLL: Final = 0.02

Clock = Callable[[], float]


@dataclass
class FlightResends:
    """When to send our last handshake datagram again. Pure: the caller passes the time."""

    first: float = FIRST_RESEND
    most: int = RESENDS
    flight: bytes | None = None
    due: float | None = None  # None: nothing to resend (nothing sent, or the peer answered)
    resends: int = 0  # in this handshake, for tests and logs
    _this_flight: int = 0

    def sent(self, data: bytes, now: float) -> None:
        """We sent a handshake datagram: a new flight (or OpenSSL's own retransmission of one)."""
        self.flight, self.due, self._this_flight = data, now + self.first, 0

    def heard(self) -> None:
        """A datagram from the peer arrived: OpenSSL takes it from here."""
        self.due = None

    def take(self, now: float) -> bytes | None:
        """The datagram to send again now, if one is due."""
        if self.flight is None or self.due is None or now < self.due:
            return None
        self._this_flight += 1
        self.resends += 1
        self.due = now + self.first * 2 ** self._this_flight if self._this_flight < self.most else None
        return self.flight


class PromptDtlsTransport(RTCDtlsTransport):
    """aiortc's DTLS transport, resending an unanswered handshake flight early (see module doc)."""

    def __init__(self, *args: Any, clock: Clock = time.monotonic, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.flight_resends = FlightResends()
        self._clock = clock

    async def start(self, remoteParameters: RTCDtlsParameters) -> None:
        ice: Any = self.transport  # aiortc reads and writes through its ICE transport's _send/_recv
        send: Callable[[bytes], Awaitable[None]] = ice._send
        recv: Callable[[], Awaitable[bytes]] = ice._recv
        resends = self.flight_resends

        async def sending(data: bytes) -> None:
            resends.sent(data, self._clock())
            await send(data)

        async def receiving() -> bytes:
            data = await recv()
            resends.heard()
            return data

        async def resend_due() -> None:
            while True:
                await asyncio.sleep(POLL)
                flight = resends.take(self._clock())
                if flight is not None:
                    with contextlib.suppress(ConnectionError):
                        await send(flight)

        ice._send, ice._recv = sending, receiving
        resender = asyncio.ensure_future(resend_due())
        try:
            await super().start(remoteParameters)
        finally:
            resender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await resender
            ice._send, ice._recv = send, recv


def install_prompt_dtls() -> None:
    """Make every aiortc peer connection created from now on use :class:`PromptDtlsTransport`."""
    aiortc.rtcpeerconnection.RTCDtlsTransport = PromptDtlsTransport  # type: ignore[attr-defined]


def uninstall_prompt_dtls() -> None:
    aiortc.rtcpeerconnection.RTCDtlsTransport = RTCDtlsTransport  # type: ignore[attr-defined]
