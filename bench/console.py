"""The console's API with 10,000 units and a year of call records: p50/p99 per route.

Run from the repository root:

    PYTHONPATH=$PWD nice .venv/bin/python bench/console.py [--units 10000] [--days 365] [--requests 200]

It generates a municipality into a fresh data directory (written straight into the
server's database with SQLAlchemy, as a year of use would leave it): ``--units`` enrolled
units, each with a citizen; 400 caregivers in 20 teams, each citizen in the care of two;
1.5 planned visits per citizen (daily, weekdays, weekly, once); three calls a week per
citizen for ``--days`` days (about 1.5 million records for a year) with the end reasons
in realistic shares, each with its ``call-ended`` entry in the hash-chained audit log. Then it
starts a real ``kiosk-server`` on it (127.0.0.1, free ports), logs in as an administrator
and a manager, warms each route once (the figures count the finished days once, on the first
request; that time is printed too), and times ``--requests`` requests of each route from one
client, from just before the request to its last byte.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import statistics
import tempfile
import time
import urllib.request
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from kiosk.server import auth, teams
from kiosk.server.app import Server
from kiosk.server.store import audit, calls, care_team, citizens, devices, users, visits
from tests.harness import ADMIN_PASSWORD, Console, ServerProcess

TZ = ZoneInfo("Europe/Copenhagen")
TEAMS = [f"Team {n:02d}" for n in range(20)]
REASONS = (["hung_up_by_staff"] * 70 + ["hung_up_by_citizen"] * 12 + ["not_answered"] * 8
           + ["device_offline"] * 4 + ["screen_not_running"] * 2 + ["media_failed"] * 1
           + ["connection_lost"] * 1 + ["cancelled_by_caller"] * 2)
BATCH = 20_000


def generate(data: Path, units: int, days: int, seed: int = 7, calls_per_week: float = 3) -> dict[str, int]:
    """A municipality after a year of use, written into the server's own database."""
    rng = random.Random(seed)
    server = Server.open(data, "Bench Kommune")  # the CA, keys and every table, as `serve` makes them
    store = server.store
    now = time.time()
    password = auth.hash_password(ADMIN_PASSWORD)
    staff = [f"caregiver{n:03d}" for n in range(400)]
    counts = {"units": units, "staff": len(staff)}
    with store.tx() as conn:
        conn.execute(users.insert(), [
            {"username": u, "password_hash": password, "role": role, "created_at": now, "display_name": None}
            for u, role in [("admin", "admin"), ("mette", "management"), *((s, "caregiver") for s in staff)]])
        for i, name in enumerate(staff):
            teams.set_teams(conn, name, [TEAMS[i % len(TEAMS)]])
        device_ids = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(units)]
        conn.execute(devices.insert(), [
            {"id": d, "cert_serial": f"{i:x}", "cert_pem": "-----BEGIN CERTIFICATE-----\n(bench)\n",
             "enrolled_at": now - days * 86400, "revoked_at": None, "state": "assigned",
             "agent_version": "0.1.0", "last_seen": now - rng.uniform(0, 86400), "online": False}
            for i, d in enumerate(device_ids)])
        citizen_ids = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(units)]
        conn.execute(citizens.insert(), [{"id": c, "name": f"Borger {i}", "device_id": d, "created_at": now}
                                         for i, (c, d) in enumerate(zip(citizen_ids, device_ids, strict=True))])
        care = {c: rng.sample(staff, 2) for c in citizen_ids}
        conn.execute(care_team.insert(), [{"username": u, "citizen_id": c} for c, us in care.items() for u in us])
        plans = []
        for c in citizen_ids:
            for _ in range(rng.choice((1, 2))):
                plans.append({"id": str(uuid.uuid4()), "citizen_id": c, "at": now - rng.uniform(0, days * 86400),
                              "staff_name": "Anne", "staff_role": "Sygeplejerske", "kind": "",
                              "repeat": rng.choice(("daily", "weekdays", "weekly", "once")),
                              "created_by": care[c][0], "created_at": now})
        conn.execute(visits.insert(), plans)
        counts["visits"] = len(plans)
    # the calls, oldest first, each with its audit entry chained to the one before
    start = now - days * 86400
    records = sorted((start + rng.uniform(0, days * 86400), c) for c in citizen_ids
                     for _ in range(round(calls_per_week * days / 7)))
    counts["calls"] = len(records)
    with store.read() as conn:
        prev = conn.execute(sa.select(audit.c.hash).order_by(audit.c.seq.desc()).limit(1)).scalar() or ""
    # one transaction per batch, with room for the indexes in memory: one transaction of a year
    # spills SQLite's page cache again and again (hours instead of minutes)
    for first in range(0, len(records), BATCH):
        with store.tx() as conn:
            if conn.dialect.name == "sqlite":
                conn.exec_driver_sql("PRAGMA cache_size = -262144")  # 256 MiB, this connection
            rows, entries = [], []
            for placed_at, citizen_id in records[first:first + BATCH]:
                reason = rng.choice(REASONS)
                made = reason in ("hung_up_by_staff", "hung_up_by_citizen", "connection_lost")
                talk = rng.uniform(30, 600) if made else None
                call_id, caller = str(uuid.uuid4()), care[citizen_id][rng.randrange(2)]
                ended = placed_at + 8 + (talk or 20)
                rows.append({"id": call_id, "caller": caller, "citizen_id": citizen_id, "device_id": None,
                             "placed_at": placed_at, "rang_at": placed_at + 1,
                             "answered_at": placed_at + 6 if made else None,
                             "connected_at": placed_at + 7 if made else None, "ended_at": ended,
                             "end_reason": reason, "ring_seconds": 5.0, "talk_seconds": talk, "facts": None,
                             "quality_staff": None, "quality_device": None})
                detail = json.dumps({"call_id": call_id, "citizen_id": citizen_id, "reason": reason,
                                     "talk_seconds": talk}, sort_keys=True)
                digest = hashlib.sha256(json.dumps([prev, ended, caller, "call-ended", None, detail],
                                                   separators=(",", ":")).encode()).hexdigest()
                entries.append({"at": ended, "actor": caller, "action": "call-ended", "device_id": None,
                                "detail": detail, "hash": digest})
                prev = digest
            conn.execute(calls.insert(), rows)
            conn.execute(audit.insert(), entries)
    store.close()
    return counts


