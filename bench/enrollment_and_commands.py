"""Benchmark: enrollment, N connected devices, command round trips, server memory per device.

    .venv/bin/python bench/enrollment_and_commands.py --devices 1000 --commands 200

A real ``kiosk-server serve`` runs as a subprocess on free loopback ports with a
temporary data directory. The devices are simulated, but with the real device-side
modules: each is enrolled by ``kiosk.provision.enroll.enroll_blocking`` into its own
:class:`StateDir`, connects over mutual TLS with ``enroll.device_context`` and its own
certificate, checks every command with ``signing.verify_command``, runs it through
``handlers.run`` and answers with a result sealed by its own device key. Many simulated
devices share this one process (asyncio); they send heartbeats at the interval the
server's Welcome names, and keep the WebSocket pings of the real link.

What is measured
  enrollment      one ``enroll_blocking`` call (CA fetch + pinned TLS + CSR + certificate +
                  durable state writes), sequentially; then the wall time to enroll the
                  rest with a thread pool.
  memory          VmRSS of the server process before the devices connect and after all
                  are connected; the difference divided by the number connected.
  commands        ping commands sent one at a time through the console API
                  (POST /api/devices/{id}/commands) to random connected devices:
                    POST        the POST's own latency (the server delivers inside it)
                    delivery    POST sent -> the device holds the CommandDelivery
                    recorded    POST sent -> the device holds the ResultAck, i.e. the
                                server has verified and committed the signed result
                    api-done    POST sent -> the first GET /api/commands/{id} that says
                                "done" (polled every --poll-ms from the POST's return)
                  then a burst: --burst commands at once to distinct devices; then a
                  mass operation: --mass commands at once to distinct devices, not
                  polled: from the first POST to the last ResultAck, commands per second
                  end to end (each checked "done" through the API afterwards); with
                  --bulk through the bulk path, one request per 1000 units.
  responsiveness  a separate probe process asks the console for /api/me (401, no database)
                  every 20 ms: its latency is the server's event-loop lag, by phase;
                  also this process's own loop lag and full-GC pauses, so a stall of the
                  bench is not mistaken for one of the server. After connecting, this
                  process gc.freeze()s its objects (see --no-freeze).
  failed logins   --logins wrong-password logins at the end, watching the probe.
  profile         --profile-mass FILE: py-spy (0.4, on PATH or $PY_SPY) samples the server
                  during the mass phase only, into FILE-<server pid>.txt (collapsed stacks).

Before and after, side by side (--before TREE): the devices are enrolled once (by the
current server); then the server of TREE (a source tree, e.g. ``git archive`` of the
commit before a change) runs on the same data and device port, the fleet connects and
everything above is measured; then the same again with the current server.

This is a benchmark, not a test: it reports, it does not assert. Every phase is bounded
by --time-limit; what did not finish is reported as such.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import gc
import itertools
import json
import os
import platform
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kiosk.protocol import messages as m  # noqa: E402
from kiosk.protocol import signing  # noqa: E402
from kiosk.provision import diagnostics, enroll, handlers  # noqa: E402
from kiosk.provision.link import CONNECT_TIMEOUT_SECONDS, FRAME_LIMIT  # noqa: E402
from kiosk.provision.state import StateDir  # noqa: E402

HOST = "127.0.0.1"
USER, PASSWORD = "bench-admin", "bench-password-123"
#: Overridable only to run a diagnostic variant of the server; the default is the real one.
SERVER_BIN = Path(os.environ.get("KIOSK_BENCH_SERVER_BIN", Path(sys.executable).parent / "kiosk-server"))


# ------------------------------------------------------------------------- helpers
def percentile(values: list[float], p: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summary(values_s: list[float]) -> dict[str, Any]:
    ms = [v * 1000 for v in values_s]
    return {"n": len(ms), "p50_ms": percentile(ms, 50), "p99_ms": percentile(ms, 99),
            "max_ms": max(ms) if ms else None, "mean_ms": sum(ms) / len(ms) if ms else None}


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def rss_kib(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "Threads"):
                out[key] = int(value.split()[0])
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds used by the server and by this bench process between two points."""

    def __init__(self, server_pid: int) -> None:
        self.pid = server_pid
        self.start = (cpu_seconds(server_pid), cpu_seconds(os.getpid()), time.perf_counter())

    def stop(self) -> dict[str, float]:
        s0, b0, t0 = self.start
        wall = time.perf_counter() - t0
        server, bench = cpu_seconds(self.pid) - s0, cpu_seconds(os.getpid()) - b0
        return {"wall_s": wall, "server_cpu_s": server, "bench_cpu_s": bench,
                "server_cpu_share": server / wall if wall else 0.0}


def open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def raise_nofile(wanted: int) -> tuple[int, int]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = max(soft, wanted)
    try:  # raising the hard limit needs privilege; try, then settle for the hard limit
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, max(hard, target)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(target, hard), hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "unknown"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) // 1024} MiB"
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": model, "memory": mem, "kernel": platform.release(),
            "python": platform.python_version(), "loadavg_at_start": os.getloadavg()}


class PhaseTimeout(Exception):
    pass


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds

    def left(self) -> float:
        return self.at - time.monotonic()

    def check(self, phase: str) -> None:
        if self.left() <= 0:
            raise PhaseTimeout(f"time limit reached during {phase}")


