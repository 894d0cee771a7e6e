"""TURN requests and ICE checks repaired early (kiosk.media.stun_resends), with aioice's real
transactions and ICE connections on 127.0.0.1.

What is lost is chosen, not random: a responder that ignores the first copies of a request,
a socket that drops the first check response; the margins are aioice's own back-off (0.5 s)
against ours (0.25 s, or at once).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any, cast

import aiortc.rtcicetransport
import pytest
from aioice import Connection, stun, turn
from aioice.ice import StunProtocol

from kiosk.media.loopback import loopback_only
from kiosk.media.peer import CallPeer, rtc_configuration
from kiosk.media.stun_resends import (
    EARLY_SPAN,
    PromptConnection,
    PromptTransaction,
    early_copies,
    install_prompt_stun,
    uninstall_prompt_stun,
)

Address = tuple[str, int]


@pytest.fixture(autouse=True)
def aioice_restored() -> Iterator[None]:
    uninstall_prompt_stun()
    yield
    uninstall_prompt_stun()


def test_copies_fill_aioices_gaps_for_the_first_two_seconds() -> None:
    # aioice sends at 0, 0.5, 1.5 (then 3.5): ours go between, every 0.25 s, up to 2 s.
    assert early_copies() == (0.25, 0.75, 1.0, 1.25, 1.75)
    assert max(early_copies()) < EARLY_SPAN
    assert early_copies(pace=0.5, span=4.0, rto=0.5) == (1.0, 2.0, 2.5, 3.0)


class Responder(asyncio.DatagramProtocol):
    """A STUN server on 127.0.0.1 that answers a request only at its ``answer_at``-th copy."""

    def __init__(self, answer_at: int) -> None:
        self.answer_at = answer_at
        self.seen: dict[bytes, int] = {}
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Address) -> None:
        request = stun.parse_message(data)
        copies = self.seen[request.transaction_id] = self.seen.get(request.transaction_id, 0) + 1
        if copies == self.answer_at and self.transport is not None:
            response = stun.Message(message_method=request.message_method, message_class=stun.Class.RESPONSE,
                                    transaction_id=request.transaction_id)
            response.attributes["XOR-MAPPED-ADDRESS"] = addr
            self.transport.sendto(bytes(response), addr)


class Client(asyncio.DatagramProtocol):
    """The requesting side: sends what a transaction asks, hands it the answers."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.transactions: dict[bytes, stun.Transaction] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def send_stun(self, message: stun.Message, addr: Address) -> None:
        assert self.transport is not None
        self.transport.sendto(bytes(message), addr)

    def datagram_received(self, data: bytes, addr: Address) -> None:
        message = stun.parse_message(data)
        self.transactions[message.transaction_id].response_received(message, addr)


async def transact(kind: type[stun.Transaction], answer_at: int, retransmissions: int | None = None
                   ) -> tuple[float, Responder]:
    """One Binding transaction of ``kind`` against a responder; seconds it took (or raises)."""
    loop = asyncio.get_running_loop()
    server, responder = await loop.create_datagram_endpoint(lambda: Responder(answer_at), local_addr=("127.0.0.1", 0))
    client_transport, client = await loop.create_datagram_endpoint(Client, local_addr=("127.0.0.1", 0))
    try:
        request = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
        transaction = kind(request, server.get_extra_info("sockname"), client, retransmissions=retransmissions)
        client.transactions[request.transaction_id] = transaction
        started = time.monotonic()
        await transaction.run()
        return time.monotonic() - started, responder
    finally:
        client_transport.close()
        server.close()


async def test_a_request_lost_twice_is_answered_after_half_a_second_not_one_and_a_half() -> None:
    prompt, _ = await transact(PromptTransaction, answer_at=3)  # copies at 0, 0.25, 0.5
    aioice_own, _ = await transact(stun.Transaction, answer_at=3)  # 0, 0.5, 1.5
    assert prompt < 0.9
    assert aioice_own >= 1.4


async def test_a_request_sent_once_on_purpose_stays_one_send() -> None:
    # Consent checks: aioice sends them with no retransmission and waits 0.5 s for the answer.
    started = time.monotonic()
    with pytest.raises(stun.TransactionTimeout):
        await transact(PromptTransaction, answer_at=99, retransmissions=0)
    assert time.monotonic() - started >= 0.45
    _, responder = await transact(PromptTransaction, answer_at=1, retransmissions=0)
    assert list(responder.seen.values()) == [1]


class DropFirstCheckResponse:
    """A UDP transport that loses the first ICE check response it is asked to send."""

    def __init__(self, inner: asyncio.DatagramTransport) -> None:
        self.inner = inner
        self.dropped = 0

    def sendto(self, data: bytes, addr: Address) -> None:
        if not self.dropped and data[0] == 0x01 and data[1] == 0x01:  # Binding success response
            self.dropped += 1
            return
        self.inner.sendto(data, addr)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def introduced(kind: type[Connection]) -> tuple[Connection, Connection]:
    """A controlling and a controlled ICE connection on 127.0.0.1, each told the other's
    credentials and candidates, neither connected yet."""
    controlling, controlled = kind(ice_controlling=True, use_ipv6=False), kind(ice_controlling=False, use_ipv6=False)
    with loopback_only():
        await asyncio.gather(controlling.gather_candidates(), controlled.gather_candidates())
    for near, far in ((controlling, controlled), (controlled, controlling)):
        near.remote_username, near.remote_password = far.local_username, far.local_password
        for candidate in far.local_candidates:
            await near.add_remote_candidate(candidate)
        await near.add_remote_candidate(None)
    return controlling, controlled


