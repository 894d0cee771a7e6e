"""Three ``kiosk-server`` processes on one PostgreSQL, NATS between them, HAProxy in front.

Debian's ``nats-server`` and ``haproxy`` (scripts/setup.sh installs them) run on loopback
with their files in a temporary directory. One cluster serves the whole package of tests
(it takes seconds to start on a loaded machine); a test that kills or restarts a part
brings it back before it ends.

HAProxy is set up as the README tells the municipality's IT: the device port in TCP mode
(TLS passes through, so each process sees the unit's client certificate), the console in
HTTP mode. Its admin socket lets a test steer new connections to one process (the others
"drained": they keep what they hold, and get nothing new).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from kiosk.server import cli
from tests.harness import (
    ADMIN_PASSWORD,
    BIN,
    AgentProcess,
    Console,
    ServerProcess,
    free_port,
    port_open,
    terminate,
    wait_until,
)
from tests.postgres_fixture import Postgres

PROCESSES = ("a", "b", "c")
START_TIMEOUT = 30.0
UNITS = 50  # the fleet's: held by process B
ROOT = Path(__file__).resolve().parents[2]


def _binary(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    if found is None:
        pytest.fail(f"{name} is not installed: run scripts/setup.sh (it installs the Debian package)")
    return found


@dataclass
class Nats:
    root: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> Nats:
        log = (self.root / "nats.log").open("a")
        self.proc = subprocess.Popen([_binary("nats-server"), "-a", "127.0.0.1", "-p", str(self.port)],
                                     stdout=log, stderr=subprocess.STDOUT, text=True, cwd=self.root)
        wait_until(lambda: port_open(self.port), START_TIMEOUT, what="nats-server")
        return self

    def stop(self) -> None:
        terminate(self.proc)


@dataclass
class HaProxy:
    root: Path
    backends: dict[str, ServerProcess]
    device_port: int = field(default_factory=free_port)
    console_port: int = field(default_factory=free_port)
    maxconn: int = 4096  # connections at once, all frontends (a unit holds one; bench/cluster.py raises it)
    # Its files' stem: bench/cluster.py runs a second HAProxy on the same ports (SO_REUSEPORT).
    name: str = "haproxy"
    proc: subprocess.Popen[str] | None = None

    @property
    def admin(self) -> Path:
        return self.root / f"{self.name}.sock"

    def config(self) -> str:
        devices = "\n".join(f"    server {name} 127.0.0.1:{p.device_port} check"
                            for name, p in self.backends.items())
        consoles = "\n".join(f"    server {name} 127.0.0.1:{p.console_port} check"
                             for name, p in self.backends.items())
        return f"""global
    stats socket {self.admin} mode 600 level admin
    maxconn {self.maxconn}

defaults
    timeout connect 2s
    timeout client 5m
    timeout server 5m
    timeout tunnel 1h
    timeout check 2s
    retries 3
    option redispatch

frontend devices
    bind 127.0.0.1:{self.device_port}
    mode tcp
    default_backend devices

backend devices
    mode tcp
    balance leastconn
    default-server inter 1s fall 1 rise 1 on-marked-down shutdown-sessions
{devices}

frontend console
    bind 127.0.0.1:{self.console_port}
    mode http
    option forwardfor
    default_backend console