def cpu_seconds(pid: int) -> float:
    """The CPU time a process has used (user and system): what a request costs the server, whatever
    else the machine is doing, where the wall time of a loaded machine says mostly how loaded it is."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed(console: Console, path: str, n: int) -> list[float]:
    times = []
    for _ in range(n):
        started = time.perf_counter()
        with console.opener.open(urllib.request.Request(console.base + path), timeout=60) as answer:
            answer.read()
            assert answer.status == 200, (path, answer.status)
        times.append(1000 * (time.perf_counter() - started))
    return sorted(times)


ROUTES = [  # (who, path): what the administrators' and management's pages ask for
    ("admin", "/api/me"),
    ("admin", "/api/audit"),
    ("admin", "/api/audit?actor=caregiver007"),
    ("admin", "/api/audit?action=call-ended&limit=50"),
    ("admin", "/api/audit?since={week_ago}&until={now}&limit=100"),
    ("admin", "/api/calls"),
    ("admin", "/api/citizens"),
    ("admin", "/api/devices"),
    ("admin", "/api/units?q=ffff"),
    ("admin", "/api/units?state=assigned"),
    ("admin", "/units?q=ffff"),
    ("admin", "/units?state=assigned"),
    ("admin", "/audit"),
    ("admin", "/audit?actor=caregiver007"),
    ("mette", "/api/figures"),
    ("mette", "/api/figures?period=week"),
    ("mette", "/api/figures?period=day&from={month_ago}"),
    ("mette", "/api/figures.csv"),
    ("mette", "/figures"),
    ("mette", "/figures?period=week"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--calls-per-week", type=float, default=3.0, help="per citizen (3: about 1.5 million "
                        "records a year for 10,000 units)")
    parser.add_argument("--only", default="", help="time only the routes whose path holds this text")
    parser.add_argument("--data", type=Path, help="generate into this directory once and reuse it on later "
                        "runs (default: a fresh temporary one)")
    args = parser.parse_args()
    print(f"load before: {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or Path(tmp) / "server"
        if not (data / "kiosk.db").exists():
            started = time.perf_counter()
            counts = generate(data, args.units, args.days, calls_per_week=args.calls_per_week)
            print(f"generated {counts} in {time.perf_counter() - started:.0f} s")
        print(f"database {(data / 'kiosk.db').stat().st_size / 2**20:.0f} MiB")
        server = ServerProcess(data).start()
        try:
            people = {}
            for name in ("admin", "mette"):
                people[name] = Console(server.console)
                assert people[name].login(name) == 200
            now = time.time()
            today = datetime.now(TZ).date()
            values = {"now": f"{now:.0f}", "week_ago": f"{now - 7 * 86400:.0f}",
                      "month_ago": (today - timedelta(days=30)).isoformat()}
            first = time.perf_counter()
            timed(people["mette"], "/api/figures", 1)
            print(f"first figures request (counts {args.days} finished days once): "
                  f"{time.perf_counter() - first:.1f} s")
            assert server.proc is not None
            print(f"{'route':<58} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'server CPU ms':>14}")
            results: dict[str, Any] = {}
            for who, template in (r for r in ROUTES if args.only in r[1]):
                path = template.format(**values)
                timed(people[who], path, 3)  # warm
                cpu = cpu_seconds(server.proc.pid)
                ms = timed(people[who], path, args.requests)
                cpu_ms = 1000 * (cpu_seconds(server.proc.pid) - cpu) / args.requests  # mean per request
                p99 = ms[math.ceil(0.99 * len(ms)) - 1]  # nearest rank: of 100, the 99th (before: the 100th)
                results[template] = (statistics.median(ms), p99, ms[-1], cpu_ms)
                print(f"{template:<58} {statistics.median(ms):8.1f} {p99:8.1f} {ms[-1]:8.1f} {cpu_ms:14.1f}",
                      flush=True)
            chain = timed(people["admin"], "/api/audit/chain", 3)
            print(f"{'/api/audit/chain (every entry; not a page)':<58} {statistics.median(chain):8.1f} "
                  f"{chain[-1]:8.1f} {chain[-1]:8.1f}")
        finally:
            server.stop()
    print(f"load after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
