"""Benchmark: what a command's lifecycle costs the store, per acknowledgement and per result.

    .venv/bin/python bench/store_commands.py --commands 300 --rounds 5
    .venv/bin/python bench/store_commands.py --compare-with b656f6b
    .venv/bin/python bench/store_commands.py --database postgresql://USER@127.0.0.1:PORT/NAME

Each round opens a fresh SQLite store in a temporary directory (WAL, as the server runs
it), queues N commands for one device, then times ``mark_delivered`` (what a device's
CommandAck does) and ``finish_command`` in its own write transaction (what a verified
result does), one command at a time. ``--compare-with REV`` also times the store.py of
that git revision the same way, interleaved round by round, so both see the same load.
``--database URL`` also times the current store on that (empty) PostgreSQL database, each
round under its own device, interleaved with the SQLite rounds: the time one store call
holds the event loop with the synchronous driver, on each database.

This is a benchmark, not a test: it reports, it does not assert.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kiosk.server import store as current_store  # noqa: E402


def store_at(revision: str, workdir: Path) -> ModuleType:
    """kiosk/server/store.py as it was at ``revision``, loaded as its own module."""
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{revision}:kiosk/server/store.py"],
                            check=True, capture_output=True, text=True).stdout
    path = workdir / f"store_{revision}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


def one_round(module: ModuleType, commands: int, workdir: Path, url: str | None = None) -> tuple[float, float]:
    """Microseconds per acknowledgement and per result, over ``commands`` commands."""
    directory = Path(tempfile.mkdtemp(dir=workdir))
    store = module.Store(url if url else f"sqlite:///{directory / 'kiosk.db'}")
    device = f"device-{directory.name}"
    ids = [f"{device}-command-{i}" for i in range(commands)]
    with store.tx() as conn:
        store.add_device(conn, device, "1", "(no certificate)", "bench")
        for command_id in ids:
            store.add_command(conn, command_id, device, "ping", b"{}", "bench", time.time() + 3600)
    started = time.perf_counter()
    for command_id in ids:
        store.mark_delivered(command_id)
    acknowledged = time.perf_counter()
    for command_id in ids:
        with store.tx() as conn:
            store.finish_command(conn, command_id, "ok", None, b"signed", {"outcome": "ok"})
    finished = time.perf_counter()
    store.close()
    return (acknowledged - started) / commands * 1e6, (finished - acknowledged) / commands * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commands", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--compare-with", metavar="REV", help="also time store.py of this git revision")
    parser.add_argument("--database", metavar="URL", help="also time the current store on this PostgreSQL database")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kiosk-store-bench-") as tmp:
        workdir = Path(tmp)
        stores: dict[str, ModuleType] = {"current": current_store}
        if args.compare_with:
            stores[args.compare_with] = store_at(args.compare_with, workdir)
        samples: dict[str, list[tuple[float, float]]] = {name: [] for name in stores}
        if args.database:
            samples["postgresql"] = []
        for _ in range(args.rounds):
            for name, module in stores.items():
                samples[name].append(one_round(module, args.commands, workdir))
            if args.database:
                samples["postgresql"].append(one_round(current_store, args.commands, workdir, args.database))
    print(f"store, {args.commands} commands x {args.rounds} rounds; load average {os.getloadavg()[0]:.1f}")
    for name, rounds in samples.items():
        ack = statistics.median(a for a, _ in rounds)
        result = statistics.median(r for _, r in rounds)
        print(f"  {name:<10} acknowledgement {ack:7.0f} µs   result {result:7.0f} µs   (median of rounds)")


if __name__ == "__main__":
    main()