backend console
    mode http
    balance roundrobin
    default-server inter 1s fall 1 rise 1
{consoles}
"""

    def start(self) -> HaProxy:
        config = self.root / f"{self.name}.cfg"
        config.write_text(self.config())
        subprocess.run([_binary("haproxy"), "-c", "-q", "-f", str(config)], check=True)
        log = (self.root / f"{self.name}.log").open("a")
        self.proc = subprocess.Popen([_binary("haproxy"), "-db", "-f", str(config)],
                                     stdout=log, stderr=subprocess.STDOUT, text=True, cwd=self.root)
        wait_until(lambda: port_open(self.device_port) and port_open(self.console_port), START_TIMEOUT,
                   what="haproxy")
        return self

    def stop(self) -> None:
        terminate(self.proc)

    def command(self, line: str) -> str:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(self.admin))
            sock.sendall(line.encode() + b"\n")
            return b"".join(iter(lambda: sock.recv(4096), b"")).decode()

    @contextlib.contextmanager
    def only(self, name: str, backend: str = "devices") -> Iterator[None]:
        """New connections to ``backend`` (devices, console) go to process ``name`` alone while inside."""
        others = [n for n in self.backends if n != name]
        for other in others:
            self.command(f"set server {backend}/{other} state drain")
        try:
            yield
        finally:
            for other in others:
                self.command(f"set server {backend}/{other} state ready")


@dataclass
class Cluster:
    processes: dict[str, ServerProcess]
    nats: Nats
    haproxy: HaProxy
    root: Path

    @property
    def url(self) -> str:
        """The device port as units reach it: HAProxy's."""
        return f"https://127.0.0.1:{self.haproxy.device_port}"

    @property
    def console(self) -> str:
        return f"http://127.0.0.1:{self.haproxy.console_port}"

    @property
    def any(self) -> ServerProcess:
        return self.processes["a"]

    def cli(self, *args: str, stdin: str = "") -> str:
        """``kiosk-server`` on the cluster's data and database, run in this process: the same code,
        without the 15 s a Python start-up of the whole server costs on the loaded test machine."""
        out, umask = io.StringIO(), os.umask(0o077)
        try:
            with contextlib.redirect_stdout(out), mock.patch("sys.stdin", io.StringIO(stdin)):
                cli.main([*args, "--data", str(self.any.data), "--database", str(self.any.database)])
        finally:
            os.umask(umask)
        return out.getvalue()

    def provisioning_files(self, out: Path, count: int = 1) -> list[Path]:
        """Provisioning files naming HAProxy's address, as a municipality behind it hands out."""
        self.cli("enroll-token", "create", "--count", str(count), "--expires", "1h", "--server-url", self.url,
                 "--out", str(out))
        return sorted(out.glob("*.yaml"))

    def add_person(self, username: str, role: str, display_name: str) -> None:
        self.cli("user", "add", username, "--role", role, "--display-name", display_name, "--password-stdin",
                 stdin=ADMIN_PASSWORD + "\n")

    def add_citizen(self, name: str, device_id: str, caregiver: str) -> str:
        """A citizen with the unit assigned, once the unit has carried out the assignment."""
        added = json.loads(self.cli("citizen", "add", "--name", name, "--device", device_id,
                                    "--caregiver", caregiver, "--json"))
        store = self.any.store()
        try:
            wait_until(lambda: (row := store.command(added["assign_command"])) is not None and row.state == "done",
                       60, 0.2, what="the unit's assignment")
        finally:
            store.close()
        return str(added["citizen_id"])

    def holders(self, device_id: str) -> set[str]:
        """The running processes the unit is connected to (as each logs its units' connections)."""
        return self.holders_of([device_id])[device_id]

    def holders_of(self, device_ids: list[str]) -> dict[str, set[str]]:
        holding: dict[str, set[str]] = {d: set() for d in device_ids}
        for name, process in self.processes.items():
            if process.proc is None or process.proc.poll() is not None:
                continue
            last: dict[str, str] = {}  # each unit's last word in this process's log (one pass: 10,000 units)
            for device_id, word in re.findall(r"device (\S+) (connected|disconnected)", process.log()):
                last[device_id] = word
            for device_id, word in last.items():
                if word == "connected" and device_id in holding:
                    holding[device_id].add(name)
        return holding


@pytest.fixture(scope="package")
def admin(cluster: Cluster) -> Console:
    """The administrator, and Anne who may call (both log in on any process: one database)."""
    cluster.add_person("admin", "admin", "Admin")
    cluster.add_person("anne", "caregiver", "Anne, sygeplejerske")
    return Console(cluster.console)


