#!/usr/bin/env python3
"""Diagnostic only: ``kiosk-server`` on uvloop's event loop, to measure that choice of TLS.

uvloop is not a dependency of the project (see docs/benchmarks.md for why); install it
somewhere of its own and name that place, then point the bench at this file:

    .venv/bin/pip install --no-deps --target /tmp/uvloop uvloop==0.23.0
    PATH=$PWD/.venv/bin:$PATH KIOSK_BENCH_UVLOOP_PATH=/tmp/uvloop KIOSK_BENCH_SERVER_BIN=$PWD/bench/uvloop_server.py \\
        .venv/bin/python bench/enrollment_and_commands.py --devices 1000 --commands 200
"""

import os
import sys

sys.path.insert(0, os.environ["KIOSK_BENCH_UVLOOP_PATH"])

import uvloop  # not installed with the project (see above)

from kiosk.server.cli import main

if __name__ == "__main__":
    uvloop.install()
    main()
