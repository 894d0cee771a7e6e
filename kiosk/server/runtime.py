"""The Python runtime under ten thousand connections: TLS buffers and the garbage collector.

Two costs measured at 10,000 connected units (docs/benchmarks.md):

- CPython's asyncio gives every TLS connection a 256 KiB read buffer, allocated and zeroed
  at once: about 60 % of the server's memory per unit. A unit sends small frames; a 16
  KiB buffer (one TLS record) reads them as well, in more reads only for large frames.
- A full garbage collection walks every object of every connection, on the one event
  loop that serves every unit: pauses of up to 1.2 s. Objects that live as long as a
  connection are moved out of the collector's sight with ``gc.freeze()`` once a wave of
  connections has settled, and young collections run less often.

Frozen objects are still freed by reference counting when a connection closes; only a
reference cycle among them outlives it. So after as many connections have come (and
gone) as there are units, the frozen set is collected once ("compacted"): one full pause,
at a rate set by reconnects, not by traffic. Each freeze and compaction is logged with
the process's resident memory, so memory is watched.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import gc
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Final

log = logging.getLogger("kiosk.server.runtime")

#: Bytes read from a TLS socket at once (CPython's default is 256 KiB per connection).
TLS_READ_BUFFER: Final = 16 * 1024
#: Young-generation threshold: allocations between young collections (CPython's default is 700).
GC_THRESHOLDS: Final = (10_000, 20, 50)
#: New connections that make a wave worth freezing, and the quiet that ends a wave.
WAVE: Final = 50
QUIET_SECONDS: Final = 2.0
#: A compaction is due once this many connections beyond the current ones have come since the last.
COMPACT_AFTER_AT_LEAST: Final = 1000


def prepare() -> None:
    """Before the ports open: small TLS read buffers, rarer young collections."""
    asyncio.sslproto.SSLProtocol.max_size = TLS_READ_BUFFER
    gc.set_threshold(*GC_THRESHOLDS)


def settle() -> None:
    """Start-up is done: collect its garbage once (nothing is connected yet), freeze what is left."""
    gc.collect()
    gc.freeze()
    log.info("start-up settled: %d objects frozen, resident %.0f MiB", gc.get_freeze_count(), resident_mib())


def resident_mib() -> float:
    """This process's resident memory (Linux: /proc/self/statm)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return float("nan")


class Due(Enum):
    NOTHING = "nothing"
    FREEZE = "freeze"
    COMPACT = "compact"


@dataclass
class FreezePolicy:
    """When to freeze and when to compact, from the count of connections made so far (pure)."""

    attaches_at_freeze: int = 0
    attaches_at_compaction: int = 0
    last_attaches: int = 0
    last_change: float = 0.0

    def observe(self, attaches: int, connected: int, now: float) -> Due:
        if attaches != self.last_attaches:
            self.last_attaches, self.last_change = attaches, now
            return Due.NOTHING
        if now - self.last_change < QUIET_SECONDS or attaches - self.attaches_at_freeze < WAVE:
            return Due.NOTHING
        self.attaches_at_freeze = attaches
        if attaches - self.attaches_at_compaction >= connected + max(connected, COMPACT_AFTER_AT_LEAST):
            self.attaches_at_compaction = attaches
            return Due.COMPACT
        return Due.FREEZE


def apply(due: Due, connected: int) -> None:
    """Do what the policy said, and log it with the resident memory."""
    if due is Due.NOTHING:
        return
    started = time.perf_counter()
    if due is Due.COMPACT:
        gc.unfreeze()
        found = gc.collect()
        gc.freeze()
        # Counting the frozen objects walks all of them: only here, where a full pause was paid anyway.
        log.info("compacted: %d unreachable found, %d objects frozen, resident %.0f MiB, took %.0f ms",
                 found, gc.get_freeze_count(), resident_mib(), 1000 * (time.perf_counter() - started))
        return
    gc.freeze()
    took = time.perf_counter() - started
    log.info("froze after a wave of connections: %d connected, resident %.0f MiB, took %.1f ms",
             connected, resident_mib(), 1000 * took)


async def watch(counts: Callable[[], tuple[int, int]], interval: float = 1.0) -> None:
    """Freeze after each wave of connections; ``counts`` gives (connections made so far, connected now)."""
    policy = FreezePolicy()
    while True:
        await asyncio.sleep(interval)
        attaches, connected = counts()
        apply(policy.observe(attaches, connected, time.monotonic()), connected)
