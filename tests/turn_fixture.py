"""A real coturn on loopback, for tests: the session fixture ``turn_server``.

Load it once, from the root conftest::

    pytest_plugins = ["tests.turn_fixture"]

(a test module may name it the same way; pytest loads it only once). It starts
Debian's ``turnserver`` through scripts/coturn.sh on a free loopback port with
a random secret, waits until coturn answers a STUN request, yields
``TurnServer(host, port, secret)`` and stops it when the session ends.

If ``turnserver`` is not installed the tests that use it are *skipped*, with a
message saying how to install it; any other failure to start is an error.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import secrets
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "coturn.sh"
HOST = "127.0.0.1"
START_ATTEMPTS = 3  # a free port can be taken between choosing it and coturn binding it
READY_TIMEOUT = 10.0  # seconds; coturn is ready in well under one on a loaded runner
STOP_TIMEOUT = 5.0

STUN_MAGIC_COOKIE = 0x2112A442
STUN_BINDING_REQUEST = 0x0001
STUN_BINDING_SUCCESS = 0x0101


class TurnServer(NamedTuple):
    host: str
    port: int
    secret: str


class CoturnDidNotStart(RuntimeError):
    pass


def stun_answers(host: str, port: int, timeout: float) -> bool:
    """Whether a STUN Binding request to (host, port) gets a success response."""
    transaction = secrets.token_bytes(12)
    request = struct.pack("!HHI12s", STUN_BINDING_REQUEST, 0, STUN_MAGIC_COOKIE, transaction)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        deadline = time.monotonic() + timeout
        try:
            sock.sendto(request, (host, port))
            while (left := deadline - time.monotonic()) > 0:
                sock.settimeout(left)
                data = sock.recv(2048)
                if len(data) >= 20 and data[8:20] == transaction:
                    message_type: int = struct.unpack("!H", data[:2])[0]
                    return message_type == STUN_BINDING_SUCCESS
        except OSError:  # timeout, or ICMP port unreachable: nobody listens yet
            pass
    return False


def free_port(host: str = HOST) -> int:
    """A port free for both UDP and TCP on ``host`` (coturn listens on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((host, 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((host, port))
                except OSError:
                    continue
                return port
    raise CoturnDidNotStart(f"no port free for both UDP and TCP on {host}")


def _coturn_command(port: int, rundir: Path) -> list[str]:
    command = [str(SCRIPT), "--port", str(port), "--dir", str(rundir)]
    # If pytest is killed without tearing down (a hard timeout, SIGKILL),
    # coturn gets SIGTERM instead of living on: the parent-death signal is kept
    # across the exec into turnserver. setpriv (util-linux, always on Debian)
    # sets it without a preexec_fn, which is unsafe once threads exist.
    setpriv = shutil.which("setpriv")
    if setpriv is not None:
        command = [setpriv, "--pdeathsig", "TERM", "--", *command]
    return command


def _log_tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after a bounded wait; always reaps the process."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(STOP_TIMEOUT)


def start_coturn(workdir: Path, secret: str) -> tuple[subprocess.Popen[bytes], int]:
    """Start coturn on a free port and wait until it answers; raises on failure."""
    failures: list[str] = []
    for attempt in range(1, START_ATTEMPTS + 1):
        port = free_port()
        rundir = workdir / f"attempt-{attempt}"
        rundir.mkdir()
        log = rundir / "coturn.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                _coturn_command(port, rundir),
                env={**os.environ, "COTURN_SECRET": secret},  # not on any command line
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline and process.poll() is None:
            if stun_answers(HOST, port, timeout=0.2):
                return process, port
        stop(process)
        failures.append(
            f"attempt {attempt}, port {port}, exit code {process.returncode}:\n{_log_tail(log)}"
        )
    raise CoturnDidNotStart(
        f"coturn did not start and answer STUN on {HOST} within {READY_TIMEOUT:.0f} s "
        f"({START_ATTEMPTS} attempts):\n\n" + "\n\n".join(failures)
    )


@pytest.fixture(scope="session")
def turn_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TurnServer]:
    if shutil.which("turnserver") is None:
        pytest.skip(
            "coturn's turnserver is not installed; install it with "
            "`apt-get install coturn` (scripts/setup.sh does this)"
        )
    with running_coturn(tmp_path_factory.mktemp("coturn")) as turn:
        yield turn


@contextlib.contextmanager
def running_coturn(workdir: Path) -> Iterator[TurnServer]:
    """coturn with a fresh secret, once it accepts logins; stopped on leaving (tests and benches)."""
    secret = secrets.token_hex(32)
    process, port = start_coturn(workdir, secret)
    try:
        turn = TurnServer(HOST, port, secret)
        # in a thread of its own: the fixture may be set up from inside an async test's loop
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pool.submit(lambda: asyncio.run(logins_work(turn))).result()
        yield turn
    finally:
        stop(process)


async def logins_work(turn: TurnServer, wanted: int = 4, timeout: float = 15.0) -> None:
    """Wait until coturn grants allocations to a credential.

    Just after it starts, a login can fail ("database is locked", then "Cannot find
    credentials" in its log) while its auth threads open their SQLite database; the
    STUN check above does not log in, so without this the first test to use coturn
    would meet that.
    """
    from aioice.stun import TransactionFailed
    from aioice.turn import create_turn_endpoint

    from kiosk.server.turn import issue_credentials

    creds = issue_credentials(turn.secret, "fixture-check", now=time.time())
    deadline = time.monotonic() + timeout
    granted = 0
    while granted < wanted:
        if time.monotonic() > deadline:
            raise CoturnDidNotStart(f"coturn granted only {granted} allocations in {timeout:.0f} s")
        try:
            relay, _ = await asyncio.wait_for(create_turn_endpoint(
                asyncio.DatagramProtocol, server_addr=(turn.host, turn.port),
                username=creds.username, password=creds.credential), 2)
        except (TimeoutError, TransactionFailed):
            await asyncio.sleep(0.1)
            continue
        relay.close()
        granted += 1