# --------------------------------------------------------------------------- server
class ServerProcess:
    def __init__(self, data: Path, log_path: Path, log_level: str, device_port: int | None = None,
                 source: Path | None = None) -> None:
        """``source``: run the server of that source tree (for a "before"), else the current one."""
        self.data = data
        self.device_port, self.console_port = device_port or free_port(), free_port()
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 (held open for the process's life; closed in stop)
        env = os.environ | {"PYTHONPATH": str(source or ROOT)}
        self.proc = subprocess.Popen(
            [str(SERVER_BIN), "serve", "--data", str(data),
             "--device-listen", f"{HOST}:{self.device_port}",
             "--console-listen", f"{HOST}:{self.console_port}", "--log-level", log_level],
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True, env=env)

    @property
    def device_url(self) -> str:
        return f"https://{HOST}:{self.device_port}"

    @property
    def console_url(self) -> str:
        return f"http://{HOST}:{self.console_port}"

    def wait_ready(self, timeout: float = 30.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"kiosk-server exited with {self.proc.returncode}; see {self.log_path}")
            ok = 0
            for port in (self.device_port, self.console_port):
                try:
                    with socket.create_connection((HOST, port), timeout=0.5):
                        ok += 1
                except OSError:
                    pass
            if ok == 2:
                return
            time.sleep(0.1)
        raise RuntimeError(f"kiosk-server did not open its ports within {timeout:.0f} s")

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()
        return self.proc.returncode


# ----------------------------------------------------------------------- enrollment
def make_tokens(data: Path, server_url: str, count: int, out: Path) -> list[Path]:
    files: list[Path] = []
    left = count
    while left > 0:
        n = min(1000, left)  # the CLI's own limit per call
        stdout = subprocess.run(
            [str(SERVER_BIN), "enroll-token", "create", "--data", str(data), "--count", str(n),
             "--expires", "1d", "--server-url", server_url, "--out", str(out / f"batch{len(files)}")],
            capture_output=True, text=True, timeout=120, check=True).stdout
        files += [Path(line) for line in stdout.split()]
        left -= n
    return files


def enroll_one(root: Path, prov: Path) -> float:
    state = StateDir(root).create()
    t0 = time.perf_counter()
    enroll.enroll_blocking(state, prov)
    return time.perf_counter() - t0


@dataclass
class EnrollResult:
    sequential: list[float] = field(default_factory=list)
    pool_count: int = 0
    pool_wall: float | None = None
    pool_calls: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    enrolled: list[Path] = field(default_factory=list)
    timed_out: bool = False


def enroll_all(roots: list[Path], provs: list[Path], sequential: int, threads: int,
               deadline: Deadline) -> EnrollResult:
    res = EnrollResult()

    def err(exc: BaseException) -> None:
        key = f"{type(exc).__name__}: {str(exc)[:120]}"
        res.errors[key] = res.errors.get(key, 0) + 1

    k = min(sequential, len(roots))
    for root, prov in zip(roots[:k], provs[:k], strict=True):
        if deadline.left() <= 0:
            res.timed_out = True
            return res
        try:
            res.sequential.append(enroll_one(root, prov))
            res.enrolled.append(root)
        except Exception as exc:  # noqa: BLE001 - a benchmark reports failures
            err(exc)
    rest = list(zip(roots[k:], provs[k:], strict=True))
    if not rest:
        return res
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="enroll")
    t0 = time.perf_counter()
    futures = {pool.submit(enroll_one, root, prov): root for root, prov in rest}
    done, pending = concurrent.futures.wait(futures, timeout=max(deadline.left(), 0))
    res.pool_wall = time.perf_counter() - t0
    if pending:
        res.timed_out = True
        for f in pending:
            f.cancel()
    pool.shutdown(wait=True, cancel_futures=True)
    for f in done:
        if f.exception() is None:
            res.pool_calls.append(f.result())
            res.enrolled.append(futures[f])
        else:
            err(f.exception())  # type: ignore[arg-type]
    res.pool_count = len(res.pool_calls)
    return res


# --------------------------------------------------------------- simulated devices
@dataclass
class Timing:
    delivered: float | None = None
    acked: float | None = None
    accepted: bool | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)


class Fleet:
    """Shared bookkeeping of all simulated devices in this process."""

    def __init__(self) -> None:
        self.timings: dict[str, Timing] = {}
        self.refusals: dict[str, int] = {}
        self.connect_errors: dict[str, int] = {}
        self.disconnects: dict[str, int] = {}
        self.heartbeats_sent = 0
        self.heartbeat_rtts: list[tuple[float, float]] = []  # (when, round trip)

    def timing(self, command_id: str) -> Timing:
        t = self.timings.get(command_id)
        if t is None:
            t = self.timings[command_id] = Timing()
        return t

    @staticmethod
    def count(table: dict[str, int], exc: BaseException | str) -> None:
        key = exc if isinstance(exc, str) else f"{type(exc).__name__}: {str(exc)[:100]}"
        table[key] = table.get(key, 0) + 1


class _NoActions:
    """Ping never touches the machine; anything else would be a bench bug."""

    async def restart_ui(self) -> None:
        raise RuntimeError("not in a benchmark")

    async def reboot(self) -> None:
        raise RuntimeError("not in a benchmark")


def _no_link_facts() -> diagnostics.LinkFacts:
    raise RuntimeError("the bench sends pings only; diagnostics would need the link's facts")


async def _no_screen(_request: m.ScreenRequest) -> m.ScreenReply:
    raise RuntimeError("the bench sends pings only; a simulated unit has no screen")


async def _no_update(_release: str, _path: str) -> dict[str, str]:
    raise RuntimeError("the bench sends pings only; a simulated unit installs nothing")


