#!/usr/bin/env python3
"""Three ``kiosk-server`` processes on PostgreSQL + NATS behind HAProxy, on this machine.

The same arrangement as tests/cluster/ (Debian's postgresql, nats-server and haproxy on
loopback, data in a temporary directory), with N simulated units (bench/sim_fleet.py: the
real device-side modules, one enrolled state directory each, all in one process, connecting
again after a drop as the agent does) enrolled and connected through HAProxy, which spreads
them (leastconn). Measured:

- enrollment of all N through HAProxy (8 threads), and the time until all are connected;
- units held, by process, and each process's resident memory per unit held;
- delivery, from the command's commit (its ``created_at``) to the moment its frame reaches
  the unit's link (the fleet notes it, before the agent's own work; one machine, one
  clock), all commands queued through process C (so two thirds cross to another process
  over NATS): "paced", pings to random units at 10 a second; "burst", a ping for every
  unit in one request (and the time until every result is stored);
- after ``kill -9`` of the process holding most units: the time until every unit is
  connected again, each to one living process.

    .venv/bin/python bench/cluster.py --units 300
    .venv/bin/python bench/cluster.py --units 10000

Before 2026-11-30 the fleet was N real agents (tests/cluster/fleet.py); at a few hundred
units their start-up was most of the run, at 10,000 it would have been hours.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.enrollment_and_commands import Deadline, enroll_all, raise_nofile, rss_kib  # noqa: E402
from tests import postgres_fixture  # noqa: E402
from tests.cluster.conftest import PROCESSES, Cluster, Fleet, HaProxy, Nats, start_process  # noqa: E402
from tests.harness import Console, wait_until  # noqa: E402

PACED, PACED_PER_SECOND = 200, 10
FRONT_UNITS_PER_HAPROXY = 6000  # two descriptors each, under this container's 20,000 per process


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def run(units: int, root: Path) -> dict[str, object]:
    figures: dict[str, object] = {"units": units, "load_at_start": os.getloadavg()}
    postgres = postgres_fixture.postgres.__wrapped__()  # type: ignore[attr-defined]
    pg = next(postgres)
    nats = Nats(root).start()
    processes = {}
    fronts: list[HaProxy] = []
    fleet = None
    try:
        database = pg.new_database()
        for name in PROCESSES:
            processes[name] = start_process(name, root / "server", database, nats)
        # A HAProxy holds two descriptors per unit and this container caps a process at 20,000,
        # so at 10,000 units two HAProxy processes share the address (SO_REUSEPORT, HAProxy's
        # default on Linux; the kernel spreads new connections between them), as two load
        # balancers behind one address would in a larger installation.
        front_count = units // FRONT_UNITS_PER_HAPROXY + 1
        maxconn = int(units / front_count * 1.2) + 500  # the kernel's hash spreads unevenly
        haproxy = HaProxy(root, processes, maxconn=maxconn)
        fronts.append(haproxy.start())
        for i in range(2, front_count + 1):
            fronts.append(HaProxy(root, processes, device_port=haproxy.device_port,
                                  console_port=haproxy.console_port, maxconn=maxconn, name=f"haproxy{i}").start())
        figures["haproxy_processes"] = len(fronts)
        cluster = Cluster(processes, nats, haproxy, root)
        wait_until(lambda: all("joined the cluster" in p.log() for p in processes.values()), 60)
        cluster.add_person("admin", "admin", "Admin")

        files: list[Path] = []
        for batch in range(0, units, 1000):  # the CLI makes at most 1000 at once
            files += cluster.provisioning_files(root / "provisioning" / str(batch), min(1000, units - batch))
        rss_before = {name: rss_kib(p.proc.pid)["VmRSS"] for name, p in processes.items() if p.proc is not None}
        started = time.monotonic()
        fleet_dir = root / "fleet"
        unit_dirs = [fleet_dir / "units" / f"unit{i:05d}" for i in range(units)]
        enrolled = enroll_all(unit_dirs, files, sequential=0, threads=8, deadline=Deadline(60 + units))
        assert len(enrolled.enrolled) == units, enrolled.errors
        figures["enrolled_s"] = round(time.monotonic() - started, 1)
        started = time.monotonic()
        proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "sim_fleet.py"), str(fleet_dir)], cwd=ROOT,
                                env={**os.environ, "PYTHONPATH": str(ROOT)}, text=True)
        fleet = Fleet(fleet_dir, proc, units)
        wait_until(fleet.all_connected, 60 + units, 1.0, what=f"{units} units connected")
        figures["connected_s"] = round(time.monotonic() - started, 1)
        figures["connections_by_haproxy"] = [  # the units' connections each one carries
            int(line.split(":")[1]) for front in fronts for line in front.command("show info").splitlines()
            if line.startswith("CurrConns:")]
        devices = fleet.device_ids()
        held = cluster.holders_of(devices)
        held_by_process = {name: sum(1 for h in held.values() if h == {name}) for name in PROCESSES}
        figures["held_by_process"] = held_by_process
        time.sleep(5)  # settle, as bench/enrollment_and_commands.py does before reading memory
        figures["kib_per_unit_by_process"] = {
            name: round((rss_kib(p.proc.pid)["VmRSS"] - rss_before[name]) / max(1, held_by_process[name]), 1)
            for name, p in processes.items() if p.proc is not None}

        through_c = Console(processes["c"].console)
        assert through_c.login() == 200
        paced: list[str] = []
        for device_id in random.Random(14).choices(devices, k=PACED):
            status, body = through_c.request("POST", f"/api/devices/{device_id}/commands", {"kind": "ping"})
            assert status == 202, body
            paced.append(body["id"])
            time.sleep(1 / PACED_PER_SECOND)
        queued_at = time.monotonic()
        command_ids: list[str] = []
        for start in range(0, len(devices), 1000):
            status, body = through_c.request("POST", "/api/commands",
                                             {"device_ids": devices[start:start + 1000], "kind": "ping"})
            assert status == 202 and not body["refused"], body
            command_ids += [q["id"] for q in body["queued"]]
        figures["queue_request_s"] = round(time.monotonic() - queued_at, 2)
        store = cluster.any.store()
        try:
            waiting = list(command_ids)

            def every_ping_done() -> bool:  # in order, each looked at until done (not all N per look)
                while waiting and (r := store.command(waiting[0])) is not None and r.state == "done":
                    waiting.pop(0)
                return not waiting

            wait_until(every_ping_done, 300 + units / 10, 0.5, what="every ping done")
            figures["burst_all_results_stored_s"] = round(time.monotonic() - queued_at, 2)
            wait_until(lambda: set(paced + command_ids) <= set(fleet.receipts()), 60, 1.0, what="every receipt")
            receipts = fleet.receipts()
            on_c = {d for d, h in held.items() if h == {"c"}}
            paced_local = [c for c in paced if (r := store.command(c)) is not None and r.device_id in on_c]
            paced_across = [c for c in paced if c not in set(paced_local)]
            for name, ids in (("paced", paced), ("paced_same_process", paced_local),
                              ("paced_across_nats", paced_across), ("burst", command_ids)):
                delivery_ms = [1000 * (receipts[c] - row.created_at) for c in ids
                               if (row := store.command(c)) is not None]
                figures[f"{name}_delivery_ms"] = {
                    "n": len(delivery_ms), "p50": round(statistics.median(delivery_ms), 1),
                    "p99": round(percentile(delivery_ms, 0.99), 1), "max": round(max(delivery_ms), 1)}
        finally:
            store.close()

        victim = max(PROCESSES, key=lambda name: figures["held_by_process"][name])  # type: ignore[index]
        victim_proc = processes[victim].proc
        assert victim_proc is not None
        victim_proc.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        victim_proc.wait()
        figures["killed"] = victim
        wait_until(lambda: fleet is not None and fleet.all_connected()
                   and all(len(h) == 1 for h in cluster.holders_of(devices).values()), 300 + units / 10, 0.25,
                   what="every unit back")
        figures["all_back_after_kill_s"] = round(time.monotonic() - killed, 1)
        figures["load_at_end"] = os.getloadavg()
        return figures
    finally:
        if fleet is not None:
            fleet.proc.terminate()
            fleet.proc.wait(30)
        for front in fronts:
            front.stop()
        for process in processes.values():
            process.stop()
        nats.stop()
        next(postgres, None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--units", type=int, default=300)
    args = parser.parse_args()
    raise_nofile(2 * args.units + 2000)  # inherited; at most 20,000 here, hence a second HAProxy past 6,000 units
    root = Path(tempfile.mkdtemp(prefix="kiosk-bench-cluster-"))
    try:
        print(json.dumps(run(args.units, root), indent=2))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
