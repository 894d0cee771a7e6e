"""A lost DTLS handshake flight is resent early (kiosk.media.dtls), with aiortc's real DTLS.

The two transports run over an in-memory datagram pair that loses exactly the
datagrams it is told to, so what is lost is certain and no test waits on a margin.
"""

from __future__ import annotations

import asyncio
import time

import aiortc.rtcpeerconnection
from aiortc.rtcdtlstransport import RTCCertificate, RTCDtlsTransport

from kiosk.media.dtls import FIRST_RESEND, RESENDS, FlightResends, PromptDtlsTransport, install_prompt_dtls
from kiosk.media.peer import CallPeer, rtc_configuration


def test_an_unanswered_flight_is_resent_with_back_off_then_left_to_openssl() -> None:
    resends = FlightResends()
    assert resends.take(100.0) is None  # nothing sent
    resends.sent(b"hello", 0.0)
    assert resends.take(FIRST_RESEND - 0.01) is None
    assert resends.take(FIRST_RESEND) == b"hello"
    assert resends.take(FIRST_RESEND + 0.1) is None
    assert resends.take(FIRST_RESEND * 3) == b"hello"  # then twice as long
    assert resends.take(FIRST_RESEND * 7) == b"hello"
    assert RESENDS == 3 and resends.take(1000.0) is None  # the rest is OpenSSL's own timer
    assert resends.resends == 3


def test_an_answered_flight_is_not_resent_and_a_new_flight_starts_afresh() -> None:
    resends = FlightResends()
    resends.sent(b"one", 0.0)
    resends.heard()
    assert resends.take(10.0) is None
    resends.sent(b"two", 10.0)
    assert resends.take(10.0 + FIRST_RESEND) == b"two"


class _Datagrams:
    """One side of an in-memory datagram link; ``drop`` numbers the datagrams it sends (from 1) to lose."""

    def __init__(self, role: str, drop: set[int]) -> None:
        self.role = role
        self.inbox: asyncio.Queue[bytes] = asyncio.Queue()
        self.peer: _Datagrams | None = None
        self.drop = drop
        self.sent = 0

    async def _send(self, data: bytes) -> None:
        self.sent += 1
        if self.sent not in self.drop and self.peer is not None:
            self.peer.inbox.put_nowait(data)

    async def _recv(self) -> bytes:
        return await self.inbox.get()


def test_a_handshake_whose_flight_is_lost_completes_on_our_resend() -> None:
    async def scenario() -> tuple[int, int]:
        client_link, server_link = _Datagrams("controlled", set()), _Datagrams("controlling", {1})
        client_link.peer, server_link.peer = server_link, client_link
        client = PromptDtlsTransport(client_link, [RTCCertificate.generateCertificate()])
        # The server's clock runs ten times fast, so its resend (due at 0.4 s of its time) goes
        # out 40 ms after the loss, far ahead of OpenSSL's own 1 s timers, even on a loaded machine.
        server = PromptDtlsTransport(server_link, [RTCCertificate.generateCertificate()],
                                     clock=lambda: time.monotonic() * 10)
        # The server's first flight (its certificate) is lost: our resend is what the client answers.
        await asyncio.wait_for(asyncio.gather(client.start(server.getLocalParameters()),
                                              server.start(client.getLocalParameters())), timeout=30)
        assert client.state == server.state == "connected"
        resent = server.flight_resends.resends
        assert client_link._send.__func__ is _Datagrams._send  # type: ignore[attr-defined]  # put back
        await asyncio.gather(client.stop(), server.stop())
        return resent, server_link.sent

    resent, sent = asyncio.run(scenario())
    assert resent >= 1 and sent >= 2


def test_every_call_peer_uses_the_prompt_handshake() -> None:
    aiortc.rtcpeerconnection.RTCDtlsTransport = RTCDtlsTransport  # type: ignore[attr-defined]
    CallPeer(rtc_configuration([], relay_only=False))
    assert aiortc.rtcpeerconnection.RTCDtlsTransport is PromptDtlsTransport  # type: ignore[attr-defined]
    install_prompt_dtls()  # again: harmless
    assert aiortc.rtcpeerconnection.RTCDtlsTransport is PromptDtlsTransport  # type: ignore[attr-defined]
