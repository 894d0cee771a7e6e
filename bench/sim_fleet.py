#!/usr/bin/env python3
"""Many simulated units in one process, for bench/cluster.py at thousands of units.

Each unit is bench/enrollment_and_commands.py's ``SimDevice``: its own enrolled state
directory, key and certificate, mutual TLS, every command checked with
``signing.verify_command`` and answered with a result sealed by its own key. Added here:
a unit whose link drops connects again after 0.5 to 1 s (the tests' agents' backoff cap is
1 s; a unit in the field waits up to 60 s), as the real agent does; it goes to whichever
process HAProxy gives it. Reports as tests/cluster/fleet.py does, so
``tests.cluster.conftest.Fleet`` reads it: ``fleet.json`` (each unit's device id and
whether its link is up) and ``receipts.json`` (when, ``time.time()``, each command's
frame reached its unit, before the unit's own work), every second.

Real agents (tests/cluster/fleet.py) cost a few hundred milliseconds of start-up each
and a file-backed audit trail; at 10,000 units that alone is the bench's run time.

    python bench/sim_fleet.py DIR        # DIR/units/*: enrolled state directories
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.enrollment_and_commands import Fleet, SimDevice, raise_nofile  # noqa: E402
from kiosk.protocol import messages as m  # noqa: E402
from kiosk.protocol.errors import ProtocolError  # noqa: E402

HANDSHAKES_AT_ONCE = 64
REPORT_SECONDS = 1.0

Receipts = dict[str, float]


class ReceiptTakingDevice(SimDevice):
    def __init__(self, root: Path, fleet: Fleet, receipts: Receipts) -> None:
        super().__init__(root, fleet)
        self.receipts = receipts

    async def _on_message(self, message: m.ServerToDevice) -> None:
        if isinstance(message, m.CommandDelivery):
            with contextlib.suppress(ProtocolError):
                self.receipts.setdefault(m.COMMAND.decode(message.envelope.payload).id, time.time())
        await super()._on_message(message)


async def hold(device: SimDevice, gate: asyncio.Semaphore) -> None:
    """Connected, and connected again whenever the link drops."""
    while True:
        await device.run(gate, asyncio.Queue())
        await asyncio.sleep(random.uniform(0.5, 1.0))


def write(path: Path, value: object) -> None:
    path.with_suffix(".new").write_text(json.dumps(value))
    path.with_suffix(".new").replace(path)


async def report(root: Path, devices: list[SimDevice], receipts: Receipts) -> None:
    frozen = False
    while True:
        write(root / "fleet.json", {str(d.state.root): {"device_id": d.device_id, "connected": d.connected}
                                    for d in devices})
        write(root / "receipts.json", receipts)
        if not frozen and all(d.connected for d in devices):
            gc.freeze()  # the connections' objects: no full collection walks them again (a bench pause)
            frozen = True
        await asyncio.sleep(REPORT_SECONDS)


async def main(root: Path) -> None:
    raise_nofile(len(list((root / "units").iterdir())) + 1000)
    receipts: Receipts = {}
    book = Fleet()
    devices: list[SimDevice] = [ReceiptTakingDevice(unit, book, receipts)
                                for unit in sorted((root / "units").iterdir())]
    gate = asyncio.Semaphore(HANDSHAKES_AT_ONCE)
    await asyncio.gather(report(root, devices, receipts), *(hold(d, gate) for d in devices))


if __name__ == "__main__":
    out = Path(sys.argv[1])
    logging.basicConfig(filename=out / "fleet.log", level=logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    asyncio.run(main(out))
