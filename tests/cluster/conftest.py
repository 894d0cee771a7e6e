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
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.harness import Console, ServerProcess, free_port, port_open, terminate, wait_until
from tests.postgres_fixture import Postgres

PROCESSES = ("a", "b", "c")
START_TIMEOUT = 30.0


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
    proc: subprocess.Popen[str] | None = None

    @property
    def admin(self) -> Path:
        return self.root / "haproxy.sock"

    def config(self) -> str:
        devices = "\n".join(f"    server {name} 127.0.0.1:{p.device_port} check"
                            for name, p in self.backends.items())
        consoles = "\n".join(f"    server {name} 127.0.0.1:{p.console_port} check"
                             for name, p in self.backends.items())
        return f"""global
    stats socket {self.admin} mode 600 level admin
    maxconn 4096

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
        (self.root / "haproxy.cfg").write_text(self.config())
        subprocess.run([_binary("haproxy"), "-c", "-q", "-f", str(self.root / "haproxy.cfg")], check=True)
        log = (self.root / "haproxy.log").open("a")
        self.proc = subprocess.Popen([_binary("haproxy"), "-db", "-f", str(self.root / "haproxy.cfg")],
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

    def holders(self, device_id: str) -> set[str]:
        """The running processes the unit is connected to (as each logs its units' connections)."""
        return self.holders_of([device_id])[device_id]

    def holders_of(self, device_ids: list[str]) -> dict[str, set[str]]:
        logs = {name: p.log() for name, p in self.processes.items() if p.proc is not None and p.proc.poll() is None}
        return {d: {name for name, log in logs.items()
                    if log.rfind(f"device {d} connected") > log.rfind(f"device {d} disconnected")}
                for d in device_ids}


@pytest.fixture(scope="package")
def admin(cluster: Cluster) -> Console:
    """The administrator, and Anne who may call (both log in on any process: one database)."""
    cluster.any.add_admin()
    cluster.any.add_admin("anne", "caregiver", "Anne, sygeplejerske")
    return Console(cluster.console)


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
        for name in PROCESSES:  # one after the other: the first creates the authority and the schema
            processes[name] = start_process(name, root / "server", database, nats)
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
