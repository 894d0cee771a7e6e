#!/usr/bin/env python3
"""Diagnostic only: where a held unit's memory goes, by Python allocation site.

``kiosk-server`` with two signals added: the first SIGUSR1 starts ``tracemalloc`` (after
start-up and enrollment, so only what comes later is traced), each later one writes a
snapshot to ``$KIOSK_TRACE_OUT/N.snap``. Point the server bench at it, signal it by hand,
then read a snapshot per connected unit:

    KIOSK_TRACE_OUT=/tmp/trace KIOSK_BENCH_SERVER_BIN=$PWD/bench/server_tracemalloc.py PATH=$PWD/.venv/bin:$PATH \\
        .venv/bin/python bench/enrollment_and_commands.py --devices 300 --commands 5 --burst 0 --mass 0 --settle 40
    kill -USR1 <server pid>     # when the bench prints "enrolled"; again once it prints "connected"
    .venv/bin/python bench/server_tracemalloc.py /tmp/trace/1.snap <units connected>

Tracing slows the server several times; its latencies mean nothing, its sizes do
(C allocations outside Python's allocators, OpenSSL's among them, are not seen).
"""

import itertools
import os
import signal
import sys
import tracemalloc


def serve() -> int:
    count = itertools.count()

    def on_signal(*_: object) -> None:
        n = next(count)
        if n == 0:
            tracemalloc.start(10)
        else:
            tracemalloc.take_snapshot().dump(f"{os.environ['KIOSK_TRACE_OUT']}/{n}.snap")

    os.makedirs(os.environ["KIOSK_TRACE_OUT"], exist_ok=True)
    signal.signal(signal.SIGUSR1, on_signal)
    from kiosk.server.cli import main
    main()
    return 0


def report(path: str, units: int) -> None:
    snapshot = tracemalloc.Snapshot.load(path)
    total = sum(s.size for s in snapshot.statistics("filename"))
    print(f"traced since the first signal: {total / 1024:.0f} KiB, {total / 1024 / units:.1f} KiB a unit")
    for stat in snapshot.statistics("lineno")[:25]:
        print(f"{stat.size / 1024 / units:8.2f} KiB a unit {stat.count / units:7.1f} blocks  {stat.traceback[0]}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1].endswith(".snap"):
        report(sys.argv[1], int(sys.argv[2]))
    else:
        sys.exit(serve())