class SimDevice:
    def __init__(self, root: Path, fleet: Fleet) -> None:
        self.state = StateDir(root)
        pin = self.state.pin()
        self.device_id = pin.device_id
        self.url = pin.url.rstrip("/").replace("https://", "wss://", 1) + "/api/v1/socket"
        self.server_key = self.state.command_key()
        self.device_key = self.state.device_key()
        self.replay = signing.ReplayGuard()
        self.fleet = fleet
        self.ws: ClientConnection | None = None
        self.connected = False
        self.ctx = handlers.Context(self.state, self.device_id, _NoActions(), _no_link_facts, lambda: None,
                                    _no_screen, _no_update)

    async def send(self, message: m.DeviceToServer) -> None:
        assert self.ws is not None
        await self.ws.send(m.encode(message).decode())

    async def run(self, gate: asyncio.Semaphore, connected: asyncio.Queue[SimDevice | None]) -> None:
        try:
            async with gate:
                ws = await connect(self.url, ssl=enroll.device_context(self.state), max_size=FRAME_LIMIT,
                                   open_timeout=CONNECT_TIMEOUT_SECONDS, ping_interval=20, ping_timeout=20,
                                   user_agent_header=None)
                first = m.SERVER_TO_DEVICE.decode(await asyncio.wait_for(ws.recv(), CONNECT_TIMEOUT_SECONDS))
                if not isinstance(first, m.Welcome):
                    raise RuntimeError(f"expected welcome, got {type(first).__name__}")
                self.ws = ws
                await self.send(m.Hello(agent_version="bench", state="enrolled-unassigned", ui_alive=True))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001
            self.fleet.count(self.fleet.connect_errors, exc)
            connected.put_nowait(None)
            return
        self.connected = True
        connected.put_nowait(self)
        beat = asyncio.create_task(self._beat(first.heartbeat_interval))
        try:
            async for raw in ws:
                await self._on_message(m.SERVER_TO_DEVICE.decode(raw if isinstance(raw, bytes) else raw.encode()))
        except asyncio.CancelledError:
            raise
        except ConnectionClosed as exc:
            self.fleet.count(self.fleet.disconnects, exc)
        except Exception as exc:  # noqa: BLE001
            self.fleet.count(self.fleet.disconnects, exc)
        finally:
            self.connected = False
            beat.cancel()
            await ws.close()

    async def _beat(self, interval: float) -> None:
        seq = 0
        while True:
            await self.send(m.Heartbeat(seq=seq, sent_at=time.time(), state="enrolled-unassigned", ui_alive=True))
            self.fleet.heartbeats_sent += 1
            seq += 1
            await asyncio.sleep(interval)

    async def _on_message(self, message: m.ServerToDevice) -> None:
        match message:
            case m.CommandDelivery(envelope=envelope):
                received = time.perf_counter()
                now = time.time()
                self.replay.forget_expired(now)
                verdict = signing.verify_command(envelope, self.server_key, self.device_id, now, self.replay)
                if isinstance(verdict, signing.Refused):
                    self.fleet.count(self.fleet.refusals, str(verdict.reason))
                    if verdict.command_id is not None:
                        await self.send(m.CommandAck(command_id=verdict.command_id))
                    return
                command = verdict
                self.replay.remember(command)
                self.fleet.timing(command.id).delivered = received
                await self.send(m.CommandAck(command_id=command.id))
                outcome = await handlers.run(self.ctx, command.action, command.id)
                result = m.CommandResult(command_id=command.id, device_id=self.device_id, kind=command.kind,
                                         outcome=outcome.outcome, finished_at=time.time(),
                                         reason=outcome.reason, detail=outcome.detail)
                await self.send(m.ResultDelivery(envelope=signing.seal(self.device_key, result)))
            case m.ResultAck(command_id=command_id, accepted=accepted):
                t = self.fleet.timing(command_id)
                t.acked, t.accepted = time.perf_counter(), accepted
                t.done.set()
            case m.HeartbeatAck(sent_at=sent_at):
                now = time.time()
                self.fleet.heartbeat_rtts.append((now, now - sent_at))
            case m.Rejected(reason=reason):
                self.fleet.count(self.fleet.refusals, f"server rejected: {reason}")


# ------------------------------------------------------------------- responsiveness
#: A separate process asks the console for /api/me without a session (answered 401 by the
#: middleware, no database) every few ms: its latency is the server's event-loop lag as an
#: outsider sees it, untouched by pauses of this bench process.
PROBE = r"""
import http.client, json, signal, sys, time
host, port, interval, out = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
samples, conn = [], None
while not stop:
    t, t0 = time.time(), time.perf_counter()
    try:
        if conn is None:
            conn = http.client.HTTPConnection(host, port, timeout=10)
        conn.request("GET", "/api/me")
        conn.getresponse().read()
        samples.append((t, time.perf_counter() - t0))
    except Exception:
        conn = None
        samples.append((t, None))
    time.sleep(interval)
with open(out, "w") as f:
    json.dump(samples, f)
"""


class Probe:
    def __init__(self, port: int, out: Path, interval: float = 0.02) -> None:
        self.out = out
        self.proc = subprocess.Popen([sys.executable, "-c", PROBE, HOST, str(port), str(interval), str(out)])

    def stop(self) -> list[tuple[float, float | None]]:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
            return [tuple(x) for x in json.loads(self.out.read_text())]
        except (subprocess.TimeoutExpired, OSError, ValueError):
            self.proc.kill()
            return []


async def loop_lag(samples: list[tuple[float, float]], period: float = 0.01) -> None:
    """How late this bench process's own event loop wakes up (its measurements carry that)."""
    while True:
        t0 = time.perf_counter()
        await asyncio.sleep(period)
        samples.append((time.time(), time.perf_counter() - t0 - period))


class GcPauses:
    """Full (generation 2) garbage collections of this process: with thousands of open
    connections one can take long enough to show up in the latencies measured here."""

    def __init__(self) -> None:
        self.pauses: list[tuple[float, float]] = []  # (when, seconds)
        self._t0 = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if info.get("generation") != 2:
            return
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            self.pauses.append((time.time(), time.perf_counter() - self._t0))

    def close(self) -> None:
        gc.callbacks.remove(self._callback)


def spikes(series: Sequence[tuple[float, float | None]], origin: float, over: float = 0.1,
           keep: int = 60) -> list[tuple[float, float]]:
    """The worst samples over ``over`` seconds, as (seconds since origin, ms), in time order."""
    worst = sorted(((v, t) for t, v in series if v is not None and v > over), reverse=True)[:keep]
    return sorted((round(t - origin, 2), round(v * 1000, 1)) for v, t in worst)


