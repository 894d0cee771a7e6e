"""STUN and TURN requests that do not sit out aioice's back-off over a lossy link.

aioice sends a request (TURN Allocate and its retry after the 401, Refresh, ChannelBind,
each ICE check) at 0, 0.5, 1.5, 3.5, 7.5 s ... until it is answered: one lost request or
response costs 0.5 s, two cost 1.5 s, three 3.5 s. Over 5 % loss each way about one
transaction in ten loses one of its two datagrams, and a call makes a dozen in series
before media flows (two allocations, the spare one's deallocation, a ChannelBind, the checks),
so these waits made the tail of answer -> connected (docs/benchmarks.md, "Sixth pass").

Two remedies, both in aioice's own terms and leaving its timers as they are:

- :class:`PromptTransaction` sends extra copies of a request that is still unanswered,
  every :data:`EARLY_PACE` for the first :data:`EARLY_SPAN` (between aioice's own sends),
  so a lost datagram costs about 0.25 s, not 0.5 to 3.5. A STUN server answers a
  retransmission like the original (RFC 8489 section 6.3.1 allows the copies; a spurious one
  costs a datagram of about 100 bytes). Requests aioice sends once (consent checks, with no
  retransmissions) keep their single send and their timeout, and TURN over TCP or TLS gets none.
- :class:`PromptConnection` answers a peer's connectivity check by sending our own check on
  that pair again at once if it is still unanswered (RFC 8445 section 7.3.1.4 asks for a
  triggered check here; aioice leaves the pair to its back-off). The peer's check getting
  through is the news that the path now works both ways: typically our TURN permission
  arrived late (a lost ChannelBind), after which the peer's check was waiting up to 2 s for
  its next retransmission. It also keeps consent to send (RFC 7675) as the RFC has it: see
  :meth:`PromptConnection.query_consent`.

:func:`install_prompt_stun` makes aioice and aiortc build these classes (the names
``Transaction`` in ``aioice.stun`` and ``Connection`` in ``aiortc.rtcicetransport``, as
:mod:`kiosk.media.dtls` installs its DTLS transport).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
from typing import Final

import aiortc.rtcicetransport
from aioice import Connection, stun, turn
from aioice.ice import StunProtocol

__all__ = ["CONSENT_INTERVAL", "CONSENT_RESENDS", "CONSENT_TIMEOUT", "EARLY_PACE", "EARLY_SPAN",
           "PromptConnection", "PromptTransaction", "early_copies", "install_prompt_stun", "uninstall_prompt_stun"]

log = logging.getLogger("kiosk.media.stun")

#: An unanswered request is copied this often: under a 300 ms round trip, so a lost datagram
#: is repaired before aioice's first retransmission (0.5 s) would be.
EARLY_PACE: Final = 0.25
#: ... for this long after its first send; beyond, aioice's doubling alone (a link that lost
#: eight copies in a row is out, not lossy, and copies would only add to its queue).
EARLY_SPAN: Final = 2.0

#: RFC 7675: consent to send lasts this long after the last answered check ...
CONSENT_TIMEOUT: Final = 30.0
#: ... and a check goes every this many seconds (randomised by ±20 %), as in aioice.
CONSENT_INTERVAL: Final = 5.0
#: A check is sent again at 0.5, 1.5 and 3.5 s while unanswered, and waits 7.5 s in all.
CONSENT_RESENDS: Final = 3

#: aioice's own, for :func:`uninstall_prompt_stun` (the name is rebound by :func:`install_prompt_stun`).
_AioiceTransaction: Final = stun.Transaction


def early_copies(pace: float = EARLY_PACE, span: float = EARLY_SPAN,
                 rto: float = stun.RETRY_RTO) -> tuple[float, ...]:
    """Seconds after a request's first send at which an extra copy goes: every ``pace`` before
    ``span``, except where aioice sends its own retransmission (``rto``, doubling). Pure."""
    own: set[float] = set()
    at, wait = 0.0, rto
    while at < span:
        own.add(round(at, 6))
        at, wait = at + wait, wait * 2
    return tuple(k * pace for k in range(1, math.ceil(span / pace)) if round(k * pace, 6) not in own)


class PromptTransaction(stun.Transaction):
    """aioice's STUN transaction, copying an unanswered request early (see module doc)."""

    #: When the copies go, in seconds after the first send.
    copies_at: tuple[float, ...] = early_copies()

    def __init__(
        self,
        request: stun.Message,
        addr: tuple[str, int],
        protocol: stun.TransactionSender,
        retransmissions: int | None = None,
        integrity_key: bytes | None = None,
        long_term_credential: bool = False,
    ) -> None:
        super().__init__(request, addr, protocol, retransmissions=retransmissions,
                         integrity_key=integrity_key, long_term_credential=long_term_credential)
        self.request, self.addr, self._sender = request, addr, protocol
        # A request sent once on purpose (a consent check) stays a single send; a TURN request
        # over TCP or TLS is never sent again (RFC 8489 section 6.2.2: the stream is reliable).
        once = retransmissions == 0 or isinstance(protocol, turn.TurnClientTcpProtocol)
        self._copies = () if once else self.copies_at
        self._running = False
        self.copies_sent = 0  # for tests and traces

    def resend_now(self) -> None:
        """Send the request again now, if it is still waiting for its answer."""
        if self._running:
            self.copies_sent += 1
            self._sender.send_stun(self.request, self.addr)

    async def run(self) -> tuple[stun.Message, tuple[str, int]]:
        self._running = True
        copier = asyncio.ensure_future(self._copy_early()) if self._copies else None
        try:
            response: tuple[stun.Message, tuple[str, int]] = await super().run()
            return response
        finally:
            self._running = False
            if copier is not None:
                copier.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await copier

    async def _copy_early(self) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        for offset in self._copies:
            await asyncio.sleep(max(0.0, started + offset - loop.time()))
            self.resend_now()