async def controlled_check_time(kind: type[Connection]) -> float:
    """The controlled side starts checking, its first check's answer is lost, the controlling
    side starts 0.1 s later: seconds until the controlled side is connected."""

    class NoCopies(PromptTransaction):  # only the triggered resend at work
        copies_at = ()

    stun.Transaction = NoCopies  # type: ignore[misc]
    controlling, controlled = await introduced(kind)
    try:
        protocol = controlling._protocols[0]
        assert isinstance(protocol, StunProtocol)
        dropper = DropFirstCheckResponse(protocol.transport)
        protocol.transport = dropper  # type: ignore[assignment]
        started = time.monotonic()
        checking = asyncio.ensure_future(controlled.connect())
        await asyncio.sleep(0.1)
        other = asyncio.ensure_future(controlling.connect())
        await asyncio.wait_for(checking, 5)
        took = time.monotonic() - started
        await asyncio.wait_for(other, 5)
        assert dropper.dropped == 1
        return took
    finally:
        await asyncio.gather(controlling.close(), controlled.close())


async def test_the_peers_check_arriving_sends_ours_again_at_once() -> None:
    assert await controlled_check_time(PromptConnection) < 0.4  # at the peer's check (0.1 s)


async def test_without_it_the_check_waits_for_aioices_retransmission() -> None:
    assert await controlled_check_time(Connection) >= 0.45  # aioice's next send, at 0.5 s


def test_a_call_peer_installs_both() -> None:
    CallPeer(rtc_configuration([], relay_only=False))
    assert stun.Transaction is PromptTransaction
    assert aiortc.rtcicetransport.Connection is PromptConnection  # type: ignore[attr-defined]
    install_prompt_stun()  # idempotent
    uninstall_prompt_stun()
    assert stun.Transaction is not PromptTransaction


async def test_turn_over_tcp_gets_no_copies() -> None:
    request = stun.Message(message_method=stun.Method.ALLOCATE, message_class=stun.Class.REQUEST)
    tcp = turn.TurnClientTcpProtocol(("127.0.0.1", 3478), None, None, lifetime=600, channel_refresh_time=500)
    udp = turn.TurnClientUdpProtocol(("127.0.0.1", 3478), None, None, lifetime=600, channel_refresh_time=500)
    assert PromptTransaction(request, ("127.0.0.1", 3478), tcp)._copies == ()
    assert PromptTransaction(request, ("127.0.0.1", 3478), udp)._copies == early_copies()


class LateAnswers:
    """A UDP transport whose ICE check answers go out ``delay`` seconds late (None: never)."""

    def __init__(self, inner: asyncio.DatagramTransport, delay: float | None) -> None:
        self.inner, self.delay = inner, delay

    def sendto(self, data: bytes, addr: Address) -> None:
        if data[0] == 0x01 and data[1] == 0x01:  # Binding success response
            if self.delay is not None:
                asyncio.get_running_loop().call_later(self.delay, self.inner.sendto, data, addr)
            return
        self.inner.sendto(data, addr)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class QuickConsent(PromptConnection):
    """Ours, on a test's time scale: a check every 0.2 s, sent at 0, 0.5 and 1.5 s (answered by
    3.5 s), consent lost after 3 s without an answer."""

    consent_interval = 0.2
    consent_timeout = 3.0
    consent_resends = 2


async def open_after(kind: type[Connection], delay: float | None, seconds: float) -> bool:
    """Two connected ICE connections whose check answers come ``delay`` seconds late (None:
    never): is the controlled one still open ``seconds`` later?"""
    controlling, controlled = await introduced(kind)
    try:
        await asyncio.wait_for(asyncio.gather(controlling.connect(), controlled.connect()), 10)
        for connection in (controlling, controlled):
            protocol = connection._protocols[0]
            assert isinstance(protocol, StunProtocol)
            protocol.transport = LateAnswers(protocol.transport, delay)  # type: ignore[assignment]
        await asyncio.sleep(seconds)
        return not controlled._closed
    finally:
        await asyncio.gather(controlling.close(), controlled.close())


async def test_consent_holds_while_every_check_is_answered_late() -> None:
    # 0.8 s: a round trip over 4G with a full uplink queue, or a peer whose process is starved
    assert await open_after(QuickConsent, delay=0.8, seconds=6.0)


async def test_aioices_own_consent_drops_that_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    # the same, with aioice's checks (one send, 0.5 s to answer, six failures) every 0.2 s
    monkeypatch.setattr("aioice.ice.CONSENT_INTERVAL", 0.2)
    assert not await open_after(Connection, delay=0.8, seconds=6.0)


async def test_consent_expires_when_no_check_is_answered() -> None:
    assert await open_after(QuickConsent, delay=None, seconds=2.5)  # not before its 3 s
    assert not await open_after(QuickConsent, delay=None, seconds=6.0)