def windows(marks: list[tuple[str, float]], series: Sequence[tuple[float, float | None]]) -> dict[str, Any]:
    out = {}
    for (name, start), (_, end) in itertools.pairwise(marks):
        values = [v for t, v in series if start <= t < end and v is not None]
        failed = sum(1 for t, v in series if start <= t < end and v is None)
        out[name] = summary(values) | {"failed": failed}
    return out


# ------------------------------------------------------------------------- commands
@dataclass
class CommandSample:
    sent_at: float  # epoch
    post: float
    delivery: float | None
    recorded: float | None
    api_done: float | None
    state: str


async def post_ping(http: aiohttp.ClientSession, console: str, device: SimDevice) -> tuple[float, float, float, str]:
    """POST a ping: (sent, epoch), (sent, perf counter), (answered, perf counter), the command's id."""
    sent_at, t0 = time.time(), time.perf_counter()
    async with http.post(f"{console}/api/devices/{device.device_id}/commands",
                         json={"kind": "ping", "args": {}, "expires_in": 60}) as r:
        body = await r.json()
        if r.status != 202:
            raise RuntimeError(f"POST command: HTTP {r.status} {body}")
    return sent_at, t0, time.perf_counter(), body["id"]


async def one_command(http: aiohttp.ClientSession, console: str, fleet: Fleet, device: SimDevice,
                      poll_s: float, timeout: float) -> CommandSample:
    sent_at, t0, t1, command_id = await post_ping(http, console, device)
    timing = fleet.timing(command_id)
    state, api_done = "pending", None  # as the POST answered (it delivers, the device acknowledges later)
    end = t0 + timeout
    while time.perf_counter() < end:  # poll as a console would, from the POST's return
        async with http.get(f"{console}/api/commands/{command_id}") as r:
            state = (await r.json())["state"]
        if state in ("done", "failed", "expired"):
            api_done = time.perf_counter() - t0
            break
        await asyncio.sleep(poll_s)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(timing.done.wait(), max(end - time.perf_counter(), 0.01))
    return CommandSample(
        sent_at=sent_at, post=t1 - t0,
        delivery=timing.delivered - t0 if timing.delivered is not None else None,
        recorded=timing.acked - t0 if timing.acked is not None else None,
        api_done=api_done, state=state)


async def mass_command(http: aiohttp.ClientSession, console: str, fleet: Fleet, device: SimDevice,
                       timeout: float) -> CommandSample:
    """One command of a mass operation: POST it, then wait for the device's ResultAck (no polling)."""
    sent_at, t0, t1, command_id = await post_ping(http, console, device)
    timing = fleet.timing(command_id)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(timing.done.wait(), timeout)
    return CommandSample(
        sent_at=sent_at, post=t1 - t0,
        delivery=timing.delivered - t0 if timing.delivered is not None else None,
        recorded=timing.acked - t0 if timing.acked is not None else None,
        api_done=None, state=command_id)  # the id, until the API is asked for the state


async def bulk_commands(http: aiohttp.ClientSession, console: str, fleet: Fleet, targets: list[SimDevice],
                        timeout: float) -> list[CommandSample | BaseException]:
    """The same, through the bulk path: one POST /api/commands per 1000 units."""
    async def one_request(devices: list[SimDevice]) -> list[CommandSample | BaseException]:
        sent_at, t0 = time.time(), time.perf_counter()
        async with http.post(f"{console}/api/commands", json={
                "kind": "ping", "device_ids": [d.device_id for d in devices], "expires_in": 60}) as r:
            body = await r.json()
            if r.status != 202:
                return [RuntimeError(f"POST commands: HTTP {r.status} {body}")] * len(devices)
        t1 = time.perf_counter()
        timings = [fleet.timing(q["id"]) for q in body["queued"]]
        await asyncio.wait([asyncio.ensure_future(t.done.wait()) for t in timings], timeout=timeout)
        return [CommandSample(sent_at=sent_at, post=t1 - t0,
                              delivery=t.delivered - t0 if t.delivered is not None else None,
                              recorded=t.acked - t0 if t.acked is not None else None,
                              api_done=None, state=q["id"])
                for q, t in zip(body["queued"], timings, strict=True)] + \
            [RuntimeError(f"refused: {x['error']}") for x in body["refused"]]

    parts = await asyncio.gather(*(one_request(targets[i:i + 1000]) for i in range(0, len(targets), 1000)))
    return [sample for part in parts for sample in part]


@contextlib.asynccontextmanager
async def sampled(pid: int, out: Path | None) -> Any:
    """py-spy samples process ``pid`` (200 Hz, without pausing it) while the body runs, into ``out``."""
    if out is None:
        yield
        return
    spy = await asyncio.create_subprocess_exec(
        os.environ.get("PY_SPY", "py-spy"), "record", "-p", str(pid), "--nonblocking", "-r", "200",
        "-f", "raw", "-o", str(out), stdout=subprocess.DEVNULL)
    await asyncio.sleep(1.0)  # attached: it reads the process's memory maps first
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)  # py-spy writes what it sampled and exits
        await asyncio.wait_for(spy.wait(), 30)
        print(f"  mass phase profile of the server: {out}", flush=True)