class PromptConnection(Connection):
    """aioice's ICE connection, re-sending our unanswered check on a pair the peer's check
    just came in on (see module doc), and keeping consent as RFC 7675 has it."""

    consent_interval: float = CONSENT_INTERVAL
    consent_timeout: float = CONSENT_TIMEOUT
    consent_resends: int = CONSENT_RESENDS

    async def query_consent(self) -> None:
        """Consent freshness (RFC 7675): a check every 5 s, sent again while unanswered, and
        consent lost only when no check has been answered for 30 s.

        aioice sends each check once, counts it failed if no answer came within 0.5 s, and
        closes the connection after six such in a row. So a round trip over 0.5 s for half a
        minute (a 4G uplink's full queue), or a peer whose process could not answer within
        0.5 s for as long (a loaded machine), ended calls whose media was flowing all along:
        a call on a loaded test machine ended "connection_lost" this way mid-call."""
        assert self.remote_password is not None  # checks start once connect() has it
        key = self.remote_password.encode("utf8")
        loop = asyncio.get_running_loop()
        answered_at = loop.time()
        while True:
            await asyncio.sleep(self.consent_interval * (0.8 + 0.4 * random.random()))
            for pair in list(self._nominated.values()):
                with contextlib.suppress(stun.TransactionError):
                    await pair.protocol.request(self.build_request(pair, nominate=False), pair.remote_addr,
                                                integrity_key=key, retransmissions=self.consent_resends)
                    answered_at = loop.time()
            if loop.time() - answered_at >= self.consent_timeout:
                log.info("consent to send expired: no check answered for %.0f s", loop.time() - answered_at)
                self._query_consent_task = None  # close() would cancel this very task
                await self.close()
                return

    def check_incoming(self, message: stun.Message, addr: tuple[str, int], protocol: StunProtocol) -> None:
        super().check_incoming(message, addr, protocol)
        for transaction in list(protocol.transactions.values()):
            if isinstance(transaction, PromptTransaction) and transaction.addr == addr:
                transaction.resend_now()


def install_prompt_stun() -> None:
    """Make every aioice transaction and aiortc ICE connection created from now on the prompt ones."""
    stun.Transaction = PromptTransaction  # type: ignore[misc]
    aiortc.rtcicetransport.Connection = PromptConnection  # type: ignore[attr-defined]


def uninstall_prompt_stun() -> None:
    stun.Transaction = _AioiceTransaction  # type: ignore[misc]
    aiortc.rtcicetransport.Connection = Connection  # type: ignore[attr-defined]
