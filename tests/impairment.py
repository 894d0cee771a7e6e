"""A link that behaves like rural 4G, in user space: UDP and TCP impairment relays.

This kernel has no ``netem`` qdisc, so loss and delay are made here, in front
of the real servers. :class:`UdpImpairmentRelay` sits in front of coturn: a
peer is given the relay's address as its TURN server and ``relay_only``, so
every packet of its call (STUN, TURN allocations, ICE checks, DTLS, SRTP)
crosses the relay both ways. :class:`TcpImpairmentRelay` sits in front of the
municipality server for the unit's link to it.

What it emulates, per direction (seeded, so a run can be repeated):

- random loss (``loss``), and bursty loss as a two-state Gilbert-Elliott chain
  (``burst_enter``/``burst_leave`` per packet, everything lost while in a burst);
- one-way delay with uniform jitter; packets keep their order (a mobile link's
  bearer delivers in order; jitter shows as bunching, not reordering);
- a rate cap as a serialising bottleneck with a bounded queue (``queue_limit``
  seconds of backlog; packets that would wait longer are dropped at the tail),
  which is how a narrow 4G uplink loses packets under load;
- outages: scripted (``outages``, seconds after the relay starts) or called
  (:meth:`LinkImpairment.outage`): nothing passes while one lasts. The TCP relay
  cuts its connections and refuses new ones during an outage (a dropped
  bearer, as the unit's agent sees it: reset, then reconnect).

What it cannot emulate: the path between the relay and coturn is loopback
(the caregiver's leg is clean unless it is given a relay too); no reordering,
duplication or corruption; no change of the unit's address (a real 4G
handover gives the unit a new address; here the 5-tuple stays); no ICMP; TCP
delay is added per read chunk on top of loopback's own TCP, so TCP's own loss
recovery is never exercised (the TCP relay models delay and outages, not loss);
and timing is the event loop's, so on a loaded machine delays are a few
milliseconds late, never early.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, Self

Clock = Callable[[], float]
Address = tuple[str, int]

#: A queue longer than this (seconds of backlog at the capped rate) drops at the tail.
DEFAULT_QUEUE_LIMIT: Final = 0.3


@dataclass(frozen=True)
class Impairment:
    """One direction of an impaired link. All times in seconds, rates in bit/s."""

    loss: float = 0.0
    burst_enter: float = 0.0  # chance per packet to enter a loss burst
    burst_leave: float = 1.0  # chance per packet to leave it
    delay: float = 0.0  # one way
    jitter: float = 0.0  # uniform, 0..jitter added to delay
    rate: float | None = None  # bit/s; None: unlimited
    queue_limit: float = DEFAULT_QUEUE_LIMIT
    outages: tuple[tuple[float, float], ...] = ()  # (start, length), seconds after the relay started

    def __post_init__(self) -> None:
        for name in ("loss", "burst_enter", "burst_leave"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a probability between 0 and 1, got {value!r}")
        for name in ("delay", "jitter", "queue_limit"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)!r}")
        if self.rate is not None and self.rate <= 0:
            raise ValueError(f"rate must be positive bit/s or None, got {self.rate!r}")
        for start, length in self.outages:
            if start < 0 or length <= 0:
                raise ValueError(f"an outage needs start >= 0 and length > 0, got {(start, length)!r}")


#: The profiles of the issue and the benchmark; delay is one way (the round trip is twice it).
CLEAN: Final = Impairment()
RURAL_4G: Final = Impairment(loss=0.05, delay=0.15, jitter=0.01)
RURAL_4G_1MBIT: Final = Impairment(loss=0.05, delay=0.15, jitter=0.01, rate=1_000_000)
NARROW_500K: Final = Impairment(rate=500_000, queue_limit=1.0)


class LinkImpairment:
    """The fate of each packet in one direction: dropped, or when to deliver it. Pure but for its seeded RNG.

    ``admit(size, now)`` returns the delivery time, or None for a packet lost.
    """

    def __init__(self, impairment: Impairment, *, seed: int = 0, started: float = 0.0) -> None:
        self.impairment = impairment
        self.started = started
        self._random = random.Random(seed)
        self._in_burst = False
        self._free_at = started  # when the bottleneck has sent its backlog
        self._last_delivery = started
        self._called_outages: list[tuple[float, float]] = []
        self.passed = 0
        self.lost = 0
        self.dropped_in_queue = 0
        self.dropped_in_outage = 0

    def outage(self, now: float, length: float) -> None:
        """Nothing passes from ``now`` for ``length`` seconds."""
        self._called_outages.append((now, now + length))

    def in_outage(self, now: float) -> bool:
        scripted = ((self.started + s, self.started + s + n) for s, n in self.impairment.outages)
        return any(a <= now < b for a, b in (*scripted, *self._called_outages))

    def admit(self, size: int, now: float) -> float | None:
        imp = self.impairment
        if self.in_outage(now):
            self.dropped_in_outage += 1
            return None
        if self._in_burst:
            self._in_burst = self._random.random() >= imp.burst_leave
        elif imp.burst_enter and self._random.random() < imp.burst_enter:
            self._in_burst = True
        if self._in_burst or (imp.loss and self._random.random() < imp.loss):
            self.lost += 1
            return None
        sent = now
        if imp.rate is not None:
            start = max(now, self._free_at)
            if start - now > imp.queue_limit:
                self.dropped_in_queue += 1
                return None
            self._free_at = start + size * 8 / imp.rate
            sent = self._free_at
        delivery = sent + imp.delay + (self._random.uniform(0.0, imp.jitter) if imp.jitter else 0.0)
        delivery = max(delivery, self._last_delivery)  # in order
        self._last_delivery = delivery
        self.passed += 1
        return delivery


@dataclass
class _Flow:
    """One client's packets, relayed through an upstream socket of its own."""

    client: Address
    transport: asyncio.DatagramTransport | None = None
    pending: list[bytes] = field(default_factory=list)
    opening: asyncio.Task[None] | None = None


