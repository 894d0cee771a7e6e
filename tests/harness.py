"""Real processes for end-to-end tests: a municipality server and device agents on loopback.

Everything is driven the way logistics and support staff drive it: through the
``kiosk-server`` and ``kiosk-agent`` commands, and the console's HTTP API. The server
runs as its own process; its administrative commands run in the test's process
(:func:`kiosk_server_cli`: the same parser and code, without a new Python for every look).
"""

from __future__ import annotations

import contextlib
import http.cookiejar
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kiosk.server import cli as server_cli
from kiosk.server.app import Server
from kiosk.server.console_api import make_provisioning_files
from kiosk.server.store import Store

BIN = Path(sys.executable).parent
ADMIN_PASSWORD = "correct horse battery"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], Any], timeout: float = 15.0, interval: float = 0.05, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")


#: One thread runs them, one at a time: a call swaps this process's stdin, stdout and stderr,
#: and its own thread has no event loop (the store refuses a blocking call on a loop's thread,
#: and async tests and Playwright's sync API run one on theirs).
_CLI_THREAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kiosk-server-cli")


def kiosk_server_cli(*args: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """``kiosk-server *args`` as staff run it (its parser, its code, its output and exit code),
    run in this process instead of a new one.

    The tests poll the server's state through its CLI (a command's state, the device list, a
    roll-out) every 0.1-1 s while a unit boots or a call runs. A new Python importing the
    server costs ~2 CPU-seconds (4 s at a load of 5), so every wait kept a core busy importing,
    starving the units and calls under test (five call tests failed in a fresh-clone
    run); in this process, where the server's modules are loaded once, a call costs
    20-130 ms. The console script itself is run as a process by the tests of its own
    (tests/server/test_migrate.py, tests/e2e/test_backup.py) and by every ``serve``."""
    proc = _CLI_THREAD.submit(_run_server_cli, list(args), stdin or "").result()
    if check and proc.returncode != 0:
        raise AssertionError(f"kiosk-server {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def _run_server_cli(args: list[str], stdin: str) -> subprocess.CompletedProcess[str]:
    out, err = io.StringIO(), io.StringIO()
    code = 0
    umask = os.umask(0o077)  # main() sets the CLI's own; this process gets its own back after
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            sys.stdin, real_stdin = io.StringIO(stdin), sys.stdin
            try:
                server_cli.main(args)
            finally:
                sys.stdin = real_stdin
    except SystemExit as exc:  # argparse's usage errors (2), fail()'s (1), an explicit exit
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if isinstance(exc.code, str):
            err.write(exc.code + "\n")
    finally:
        os.umask(umask)
    return subprocess.CompletedProcess(["kiosk-server", *args], code, out.getvalue(), err.getvalue())


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def run(*args: str | Path, check: bool = True, stdin: str | None = None, env: dict[str, str] | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, input=stdin,
                          env={**os.environ, **(env or {})}, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def terminate(proc: subprocess.Popen[str] | None) -> None:
    """SIGTERM, as systemd would stop the service; SIGKILL if it does not stop in time."""
    if proc and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class ServerProcess:
    data: Path
    device_port: int = field(default_factory=free_port)
    console_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[str] | None = None
    log_path: Path | None = None
    extra_args: list[str] = field(default_factory=list)
    database: str | None = None  # a PostgreSQL URL; None: SQLite in the data directory
    name: str = ""  # several processes on one data directory (a cluster) log to files of their own

    @property
    def database_args(self) -> list[str]:
        return ["--database", self.database] if self.database else []

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.device_port}"

    @property
    def console(self) -> str:
        return f"http://127.0.0.1:{self.console_port}"

    def start(self, municipality: str = "Testby Kommune") -> ServerProcess:
        self.log_path = self.data.parent / f"{self.name or self.data.name}-server.log"
        log = self.log_path.open("a")
        self.proc = subprocess.Popen(
            [str(BIN / "kiosk-server"), "serve", "--data", str(self.data), "--municipality", municipality,
             "--device-listen", f"127.0.0.1:{self.device_port}",
             "--console-listen", f"127.0.0.1:{self.console_port}", *self.database_args, *self.extra_args],
            stdout=log, stderr=subprocess.STDOUT, text=True)
        # 60 s: at a load average of 70 on this shared machine the server took more than 20 s to listen
        wait_until(lambda: port_open(self.device_port) and port_open(self.console_port), 60, what="server ports")
        return self

    def stop(self) -> None:
        terminate(self.proc)

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path and self.log_path.exists() else ""

    def store(self) -> Store:
        """The server's database opened in the test's process, as the CLI opens it."""
        return Store.in_directory(self.data, database=self.database)

    def cli(self, *args: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return kiosk_server_cli(*args, "--data", str(self.data), *self.database_args, check=check, stdin=stdin)

    def cli_json(self, *args: str) -> Any:
        return json.loads(self.cli(*args, "--json").stdout)

    def provisioning_file(self, out: Path, expires: str = "1d") -> Path:
        lines = self.cli("enroll-token", "create", "--count", "1", "--expires", expires,
                         "--server-url", self.url, "--out", str(out)).stdout.split()
        return Path(lines[0])

    def expired_provisioning_file(self, out: Path) -> Path:
        """A token made an hour ago that lived a minute (it waited on the shelf): written to the
        running server's database through the CLI's own code on a clock set back, not waited for."""
        an_hour_ago = Server.open(self.data, clock=lambda: time.time() - 3600, database=self.database)
        try:
            [(name, content)] = make_provisioning_files(an_hour_ago.store, an_hour_ago.authority, self.url,
                                                        1, 60.0, "cli:test")
        finally:
            an_hour_ago.store.close()
        out.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(content)
        return out / name

    def send(self, device_id: str, kind: str, *args: str, expires: str = "1h") -> str:
        cmd = ["command", "send", device_id, kind, "--expires", expires]
        for a in args:
            cmd += ["--arg", a]
        return str(self.cli_json(*cmd)["id"])

    def show(self, command_id: str) -> dict[str, Any]:
        return dict(self.cli_json("command", "show", command_id))

    def wait_command(self, command_id: str, states: tuple[str, ...] = ("done", "failed", "expired"),
                     timeout: float = 20) -> dict[str, Any]:
        return dict(wait_until(lambda: (v := self.show(command_id))["state"] in states and v, timeout,
                               0.1, what=f"command {command_id} to reach {states}"))

    def add_admin(self, username: str = "admin", role: str = "admin", display_name: str | None = None) -> None:
        extra = ["--display-name", display_name] if display_name else []
        self.cli("user", "add", username, "--role", role, *extra, "--password-stdin", stdin=ADMIN_PASSWORD + "\n")

    def add_citizen(self, name: str, device_id: str, *caregivers: str) -> str:
        args = ["citizen", "add", "--name", name, "--device", device_id]
        for caregiver in caregivers:
            args += ["--caregiver", caregiver]
        out = self.cli_json(*args)
        self.wait_command(out["assign_command"])
        return str(out["citizen_id"])


@dataclass
class AgentProcess:
    state: Path
    provision: Path | None
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[str] | None = None
    extra_args: list[str] = field(default_factory=list)

    @property
    def log_path(self) -> Path:
        return self.state.parent / f"{self.state.name}-agent.log"

    def start(self) -> AgentProcess:
        args = [str(BIN / "kiosk-agent"), "run", "--state", str(self.state), "--backoff-cap", "1", *self.extra_args]
        if self.provision:
            args += ["--provision", str(self.provision)]
        self.proc = subprocess.Popen(args, stdout=self.log_path.open("a"), stderr=subprocess.STDOUT, text=True,
                                     env={**os.environ, **self.env})
        return self

    def stop(self) -> None:
        terminate(self.proc)

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def status(self) -> dict[str, Any]:
        return dict(json.loads(run(BIN / "kiosk-agent", "status", "--state", self.state, "--json").stdout))

    def wait_online(self, timeout: float = 20) -> str:
        status = wait_until(lambda: (s := self.status())["server_online"] and s, timeout, 0.1,
                            what=f"agent {self.state.name} online")
        return str(status["device_id"])

    def audit(self) -> list[dict[str, Any]]:
        out = run(BIN / "kiosk-agent", "audit", "--state", self.state).stdout
        return [json.loads(line) for line in out.splitlines()]


class Console:
    """A person at the console API, with a session cookie like a browser."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.headers: dict[str, str] = {}
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def request(self, method: str, path: str, body: Any = None, raw: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, Any]:
        """One request; the response's headers are kept in ``self.headers``."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json", **(headers or {})})
        try:
            with self.opener.open(req, timeout=20) as resp:
                text, self.headers = resp.read(), dict(resp.headers)
                return resp.status, json.loads(text) if text else None
        except urllib.error.HTTPError as exc:
            text, self.headers = exc.read(), dict(exc.headers)
            return exc.code, json.loads(text) if text else None

    def cookies(self) -> list[http.cookiejar.Cookie]:
        return list(self.jar)

    def login(self, username: str = "admin", password: str = ADMIN_PASSWORD) -> int:
        return self.request("POST", "/api/login", {"username": username, "password": password})[0]
