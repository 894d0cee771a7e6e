"""What a password guess costs the server, checked and refused.

Run from the repository root:

    PYTHONPATH=$PWD .venv/bin/python bench/login_backoff.py [--guesses 60]

It starts a real ``kiosk-server`` on free 127.0.0.1 ports in a temporary
directory, adds one account, and sends ``--guesses`` wrong passwords for it in a
row from one client, timing each answer from just before the request to its last
byte. The first few are checked (argon2, ``401``); then the address must wait and
each guess is refused at once (``429`` with ``Retry-After``), costing no argon2.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from tests.harness import Console, ServerProcess


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guesses", type=int, default=60)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(Path(tmp) / "server").start()
        try:
            server.add_admin()
            console, times = Console(server.console), dict[int, list[float]]()
            for i in range(args.guesses):
                started = time.perf_counter()
                status, _ = console.request("POST", "/api/login", {"username": "admin", "password": f"guess {i}"})
                times.setdefault(status, []).append(1000 * (time.perf_counter() - started))
        finally:
            server.stop()
    for status, ms in sorted(times.items()):
        ms.sort()
        print(f"{status}: n={len(ms)} median {statistics.median(ms):.1f} ms, "
              f"p90 {ms[int(0.9 * (len(ms) - 1))]:.1f} ms, max {ms[-1]:.1f} ms")


if __name__ == "__main__":
    main()