async def mass_phase(http: aiohttp.ClientSession, console: str, fleet: Fleet, targets: list[SimDevice],
                     timeout: float, pid: int, bulk: bool, profile: Path | None = None) -> dict[str, Any]:
    async with sampled(pid, profile and profile.with_name(f"{profile.stem}-{pid}.txt")):
        t0 = time.perf_counter()
        cpu = CpuMeter(pid)
        if bulk:
            results = await bulk_commands(http, console, fleet, targets, timeout)
        else:
            results = list(await asyncio.gather(*(mass_command(http, console, fleet, d, timeout)
                                                  for d in targets), return_exceptions=True))
        wall = time.perf_counter() - t0  # first POST sent -> last ResultAck (or time-out)
        used = cpu.stop()
    samples = [s for s in results if isinstance(s, CommandSample)]
    for sample in samples:  # then ask the API, once each, untimed; an overwhelmed server is a figure too
        try:
            async with http.get(f"{console}/api/commands/{sample.state}") as r:
                sample.state = (await r.json())["state"]
        except (aiohttp.ClientError, TimeoutError) as exc:
            sample.state = f"not answered: {type(exc).__name__}"
    out = command_summary(samples, len(targets))
    out["wall_s"], out["cpu"] = wall, used
    out["commands_per_s"] = out["done"] / wall if wall else None
    out["errors"] = {}
    for s in results:
        if not isinstance(s, CommandSample):
            Fleet.count(out["errors"], s)
    return out


def command_summary(samples: list[CommandSample], wanted: int) -> dict[str, Any]:
    return {
        "sent": len(samples), "wanted": wanted,
        "done": sum(1 for s in samples if s.state == "done"),
        "states": {st: sum(1 for s in samples if s.state == st) for st in {s.state for s in samples}},
        "post": summary([s.post for s in samples]),
        "delivery": summary([s.delivery for s in samples if s.delivery is not None]),
        "recorded": summary([s.recorded for s in samples if s.recorded is not None]),
        "api_done": summary([s.api_done for s in samples if s.api_done is not None]),
        # every command: [sent (epoch), POST, delivery, recorded, api-done] in ms, for correlating
        "samples": [[round(s.sent_at, 3)] + [None if v is None else round(v * 1000, 2)
                                             for v in (s.post, s.delivery, s.recorded, s.api_done)]
                    for s in samples],
    }


# ---------------------------------------------------------------------------- main
async def fleet_phase(args: argparse.Namespace, server: ServerProcess, roots: list[Path],
                      deadline: Deadline, report: dict[str, Any]) -> None:
    fleet = Fleet()
    devices = [SimDevice(root, fleet) for root in roots]
    pid = server.proc.pid
    report["memory"]["server_before_connect_kib"] = rss_kib(pid)
    report["memory"]["bench_before_connect_kib"] = rss_kib(os.getpid())
    gate = asyncio.Semaphore(args.connect_concurrency)
    queue: asyncio.Queue[SimDevice | None] = asyncio.Queue()
    probe = Probe(server.console_port, server.log_path.with_name("probe.json"))
    gc_pauses = GcPauses()
    lags: list[tuple[float, float]] = []
    lag_task = asyncio.create_task(loop_lag(lags))
    marks = [("connecting", time.time())]
    t0 = time.perf_counter()
    cpu = CpuMeter(pid)
    tasks = [asyncio.create_task(d.run(gate, queue)) for d in devices]
    connected: list[SimDevice] = []
    answered = 0
    conn = report["connect"] = {"wanted": len(devices)}
    try:
        while answered < len(devices):
            left = min(deadline.left(), args.connect_timeout - (time.perf_counter() - t0))
            if left <= 0:
                conn["timed_out"] = True
                break
            try:
                d = await asyncio.wait_for(queue.get(), left)
            except TimeoutError:
                conn["timed_out"] = True
                break
            answered += 1
            if d is not None:
                connected.append(d)
        conn["wall_s"] = time.perf_counter() - t0
        conn["connected"] = len(connected)
        conn["rate_per_s"] = len(connected) / conn["wall_s"] if conn["wall_s"] else None
        conn["errors"] = dict(fleet.connect_errors)
        conn["cpu"] = cpu.stop()
        ramp_done = time.time()
        # The simulated devices stand for thousands of separate machines: keep this process's
        # full garbage collections (over a second at 10,000 connections) out of the figures.
        if not args.no_freeze:
            gc.collect()
            gc.freeze()
        marks.append(("idle after connect", time.time()))
        # let the hub flush and the first heartbeats settle, then measure memory
        await asyncio.sleep(args.settle)
        marks.append(("login and warm-up", time.time()))
        still = [d for d in connected if d.connected]
        mem = report["memory"]
        mem["server_after_connect_kib"] = rss_kib(pid)
        mem["bench_after_connect_kib"] = rss_kib(os.getpid())
        mem["server_fds_after_connect"] = open_fds(pid)
        mem["connected_at_measure"] = len(still)
        if still:
            delta = mem["server_after_connect_kib"]["VmRSS"] - mem["server_before_connect_kib"]["VmRSS"]
            mem["server_per_device_kib"] = delta / len(still)
        print(f"  connected {len(still)}/{len(devices)} in {conn['wall_s']:.1f} s; server RSS "
              f"{mem['server_before_connect_kib']['VmRSS'] / 1024:.0f} -> "
              f"{mem['server_after_connect_kib']['VmRSS'] / 1024:.0f} MiB", flush=True)
        if not still:
            return

        cookie_jar = aiohttp.CookieJar(unsafe=True)
        timeout = aiohttp.ClientTimeout(total=args.command_timeout)
        async with aiohttp.ClientSession(cookie_jar=cookie_jar, timeout=timeout) as http:
            async with http.post(f"{server.console_url}/api/login",
                                 json={"username": USER, "password": PASSWORD}) as r:
                if r.status != 200:
                    raise RuntimeError(f"login: HTTP {r.status} {await r.text()}")
            rng = random.Random(1)
            # warm-up: the first few requests pay for imports, caches and pool connections
            for d in rng.sample(still, min(5, len(still))):
                await one_command(http, server.console_url, fleet, d, args.poll_ms / 1000, args.command_timeout)
            samples: list[CommandSample] = []
            errors: dict[str, int] = {}
            marks.append(("sequential commands", time.time()))
            t_seq = time.perf_counter()
            cpu = CpuMeter(pid)
            for _ in range(args.commands):
                if deadline.left() <= 0:
                    report["commands_timed_out"] = True
                    break
                live = [d for d in still if d.connected] or still
                try:
                    samples.append(await one_command(http, server.console_url, fleet, rng.choice(live),
                                                     args.poll_ms / 1000, args.command_timeout))
                except Exception as exc:  # noqa: BLE001
                    Fleet.count(errors, exc)
                if args.gap_ms:
                    await asyncio.sleep(rng.uniform(0, 2 * args.gap_ms) / 1000)
            report["commands"] = command_summary(samples, args.commands)
            report["commands"]["wall_s"] = time.perf_counter() - t_seq
            report["commands"]["cpu"] = cpu.stop()
            marks.append(("burst", time.time()))
            report["commands"]["errors"] = errors

            if args.burst and deadline.left() > 0:
                live = [d for d in still if d.connected]
                targets = rng.sample(live, min(args.burst, len(live)))
                t_b = time.perf_counter()
                cpu = CpuMeter(pid)
                results = await asyncio.gather(
                    *(one_command(http, server.console_url, fleet, d, max(args.poll_ms, 50) / 1000,
                                  args.command_timeout) for d in targets), return_exceptions=True)
                burst_samples = [s for s in results if isinstance(s, CommandSample)]
                report["burst"] = command_summary(burst_samples, len(targets))
                report["burst"]["wall_s"] = time.perf_counter() - t_b
                report["burst"]["cpu"] = cpu.stop()
                report["burst"]["errors"] = {}
                for s in results:
                    if not isinstance(s, CommandSample):
                        Fleet.count(report["burst"]["errors"], s)
            if args.mass and deadline.left() > 0:
                marks.append(("mass", time.time()))
                live = [d for d in still if d.connected]
                report["mass"] = await mass_phase(http, server.console_url, fleet,
                                                  rng.sample(live, min(args.mass, len(live))),
                                                  args.command_timeout, pid, args.bulk, args.profile_mass)
            # Logins that fail, one after another, as anyone who reaches the console port can
            # send: the probe shows whether they hold up the server's device traffic.
            marks.append(("failed logins", time.time()))
            t_l, statuses = time.perf_counter(), []
            for _ in range(args.logins):
                async with http.post(f"{server.console_url}/api/login",
                                     json={"username": USER, "password": "wrong-password-42"}) as r:
                    statuses.append(r.status)
            report["failed_logins"] = {"n": len(statuses), "statuses": sorted(set(statuses)),
                                       "mean_ms": 1000 * (time.perf_counter() - t_l) / max(len(statuses), 1)}
        marks.append(("end", time.time()))
        report["memory"]["server_after_commands_kib"] = rss_kib(pid)
        report["fleet"] = {
            "connected_at_end": sum(1 for d in devices if d.connected),
            "disconnects": dict(fleet.disconnects), "refusals": dict(fleet.refusals),
            "heartbeats_sent": fleet.heartbeats_sent,
            "heartbeat_rtt_during_connect": summary([r for t, r in fleet.heartbeat_rtts if t <= ramp_done]),
            "heartbeat_rtt_after_connect": summary([r for t, r in fleet.heartbeat_rtts if t > ramp_done]),
        }
    finally:
        lag_task.cancel()
        if marks[-1][0] != "end":
            marks.append(("end", time.time()))
        probe_samples = probe.stop()
        origin = marks[0][1]
        report["responsiveness"] = {
            "server_probe": windows(marks, probe_samples),
            "bench_loop_lag": windows(marks, lags),
            "marks_s": {name: t - origin for name, t in marks}, "origin_epoch": origin,
            # the worst moments, as (seconds after "connecting", ms): do the two processes stall together?
            "server_probe_spikes": spikes(probe_samples, origin),
            "bench_loop_lag_spikes": spikes(lags, origin),
            "bench_gc2": windows(marks, gc_pauses.pauses) | {"spikes": spikes(gc_pauses.pauses, origin, 0.05)},
        }
        gc_pauses.close()
        t_close = time.perf_counter()
        for t in tasks:
            t.cancel()
        await asyncio.wait(tasks, timeout=30)
        report["teardown_clients_s"] = time.perf_counter() - t_close