class UdpImpairmentRelay:
    """A UDP relay in front of ``upstream`` (coturn), impairing both directions.

    Each client address gets its own upstream socket, so coturn sees one
    5-tuple per client, as it would without the relay. ``up`` impairs packets
    from clients to the server, ``down`` the replies.
    """

    def __init__(self, upstream: Address, up: Impairment = CLEAN, down: Impairment | None = None, *,
                 seed: int = 0, host: str = "127.0.0.1", clock: Clock = time.monotonic) -> None:
        self.upstream = upstream
        self.host = host
        self._clock = clock
        now = clock()
        self.up = LinkImpairment(up, seed=seed, started=now)
        self.down = LinkImpairment(down if down is not None else up, seed=seed + 1, started=now)
        self._front: asyncio.DatagramTransport | None = None
        self._flows: dict[Address, _Flow] = {}
        self.port = 0

    @property
    def address(self) -> Address:
        return self.host, self.port

    def outage(self, length: float) -> None:
        """Both directions go dark for ``length`` seconds from now."""
        now = self._clock()
        self.up.outage(now, length)
        self.down.outage(now, length)

    async def start(self) -> Self:
        loop = asyncio.get_running_loop()
        relay = self

        class Front(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: Address) -> None:
                relay._from_client(data, addr)

        transport, _ = await loop.create_datagram_endpoint(Front, local_addr=(self.host, 0))
        self._front = transport
        self.port = int(transport.get_extra_info("sockname")[1])
        return self

    async def close(self) -> None:
        for flow in self._flows.values():
            if flow.transport is not None:
                flow.transport.close()
        self._flows.clear()
        if self._front is not None:
            self._front.close()
            self._front = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    def _from_client(self, data: bytes, client: Address) -> None:
        flow = self._flows.get(client)
        if flow is None:
            flow = self._flows[client] = _Flow(client)
            flow.opening = asyncio.ensure_future(self._open_upstream(flow))
        self._schedule(self.up, data, lambda packet: self._to_server(flow, packet))

    def _to_server(self, flow: _Flow, data: bytes) -> None:
        if flow.transport is None:
            flow.pending.append(data)  # the upstream socket is opening (microseconds)
        else:
            flow.transport.sendto(data)

    async def _open_upstream(self, flow: _Flow) -> None:
        loop = asyncio.get_running_loop()
        relay = self

        class Back(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: Address) -> None:
                relay._schedule(relay.down, data, lambda packet: relay._to_client(flow, packet))

        transport, _ = await loop.create_datagram_endpoint(Back, remote_addr=self.upstream)
        if flow.client not in self._flows:  # closed meanwhile
            transport.close()
            return
        flow.transport = transport
        for data in flow.pending:
            transport.sendto(data)
        flow.pending.clear()

    def _to_client(self, flow: _Flow, data: bytes) -> None:
        if self._front is not None:
            self._front.sendto(data, flow.client)

    def _schedule(self, link: LinkImpairment, data: bytes, deliver: Callable[[bytes], None]) -> None:
        now = self._clock()
        at = link.admit(len(data), now)
        if at is None:
            return
        delay = at - now
        if delay <= 0:
            deliver(data)
        else:
            asyncio.get_running_loop().call_later(delay, deliver, data)