@contextlib.contextmanager
def screen(agent: AgentProcess) -> Iterator[Path]:
    """The unit's screen program (headless, demo media, answering at once); yields its log."""
    log = agent.state.parent / f"{agent.state.name}-screen.log"
    with log.open("w") as out:
        proc = subprocess.Popen([str(BIN / "kiosk-ui"), "--state", str(agent.state), "--headless", "--demo-media",
                                 "--auto-answer-after", "0"], stdout=out, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until(lambda: '"screen": "idle"' in log.read_text(), 60, 0.2, what="the screen to show idle")
        yield log
    finally:
        terminate(proc)


def start_process(name: str, data: Path, database: str, nats: Nats, ports: tuple[int, int] | None = None,
                  ) -> ServerProcess:
    process = ServerProcess(data, database=database, name=name,
                            extra_args=["--nats", nats.url, "--process-name", name, "--trusted-proxy", "127.0.0.1"])
    if ports is not None:
        process.device_port, process.console_port = ports
    return process.start()


@pytest.fixture(scope="package")
def cluster(postgres: Postgres) -> Iterator[Cluster]:
    root = Path(tempfile.mkdtemp(prefix="kiosk-cluster-"))
    database = postgres.new_database()
    nats = Nats(root).start()
    processes: dict[str, ServerProcess] = {}
    haproxy: HaProxy | None = None
    try:
        first, *others = PROCESSES  # the first creates the authority and the schema, the others find them
        processes[first] = start_process(first, root / "server", database, nats)
        with ThreadPoolExecutor() as starting:
            for name, process in zip(others, starting.map(
                    lambda name: start_process(name, root / "server", database, nats), others), strict=True):
                processes[name] = process
        haproxy = HaProxy(root, processes).start()
        wait_until(lambda: all("joined the cluster" in p.log() for p in processes.values()), START_TIMEOUT,
                   what="every process in the cluster")
        yield Cluster(processes, nats, haproxy, root)
    finally:
        if haproxy is not None:
            haproxy.stop()
        for process in processes.values():
            process.stop()
        nats.stop()
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class Fleet:
    """Real agents in one process (tests/cluster/fleet.py), as it reports them."""

    root: Path
    proc: subprocess.Popen[str]
    units: int = UNITS

    def status(self) -> dict[str, dict[str, Any]]:
        try:
            return dict(json.loads((self.root / "fleet.json").read_text()))
        except (OSError, ValueError):
            return {}

    def device_ids(self) -> list[str]:
        return sorted(unit["device_id"] for unit in self.status().values())

    def all_connected(self) -> bool:
        status = self.status()
        return len(status) == self.units and all(unit["connected"] for unit in status.values())

    def receipts(self) -> dict[str, float]:
        """When each command's frame reached its unit (time.time()), by command id."""
        try:
            return dict(json.loads((self.root / "receipts.json").read_text()))
        except (OSError, ValueError):
            return {}

    def audits(self) -> dict[str, list[dict[str, Any]]]:
        """Each unit's own audit trail (what it accepted, refused and why), by device id."""
        return {unit["device_id"]: [json.loads(line) for line in (Path(path) / "audit.jsonl").read_text().splitlines()]
                for path, unit in self.status().items()}


@pytest.fixture(scope="package")
def fleet(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """Fifty units enrolled and connected through HAProxy while only process B took new connections."""
    root = tmp_path_factory.mktemp("fleet")
    files = [str(p) for p in cluster.provisioning_files(root / "provisioning", UNITS)]
    with cluster.haproxy.only("b"):
        proc = subprocess.Popen([sys.executable, "-m", "tests.cluster.fleet", str(root), *files],
                                cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, text=True)
        fleet = Fleet(root, proc)
        try:
            wait_until(fleet.all_connected, 180, 0.5, what=f"{UNITS} units enrolled and connected")
        except BaseException:
            terminate(proc)
            raise
    yield fleet
    terminate(proc)


@dataclass
class ScreenUnit:
    agent: AgentProcess
    device_id: str
    citizen_id: str  # Karen's, whom Anne may call
    screen_log: Path


@pytest.fixture(scope="package")
def screen_unit(cluster: Cluster, admin: Console, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScreenUnit]:
    """A unit with its screen program, connected through HAProxy to process B."""
    root = tmp_path_factory.mktemp("screen-unit")
    with cluster.haproxy.only("b"):
        agent = AgentProcess(root / "unit", cluster.provisioning_files(root / "prov")[0]).start()
        try:
            device_id = agent.wait_online(60)
        except BaseException:
            agent.stop()
            raise
    try:
        citizen_id = cluster.add_citizen("Karen Jensen", device_id, "anne")
        with screen(agent) as log:
            yield ScreenUnit(agent, device_id, citizen_id, log)
    finally:
        agent.stop()
