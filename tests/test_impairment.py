"""The impairment relays the call tests rely on: each property, measured (loopback only)."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.impairment import (
    Impairment,
    LinkImpairment,
    TcpImpairmentRelay,
    UdpImpairmentRelay,
)

# --- the pure link ------------------------------------------------------------------


def test_random_loss_is_seeded_and_near_its_rate() -> None:
    def fates(seed: int) -> list[bool]:
        link = LinkImpairment(Impairment(loss=0.05), seed=seed)
        return [link.admit(1000, i * 0.01) is None for i in range(10_000)]

    lost = fates(7)
    assert lost == fates(7), "the same seed must repeat the same run"
    assert 0.04 < sum(lost) / len(lost) < 0.06


def test_bursty_loss_comes_in_runs() -> None:
    link = LinkImpairment(Impairment(burst_enter=0.01, burst_leave=0.2), seed=3)
    lost = [link.admit(1000, i * 0.01) is None for i in range(20_000)]
    runs = []
    run = 0
    for dropped in lost:
        if dropped:
            run += 1
        elif run:
            runs.append(run)
            run = 0
    assert runs, "some bursts happened"
    assert sum(runs) / len(runs) > 3, "a burst loses several packets in a row (mean 1/burst_leave = 5)"


def test_delay_and_jitter_keep_order_and_never_deliver_early() -> None:
    link = LinkImpairment(Impairment(delay=0.15, jitter=0.05), seed=1)
    deliveries = [(t, link.admit(100, t)) for t in (i * 0.001 for i in range(2000))]
    times = [at for _, at in deliveries if at is not None]
    assert len(times) == 2000
    assert times == sorted(times), "packets stay in order"
    assert all(at is not None and 0.15 <= at - t <= 0.2 + 1e-9 for t, at in deliveries)
    assert max(at - t for t, at in deliveries if at is not None) > 0.18, "jitter is applied"


def test_rate_cap_serialises_and_drops_at_the_tail() -> None:
    # 1 Mbit/s offered to a 500 kbit/s cap for 10 s: half gets through, the rest is tail-dropped.
    link = LinkImpairment(Impairment(rate=500_000, queue_limit=0.2), seed=0)
    size = 1250  # 10 kbit
    offered = [link.admit(size, i * 0.01) for i in range(1000)]
    delivered = [at for at in offered if at is not None]
    throughput = len(delivered) * size * 8 / (delivered[-1] - 0.0)
    assert 450_000 < throughput < 510_000
    assert link.dropped_in_queue > 400
    assert max(at - i * 0.01 for i, at in enumerate(offered) if at is not None) <= 0.2 + size * 8 / 500_000


def test_scripted_and_called_outages_pass_nothing() -> None:
    link = LinkImpairment(Impairment(outages=((1.0, 0.5),)), started=100.0)
    assert link.admit(10, 100.9) is not None
    assert link.admit(10, 101.0) is None and link.admit(10, 101.49) is None
    assert link.admit(10, 101.5) is not None
    link.outage(200.0, 2.0)
    assert link.admit(10, 201.9) is None
    assert link.admit(10, 202.0) is not None
    assert link.dropped_in_outage == 3


@pytest.mark.parametrize("bad", [
    {"loss": 1.5}, {"loss": -0.1}, {"delay": -1}, {"rate": 0}, {"outages": ((-1.0, 1.0),)},
    {"outages": ((1.0, 0.0),)},
])
def test_a_nonsense_profile_is_refused_with_its_name(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad)).rstrip("s")):
        Impairment(**bad)  # type: ignore[arg-type]


# --- the relays, on loopback --------------------------------------------------------


class _Echo(asyncio.DatagramProtocol):
    transport: asyncio.DatagramTransport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a datagram endpoint's

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(data, addr)


async def _udp_echo() -> tuple[asyncio.DatagramTransport, tuple[str, int]]:
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(_Echo, local_addr=("127.0.0.1", 0))
    return transport, transport.get_extra_info("sockname")[:2]


class _Collect(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: list[tuple[float, bytes]] = []

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.append((time.monotonic(), data))


async def test_udp_relay_loses_and_delays_what_its_counters_say() -> None:
    echo, echo_addr = await _udp_echo()
    async with UdpImpairmentRelay(echo_addr, Impairment(loss=0.2, delay=0.05), seed=11) as relay:
        loop = asyncio.get_running_loop()
        client, collect = await loop.create_datagram_endpoint(_Collect, remote_addr=relay.address)
        sent: dict[bytes, float] = {}
        for i in range(200):
            payload = i.to_bytes(4, "big")
            sent[payload] = time.monotonic()
            client.sendto(payload)
            await asyncio.sleep(0.001)
        expected = relay.down.passed
        deadline = time.monotonic() + 10
        while len(collect.received) < expected and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            expected = relay.down.passed
        await asyncio.sleep(0.2)  # nothing more may come
        client.close()
    echo.close()
    assert len(collect.received) == relay.down.passed
    assert relay.up.lost + relay.up.passed == 200
    assert relay.down.passed + relay.down.lost == relay.up.passed
    assert 0.5 < len(collect.received) / 200 < 0.8  # two 20 % losses in a row: 64 % expected
    assert all(at - sent[data] >= 0.1 for at, data in collect.received), "two one-way delays of 50 ms"
    order = [int.from_bytes(data, "big") for _, data in collect.received]
    assert order == sorted(order)


async def test_udp_relay_outage_passes_nothing_then_recovers() -> None:
    echo, echo_addr = await _udp_echo()
    async with UdpImpairmentRelay(echo_addr) as relay:
        loop = asyncio.get_running_loop()
        client, collect = await loop.create_datagram_endpoint(_Collect, remote_addr=relay.address)

        async def ping(tag: bytes) -> bool:
            before = len(collect.received)
            client.sendto(tag)
            for _ in range(20):
                await asyncio.sleep(0.02)
                if len(collect.received) > before:
                    return True
            return False

        assert await ping(b"before")
        relay.outage(0.6)
        assert not await ping(b"during")
        await asyncio.sleep(0.4)
        assert await ping(b"after")
        client.close()
    echo.close()


async def _tcp_echo() -> tuple[asyncio.Server, tuple[str, int]]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(4096):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[:2]


async def test_tcp_relay_delays_both_ways_cuts_and_refuses_during_an_outage() -> None:
    server, addr = await _tcp_echo()
    async with TcpImpairmentRelay(addr, delay=0.05) as relay:
        reader, writer = await asyncio.open_connection(*relay.address)
        started = time.monotonic()
        writer.write(b"hello")
        assert await asyncio.wait_for(reader.readexactly(5), 5) == b"hello"
        assert time.monotonic() - started >= 0.1

        relay.outage(0.5)
        assert await asyncio.wait_for(reader.read(10), 5) == b"", "the connection is cut"
        writer.close()
        r2, w2 = await asyncio.open_connection(*relay.address)
        assert await asyncio.wait_for(r2.read(10), 5) == b"", "a new one is refused"
        w2.close()
        assert relay.refused == 1

        await asyncio.sleep(0.5)
        r3, w3 = await asyncio.open_connection(*relay.address)
        w3.write(b"back")
        assert await asyncio.wait_for(r3.readexactly(4), 5) == b"back"
        w3.close()
    server.close()
    await server.wait_closed()