def fmt(v: float | None, unit: str = "") -> str:
    return "-" if v is None else f"{v:.1f}{unit}"


def print_table(r: dict[str, Any]) -> None:
    rows: list[tuple[str, str]] = []
    e = r.get("enrollment", {})
    if e:
        rows.append((f"enrollment, one call (sequential, n={e['sequential']['n']}) p50 / p99",
                     f"{fmt(e['sequential']['p50_ms'])} / {fmt(e['sequential']['p99_ms'])} ms"))
        if e.get("pool_wall_s") is not None:
            rows.append((f"enrollment of {e['pool_count']} with {e['threads']} threads: wall, rate",
                         f"{e['pool_wall_s']:.1f} s, {e['pool_rate_per_s']:.1f}/s"))
            rows.append(("  (one call inside the pool p50 / p99)",
                         f"{fmt(e['pool']['p50_ms'])} / {fmt(e['pool']['p99_ms'])} ms"))
        rows.append(("  server CPU per enrollment; bench CPU over all",
                     f"{e['server_cpu_ms_per_enrollment']:.1f} ms; {e['cpu']['bench_cpu_s']:.1f} s"))
        rows.append(("enrolled / wanted (errors)",
                     f"{e['enrolled']} / {e['wanted']} ({sum(e['errors'].values())})"))
    c = r.get("connect", {})
    if c.get("wall_s") is not None:
        rows.append(("connected / wanted, wall, rate",
                     f"{c['connected']} / {c['wanted']}, {c['wall_s']:.1f} s, {c['rate_per_s']:.0f}/s"))
    if c.get("cpu"):
        rows.append(("  server / bench CPU while connecting",
                     f"{c['cpu']['server_cpu_s']:.1f} / {c['cpu']['bench_cpu_s']:.1f} s "
                     f"(server {100 * c['cpu']['server_cpu_share']:.0f} % of one core)"))
    mem = r.get("memory", {})
    if "server_after_connect_kib" in mem:
        rows.append(("server RSS before / after connect",
                     f"{mem['server_before_connect_kib']['VmRSS'] / 1024:.1f} / "
                     f"{mem['server_after_connect_kib']['VmRSS'] / 1024:.1f} MiB"))
        if "server_per_device_kib" in mem:
            rows.append(("server RSS per connected device", f"{mem['server_per_device_kib']:.1f} KiB"))
    for key, title in (("commands", "sequential"), ("burst", "burst"), ("mass", "mass, not polled")):
        cm = r.get(key)
        if not cm:
            continue
        rows.append((f"commands {title}: done / sent / wanted", f"{cm['done']} / {cm['sent']} / {cm['wanted']}"))
        if cm.get("commands_per_s") is not None:
            rows.append(("  end to end (first POST -> last ResultAck)",
                         f"{cm['wall_s']:.2f} s, {cm['commands_per_s']:.0f} commands/s"))
        if cm.get("cpu"):
            rows.append(("  wall; server / bench CPU", f"{cm['cpu']['wall_s']:.1f} s; {cm['cpu']['server_cpu_s']:.1f}"
                         f" / {cm['cpu']['bench_cpu_s']:.1f} s (server {100 * cm['cpu']['server_cpu_share']:.0f} %"
                         " of one core)"))
        for part, label in (("post", "POST latency"), ("delivery", "POST -> device has command"),
                            ("recorded", "POST -> result recorded (ResultAck)"),
                            ("api_done", "POST -> GET says done (polled)")):
            s = cm[part]
            if not s["n"]:
                continue
            rows.append((f"  {label} p50 / p99 / max",
                         f"{fmt(s['p50_ms'])} / {fmt(s['p99_ms'])} / {fmt(s['max_ms'])} ms (n={s['n']})"))
    resp = r.get("responsiveness", {})
    for name in ("idle after connect", "login and warm-up", "sequential commands", "burst", "mass",
                 "failed logins"):
        sp, bl = resp.get("server_probe", {}).get(name), resp.get("bench_loop_lag", {}).get(name)
        if sp and bl:
            rows.append((f"{name}: server probe / bench loop lag p99, max",
                         f"{fmt(sp['p99_ms'])}, {fmt(sp['max_ms'])} / {fmt(bl['p99_ms'])}, {fmt(bl['max_ms'])} ms"))
    f = r.get("fleet")
    if f:
        rows.append(("devices still connected at the end", str(f["connected_at_end"])))
        for key, label in (("heartbeat_rtt_during_connect", "while devices connect"),
                           ("heartbeat_rtt_after_connect", "after all connected")):
            h = f[key]
            rows.append((f"heartbeat round trip {label} p50 / p99",
                         f"{fmt(h['p50_ms'])} / {fmt(h['p99_ms'])} ms (n={h['n']})"))
    width = max(len(a) for a, _ in rows) if rows else 0
    print()
    print(f"Skærmbesøg server bench: N={r['args']['devices']} devices, {r['args']['commands']} commands"
          + (f" -- {r['variant']} (load average at its start {r['loadavg_at_start'][0]:.1f})"
             if "variant" in r else ""))
    for a, b in rows:
        print(f"  {a:<{width}}  {b}")
    if r.get("problems"):
        print("  problems:")
        for p in r["problems"]:
            print(f"    - {p}")