class TcpImpairmentRelay:
    """A TCP relay in front of ``upstream`` (the server), for the unit's link to it.

    Adds ``delay`` (one way, both directions, order kept) and outages: during
    one every relayed connection is cut and new ones are refused (accepted
    and closed at once), as a dropped mobile bearer looks to the unit.
    """

    def __init__(self, upstream: Address, *, delay: float = 0.0, outages: Sequence[tuple[float, float]] = (),
                 host: str = "127.0.0.1", clock: Clock = time.monotonic) -> None:
        if delay < 0:
            raise ValueError(f"delay must not be negative, got {delay!r}")
        self.upstream = upstream
        self.host = host
        self.delay = delay
        self._clock = clock
        self._link = LinkImpairment(Impairment(outages=tuple(outages)), started=clock())
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0
        self.connections = 0
        self.refused = 0

    @property
    def address(self) -> Address:
        return self.host, self.port

    def in_outage(self) -> bool:
        return self._link.in_outage(self._clock())

    def outage(self, length: float) -> None:
        """Cut every connection now and refuse new ones for ``length`` seconds."""
        self._link.outage(self._clock(), length)
        self._cut_all()

    async def start(self) -> Self:
        self._server = await asyncio.start_server(self._accepted, self.host, 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self._cut_all()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    def _cut_all(self) -> None:
        for writer in list(self._writers):
            with contextlib.suppress(Exception):
                writer.transport.abort()
        self._writers.clear()

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.in_outage():
            self.refused += 1
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        self.connections += 1
        self._writers.update((writer, up_writer))
        pumps = [asyncio.ensure_future(self._pump(reader, up_writer)),
                 asyncio.ensure_future(self._pump(up_reader, writer))]
        for pump in pumps:
            self._tasks.add(pump)
            pump.add_done_callback(self._tasks.discard)
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for w in (writer, up_writer):
            self._writers.discard(w)
            with contextlib.suppress(Exception):
                w.transport.abort()
        for pump in pumps:
            pump.cancel()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Copy bytes, each chunk held back ``delay`` from when it was read (order kept)."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                at, chunk = await queue.get()
                if not chunk:  # the other end finished: so do we
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                wait = at - self._clock()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(chunk)
                await writer.drain()

        sender = asyncio.ensure_future(deliver())
        try:
            while True:
                chunk = await reader.read(65536)
                queue.put_nowait((self._clock() + self.delay, chunk))
                if not chunk:
                    break
            await sender
        except (ConnectionError, OSError):
            pass
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)


class RelayThread:
    """A relay on an event loop of its own thread, for tests whose other parts are processes.

    ``with RelayThread(TcpImpairmentRelay(...)) as relay:`` starts it; :meth:`outage`
    reaches it from the test's thread; leaving the block closes it and the loop.
    """

    def __init__(self, relay: TcpImpairmentRelay | UdpImpairmentRelay) -> None:
        self.relay = relay
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="impairment-relay", daemon=True)

    @property
    def address(self) -> Address:
        return self.relay.address

    def outage(self, length: float) -> None:
        self._loop.call_soon_threadsafe(self.relay.outage, length)

    def __enter__(self) -> Self:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.relay.start(), self._loop).result(10)
        return self

    def __exit__(self, *_: object) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.relay.close(), self._loop).result(10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()
