"""CPU an event loop spends to be woken by another thread once a frame, and nothing else.

Run from the repository root:

    python bench/loop_wake.py [--wakes 150] [--rounds 3] [--uvloop PATH]

Our video send path hands each encoded frame from the capture thread to aiortc's
sender on the event loop (``loop.call_soon_threadsafe``, a future the sender's
task awaits).  ``bench/media_cpu.py`` counts the loop's CPU a frame with the
track's and aiortc's work in it; this measures the floor under that: a thread
that sleeps to a 30 fps slot and wakes the loop, which fulfils a future a task
awaits and does nothing more, against a plain thread that only sleeps to the
same slots.  The difference is what any sender on the loop pays a frame before
it does any work (on this PVM guest a wake runs cold: caches and TLB were
flushed by whatever ran on the core meanwhile).

``--uvloop PATH`` (a diagnostic, uvloop is not a dependency) also runs the loop
rounds on uvloop's loop, imported from PATH:

    .venv/bin/pip install --no-deps --target /tmp/uvloop uvloop==0.23.0
    .venv/bin/python bench/loop_wake.py --uvloop /tmp/uvloop
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

FPS = 30
WARMUP = 10


def paced(count: int, each: Callable[[], None]) -> None:
    """Call ``each`` at 30 fps slots, sleeping between them as the capture thread does."""
    start = time.monotonic()
    for i in range(count):
        time.sleep(max(0.0, start + i / FPS - time.monotonic()))
        each()


def thread_only(wakes: int) -> float:
    """CPU µs a wake of a plain thread that sleeps to each slot (the floor of any thread's wake)."""
    started = 0
    count = 0

    def tick() -> None:
        nonlocal started, count
        count += 1
        if count == WARMUP:
            started = time.thread_time_ns()

    paced(WARMUP + wakes, tick)
    return (time.thread_time_ns() - started) / wakes / 1000


async def loop_wakes(wakes: int) -> float:
    """CPU µs the loop's thread spends per wake: a future fulfilled from another thread, awaited."""
    loop = asyncio.get_running_loop()
    waiting: list[asyncio.Future[None]] = [loop.create_future()]

    def deliver() -> None:  # on the loop, as CaptureTrack._deliver
        if not waiting[0].done():
            waiting[0].set_result(None)

    poster = threading.Thread(target=paced, args=(WARMUP + wakes, lambda: loop.call_soon_threadsafe(deliver)))
    poster.start()
    started = 0
    for i in range(WARMUP + wakes):
        if i == WARMUP:
            started = time.thread_time_ns()
        await waiting[0]
        waiting[0] = loop.create_future()
    spent = time.thread_time_ns() - started
    await asyncio.to_thread(poster.join)
    return spent / wakes / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wakes", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--uvloop", type=Path, help="also run on uvloop, imported from this directory")
    args = parser.parse_args()
    print(f"load average {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
    rows: dict[str, list[float]] = {"plain thread (sleep only)": [], "asyncio loop": []}
    new_uvloop: Callable[[], asyncio.AbstractEventLoop] | None = None
    if args.uvloop is not None:
        sys.path.insert(0, str(args.uvloop))
        import uvloop

        new_uvloop = uvloop.new_event_loop
        rows["uvloop loop"] = []
    for _ in range(args.rounds):  # interleaved, so each sees the same machine speed
        rows["plain thread (sleep only)"].append(thread_only(args.wakes))
        rows["asyncio loop"].append(asyncio.run(loop_wakes(args.wakes)))
        if new_uvloop is not None:
            with asyncio.Runner(loop_factory=new_uvloop) as runner:
                rows["uvloop loop"].append(runner.run(loop_wakes(args.wakes)))
    for name, values in rows.items():
        print(f"{name}: median {statistics.median(values):.0f} µs CPU a wake "
              f"({', '.join(f'{v:.0f}' for v in values)}), {args.wakes} wakes at {FPS} fps a round")
    print(f"load average {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")


if __name__ == "__main__":
    main()