def fleet_problems(r: dict[str, Any]) -> None:
    """What went wrong in one fleet phase, into its report's problems."""
    conn = r.get("connect", {})
    if conn.get("timed_out"):
        r["problems"].append(f"only {conn.get('connected')} of {conn.get('wanted')} connected in time")
    if conn.get("errors"):
        r["problems"].append(f"connect errors: {conn['errors']}")
    for key in ("commands", "burst", "mass"):
        cm = r.get(key)
        if cm and (cm["done"] < cm["wanted"] or cm["errors"]):
            r["problems"].append(f"{key}: {cm['done']} of {cm['wanted']} done; states {cm['states']}; "
                                 f"errors {cm['errors']}")
    fl = r.get("fleet", {})
    if fl.get("disconnects"):
        r["problems"].append(f"devices disconnected during the run: {fl['disconnects']}")
    if fl.get("refusals"):
        r["problems"].append(f"refusals (a repeated delivery shows here as a replay): {fl['refusals']}")
    if r.get("commands_timed_out"):
        r["problems"].append("commands stopped at the time limit")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--devices", type=int, default=1000, help="simulated devices to enroll and connect")
    p.add_argument("--commands", type=int, default=200, help="sequential ping commands through the console API")
    p.add_argument("--burst", type=int, default=50, help="then this many commands at once (0: none)")
    p.add_argument("--mass", type=int, default=1000,
                   help="then this many at once, not polled: commands per second end to end (0: none)")
    p.add_argument("--bulk", action="store_true",
                   help="send the mass operation through POST /api/commands (1000 units a request)")
    p.add_argument("--before", type=Path,
                   help="a source tree of the server before a change: measured first, on the same devices")
    p.add_argument("--logins", type=int, default=5, help="failed logins at the end, watching server lag")
    p.add_argument("--sequential-enrollments", type=int, default=50)
    p.add_argument("--enroll-threads", type=int, default=8)
    p.add_argument("--connect-concurrency", type=int, default=64, help="TLS handshakes in flight at once")
    p.add_argument("--connect-timeout", type=float, default=600.0)
    p.add_argument("--command-timeout", type=float, default=10.0)
    p.add_argument("--poll-ms", type=float, default=5.0, help="GET poll interval after the POST")
    p.add_argument("--gap-ms", type=float, default=20.0, help="mean pause between sequential commands")
    p.add_argument("--settle", type=float, default=5.0, help="seconds to wait after connecting, before RSS")
    p.add_argument("--time-limit", type=float, default=1200.0, help="whole run, seconds")
    p.add_argument("--server-log-level", default="INFO")
    p.add_argument("--no-freeze", action="store_true",
                   help="do not gc.freeze() this process after connecting (its own GC pauses then show)")
    p.add_argument("--keep", action="store_true", help="keep the temporary data directory")
    p.add_argument("--json", type=Path, help="also write the full results here")
    p.add_argument("--profile-mass", type=Path, metavar="FILE",
                   help="sample the server with py-spy during the mass phase (FILE-<pid>.txt)")
    args = p.parse_args(argv)
    deadline = Deadline(args.time_limit)

    nofile = raise_nofile(args.devices * 2 + 1024)  # the server subprocess inherits it
    report: dict[str, Any] = {"args": vars(args) | {"json": str(args.json) if args.json else None},
                              "machine": machine(), "rlimit_nofile": nofile, "memory": {}, "problems": []}
    if nofile[0] < args.devices + 256:
        report["problems"].append(f"RLIMIT_NOFILE is {nofile[0]}: too low for {args.devices} connections")
    work = Path(tempfile.mkdtemp(prefix="kiosk-bench-"))
    server: ServerProcess | None = None
    print(f"bench: N={args.devices}, data in {work}, RLIMIT_NOFILE={nofile[0]}", flush=True)
    try:
        data = work / "server"
        data.mkdir()
        server = ServerProcess(data, work / "server.log", args.server_log_level)
        server.wait_ready()
        report["server_pid"] = server.proc.pid
        subprocess.run([str(SERVER_BIN), "user", "add", "--data", str(data), USER, "--role", "admin",
                        "--password-stdin"], input=PASSWORD + "\n", capture_output=True, text=True,
                       timeout=60, check=True)
        t = time.perf_counter()
        provs = make_tokens(data, server.device_url, args.devices, work / "provisioning")
        report["tokens_s"] = time.perf_counter() - t
        roots = [work / "devices" / f"d{i:05d}" for i in range(len(provs))]
        print(f"  {len(provs)} provisioning files in {report['tokens_s']:.1f} s; enrolling", flush=True)

        cpu = CpuMeter(server.proc.pid)
        er = enroll_all(roots, provs, args.sequential_enrollments, args.enroll_threads, deadline)
        enroll_cpu = cpu.stop()
        report["enrollment"] = {
            "wanted": args.devices, "enrolled": len(er.enrolled), "threads": args.enroll_threads,
            "sequential": summary(er.sequential), "pool_count": er.pool_count, "pool_wall_s": er.pool_wall,
            "pool_rate_per_s": er.pool_count / er.pool_wall if er.pool_wall else None,
            "pool": summary(er.pool_calls), "errors": er.errors, "timed_out": er.timed_out,
            "cpu": enroll_cpu,
            "server_cpu_ms_per_enrollment": 1000 * enroll_cpu["server_cpu_s"] / max(len(er.enrolled), 1),
        }
        if er.errors:
            report["problems"].append(f"enrollment errors: {er.errors}")
        if er.timed_out:
            report["problems"].append("enrollment did not finish within the time limit")
        print(f"  enrolled {len(er.enrolled)} (sequential p50 "
              f"{fmt(report['enrollment']['sequential']['p50_ms'])} ms); connecting", flush=True)
        variants: list[tuple[str | None, Path | None]] = [("before", args.before), ("after", None)] \
            if args.before else [(None, None)]
        for name, source in variants:
            if not er.enrolled or deadline.left() <= 0:
                break
            target = report
            if name is not None:  # the same data and device port (the devices' pin), another server
                target = report.setdefault("variants", {})[name] = {
                    "variant": name, "source": str(source or ROOT), "args": report["args"], "memory": {},
                    "problems": [], "loadavg_at_start": os.getloadavg()}
                server.stop()
                server = ServerProcess(data, work / f"server-{name}.log", args.server_log_level,
                                       device_port=server.device_port, source=source)
                server.wait_ready()
            asyncio.run(fleet_phase(args, server, sorted(er.enrolled), deadline, target))
            fleet_problems(target)
    except PhaseTimeout as exc:
        report["problems"].append(str(exc))
    except Exception as exc:  # noqa: BLE001 - report what broke, then clean up
        report["problems"].append(f"bench aborted: {type(exc).__name__}: {exc}")
    finally:
        if server is not None:
            alive = server.proc.poll() is None
            if not alive:
                report["problems"].append(f"the server exited early with {server.proc.returncode}")
            t_stop = time.perf_counter()
            report["server_exit"] = server.stop()
            report["teardown_server_s"] = time.perf_counter() - t_stop
            try:
                tail = server.log_path.read_text(errors="replace").splitlines()
                report["server_log_warnings"] = [ln for ln in tail if " WARNING " in ln or " ERROR " in ln
                                                 or "Traceback" in ln][:20]
            except OSError:
                pass
        report["loadavg_at_end"] = os.getloadavg()
        report["wall_s"] = args.time_limit - deadline.left()
        if args.json:
            args.json.write_text(json.dumps(report, indent=2, default=str))
        if args.keep:
            print(f"data kept in {work}")
        else:
            t_rm = time.perf_counter()
            shutil.rmtree(work, ignore_errors=True)
            print(f"teardown: clients {report.get('teardown_clients_s', 0):.1f} s, server "
                  f"{report.get('teardown_server_s', 0):.1f} s (exit {report.get('server_exit')}), "
                  f"removing {work} {time.perf_counter() - t_rm:.1f} s", flush=True)
    print_table(report)
    for variant in report.get("variants", {}).values():
        print_table(variant)
    if report.get("server_log_warnings"):
        print("  server log warnings/errors (first 20):")
        for line in report["server_log_warnings"]:
            print(f"    {line[:200]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
