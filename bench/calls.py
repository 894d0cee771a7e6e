"""Call latency and the screen's memory, against real processes on loopback.

Run from the repository root:

    .venv/bin/python bench/calls.py --calls 50 [--answered 10] [--json build/bench-calls.json]

It starts, in a temporary directory and on free 127.0.0.1 ports, a real
``kiosk-server``, one enrolled and assigned ``kiosk-agent`` and its headless
screen ``kiosk-ui --headless --demo-media --auto-answer-after A``; the caller is
:mod:`kiosk.caregiver` in this process. ICE uses the host's own
addresses (the server hands out no ICE servers on one network), so media never
leaves the machine: the kernel delivers a packet to a local address over ``lo``.

What is measured (all times are ``time.monotonic()``, CLOCK_MONOTONIC, which
is one clock for every process on the machine):

(a) **ring**, ``--calls`` calls that are never answered: from just before
    the caller sends ``call-start`` to

    - *device rings*: this process reading kiosk-ui's ``"ringing"`` screen line
      from its stdout pipe. kiosk-ui prints the line before it tells the agent
      it rings; the time is when the line is *received* here (kiosk-ui's lines
      carry no timestamp), so it includes the pipe and this event loop's wake-up;
    - *ring confirmed*: the caller receiving ``call-ringing`` (unit → agent →
      server → caller: the round trip the page waits for).

    Each call is withdrawn as soon as both are seen, and the next one is placed
    when the screen shows the end. ``A`` is long enough that none is answered.

(b) **answer → first frame**, ``--answered`` calls the screen answers by itself
    ``A`` seconds after ringing. The press is kiosk-ui's ``"connecting"`` line
    (printed the moment the answer button is pressed, before the camera opens),
    received as above. *Caller side*: press → the caller's first remote video
    frame decoded. kiosk-ui does not report when *it* decodes its first remote
    frame, so the *device side* is measured in a second round with a probe
    screen (``--device-probe``, below): the same ``UiSession``, agent client,
    device media and auto-answer as kiosk-ui's headless mode, plus a timestamp
    on its screen changes and on the first remote video frame it decodes.
    Skip that round with ``--no-probe``.

(c) **memory**: VmRSS of the kiosk-ui process from ``/proc/PID/status``: idle
    (before any call, and again after all of them), and sampled every 0.2 s while
    each answered call is connected. The unit sends its demo source, 640x480 at
    30 fps; the caller sends ``--staff-video`` (default 640x480 at 30 fps, what
    the page asks its camera for), so the screen decodes 640x480 too.

Percentiles are nearest-rank: p99 of 50 samples is the largest.
Everything is bounded (``--max-seconds``) and every process started is stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

THIS = Path(__file__).resolve()
ROOT = THIS.parents[1]
sys.path.insert(0, str(ROOT))

from kiosk.caregiver import CaregiverClient, StaffCall, TestMedia  # noqa: E402
from kiosk.protocol.call import EndReason  # noqa: E402

BIN = Path(sys.executable).parent
PASSWORD = "bench-password-not-secret"


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(*args: object, stdin: str | None = None, timeout: float = 60) -> str:
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, input=stdin, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, args[:3]))} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return proc.stdout


async def poll(predicate: Any, timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await asyncio.to_thread(predicate)
        if value:
            return value
        await asyncio.sleep(interval)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def rss_mb(pid: int) -> float:
    """Resident set size of ``pid`` in MB (MiB), from /proc/PID/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


@dataclass
class Screen:
    """A screen process (kiosk-ui, or the probe) whose stdout lines are read as they come."""

    proc: asyncio.subprocess.Process
    lines: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    reader: asyncio.Task[None] | None = None

    async def read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            at = time.monotonic()  # the receive time: the line itself has no timestamp
            with contextlib.suppress(ValueError):
                self.lines.append((at, json.loads(line)))
                self.changed.set()

    async def wait(self, predicate: Any, timeout: float, what: str) -> tuple[float, dict[str, Any]]:
        """The first line (receive time, record) matching ``predicate``."""
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for at, record in self.lines[seen:]:
                if predicate(record):
                    return at, record
            seen = len(self.lines)
            self.changed.clear()
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.returncode is not None:
                raise TimeoutError(f"no {what} from the screen within {timeout} s")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.changed.wait(), left)

    def screen(self, name: str, call_id: str | None = None) -> Any:
        return lambda r: r.get("screen") == name and (call_id is None or r.get("call_id") == call_id)

    def probe_first_frame(self, call_id: str) -> Any:
        return lambda r: r.get("probe") == "first-frame" and r.get("call_id") == call_id

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self.reader is not None:
            self.reader.cancel()
            await asyncio.gather(self.reader, return_exceptions=True)


async def start_screen(args: list[str], log: Path, env: dict[str, str] | None = None) -> Screen:
    with log.open("ab") as err:
        proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE, stderr=err,
                                                    env={**os.environ, **(env or {})})
    screen = Screen(proc)
    screen.reader = asyncio.create_task(screen.read())
    await screen.wait(screen.screen("idle"), 60, "idle screen")
    return screen


@dataclass
class Rig:
    tmp: Path
    console: str = ""
    state: Path = Path()
    citizen_id: str = ""
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, args: list[str], log_name: str) -> None:
        """Start a long-running process (it does not block), its output to ``log_name``."""
        with (self.tmp / log_name).open("ab") as log:
            self.procs.append(subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT))

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


async def set_up(rig: Rig, ring_timeout: float) -> None:
    """Server, caregiver, one enrolled agent, a citizen assigned to it."""
    data = rig.tmp / "server"
    device_port, console_port = free_port(), free_port()
    rig.console = f"http://127.0.0.1:{console_port}"
    rig.start([str(BIN / "kiosk-server"), "serve", "--data", str(data), "--municipality", "Benchby Kommune",
               "--device-listen", f"127.0.0.1:{device_port}", "--console-listen", f"127.0.0.1:{console_port}",
               "--ring-timeout", f"{ring_timeout:.0f}s"], "server.log")
    await poll(lambda: port_open(device_port) and port_open(console_port), 30, "the server's ports")
    server = (BIN / "kiosk-server",)
    run(*server, "user", "add", "--data", data, "anne", "--role", "caregiver", "--display-name", "Anne",
        "--password-stdin", stdin=PASSWORD + "\n")
    prov = run(*server, "enroll-token", "create", "--data", data, "--count", "1", "--expires", "1d",
               "--server-url", f"https://127.0.0.1:{device_port}", "--out", rig.tmp / "prov").split()[0]
    rig.state = rig.tmp / "unit"
    rig.start([str(BIN / "kiosk-agent"), "run", "--state", str(rig.state), "--provision", prov, "--backoff-cap", "1"],
              "agent.log")

    def status() -> dict[str, Any] | None:
        proc = subprocess.run([str(BIN / "kiosk-agent"), "status", "--state", str(rig.state), "--json"],
                              capture_output=True, text=True, timeout=30)
        value = json.loads(proc.stdout) if proc.returncode == 0 and proc.stdout.strip() else {}
        return value if value.get("server_online") else None

    device_id = (await poll(status, 60, "the agent to enroll and come online", 0.2))["device_id"]
    added = json.loads(run(*server, "citizen", "add", "--data", data, "--name", "Bench Borger",
                           "--device", device_id, "--caregiver", "anne", "--json"))
    rig.citizen_id = added["citizen_id"]
    command = added["assign_command"]
    await poll(lambda: json.loads(run(*server, "command", "show", "--data", data, command, "--json"))["state"]
               == "done", 60, "the assign command", 0.2)


# --------------------------------------------------------------------------- the rounds


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000.0


async def ring_round(client: CaregiverClient, screen: Screen, citizen_id: str, calls: int) -> dict[str, list[float]]:
    """(a): place, see the ring on the screen and at the caller, withdraw, wait for the end."""
    rang: list[float] = []
    confirmed: list[float] = []
    for _ in range(calls):
        call = await client.place_call(citizen_id, prepare_media=False)
        assert call.call_id is not None and call.times.start_sent is not None
        at, _ = await screen.wait(screen.screen("ringing", call.call_id), 15, "ringing")
        await call.wait_ringing(15)
        assert call.times.ringing is not None
        rang.append(at - call.times.start_sent)
        confirmed.append(call.times.ringing - call.times.start_sent)
        result = await call.hang_up()
        if result.end_reason is not EndReason.CANCELLED_BY_CALLER:
            raise RuntimeError(f"a ring-only call ended {result.end_reason}")
        await screen.wait(screen.screen("ended", call.call_id), 15, "the withdrawn call's end")
    return {"device_rings": rang, "ring_confirmed": confirmed}


@dataclass
class Answered:
    press_to_staff_frame: float
    press_to_offer: float
    offer_to_accept: float
    accept_to_connected: float
    connected_to_staff_frame: float
    press_to_device_frame: float | None = None
    press_to_device_in_call: float | None = None
    rss_in_call: list[float] = field(default_factory=list)


async def answered_round(client: CaregiverClient, screen: Screen, citizen_id: str, calls: int, talk: float,
                         probe: bool) -> list[Answered]:
    """(b) and (c): calls the screen answers; press → first frames; the screen's memory while connected."""
    out: list[Answered] = []
    for _ in range(calls):
        call: StaffCall = await client.place_call(citizen_id)  # media opened now, as the page does
        assert call.call_id is not None
        call_id = call.call_id
        try:
            await call.wait_answered(30)
            await call.wait_media(video=1, audio=1, timeout=20)
            pressed_at, pressed = await screen.wait(screen.screen("connecting", call_id), 5, "connecting")
            in_call_at, in_call = await screen.wait(screen.screen("in-call", call_id), 10, "in-call")
            samples: list[float] = []
            until = time.monotonic() + talk
            while time.monotonic() < until:
                samples.append(rss_mb(screen.proc.pid))
                await asyncio.sleep(0.2)
        finally:
            result = await call.hang_up()
        await screen.wait(screen.screen("ended", call_id), 15, "the call's end")
        t = result.times
        assert t.offer and t.accept_sent and t.connected and t.first_video_frame
        if probe:  # the probe's own clock readings replace the pipe's receive times
            pressed_at = pressed["t"]
            in_call_at = in_call["t"]
        row = Answered(
            press_to_staff_frame=t.first_video_frame - pressed_at,
            press_to_offer=t.offer - pressed_at,
            # Pre-connected (the unit's offer answered while it rang): our answer went out before
            # the citizen's, so that stage costs nothing after the press.
            offer_to_accept=max(0.0, t.accept_sent - t.offer),
            accept_to_connected=t.connected - max(t.accept_sent, t.offer),
            connected_to_staff_frame=t.first_video_frame - t.connected,
            press_to_device_in_call=in_call_at - pressed_at,
            rss_in_call=samples,
        )
        if probe:
            _, first = await screen.wait(screen.probe_first_frame(call_id), 5, "the probe's first frame")
            row.press_to_device_frame = first["t"] - pressed_at
        out.append(row)
        await asyncio.sleep(0.5)  # the screen closes its peer and reports quality
    return out


async def idle_rss(screen: Screen, seconds: float) -> list[float]:
    samples = []
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        samples.append(rss_mb(screen.proc.pid))
        await asyncio.sleep(0.2)
    return samples


# --------------------------------------------------------------------------- report


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def summary(values: list[float]) -> dict[str, float]:
    ms_values = [v * 1000 for v in values]
    return {"n": len(values), "p50_ms": statistics.median(ms_values), "p99_ms": pct(ms_values, 99),
            "min_ms": min(ms_values), "max_ms": max(ms_values)}


def print_report(report: dict[str, Any]) -> None:
    m = report["machine"]
    print(f"\nmachine: {m['nproc']} CPUs, {m['cpu']}; load average {m['load_before']} before, "
          f"{m['load_after']} after; Python {m['python']}")
    print("\n| what | n | p50 ms | p99 ms | min ms | max ms | target |")
    print("|---|---|---|---|---|---|---|")

    def row(label: str, s: dict[str, float] | None, target: str) -> None:
        if s:
            print(f"| {label} | {s['n']} | {s['p50_ms']:.1f} | {s['p99_ms']:.1f} | {s['min_ms']:.1f} | "
                  f"{s['max_ms']:.1f} | {target} |")

    ring = report["ring"]
    row("call pressed → screen's ringing line received", ring["device_rings"], "≤ 10 / ≤ 25")
    row("call pressed → call-ringing back at caller", ring["ring_confirmed"], "")
    for name, label, target in (
        ("press_to_staff_frame", "answer pressed → caller's first remote frame", "≤ 100 p50 quiet, ≤ 250 p99 loaded"),
        ("press_to_device_frame", "answer pressed → screen's first remote frame", "≤ 100 p50 quiet, ≤ 250 p99 loaded"),
        ("press_to_offer", "  press → offer at caller", ""),
        ("offer_to_accept", "  offer → caller's answer sent (0: sent while ringing)", ""),
        ("accept_to_connected", "  answer sent (or the press reaching it, if later) → caller connected", ""),
        ("connected_to_staff_frame", "  caller connected → its first frame", ""),
        ("press_to_device_in_call", "  press → screen's in-call line", ""),
    ):
        for round_name, s in report["answered"].items():
            row(f"{label} [{round_name}]", s.get(name), target)
    row("screen line printed → received here (probe round)", report.get("pipe_delay"), "")
    mem = report["memory_mb"]
    print("\n| kiosk-ui VmRSS | MB | target |\n|---|---|---|")
    print(f"| idle, before any call (median) | {mem['idle_before']:.1f} | ≤ 120 |")
    print(f"| in a 640x480 call (largest sample of all calls) | {mem['in_call_max']:.1f} | ≤ 250 |")
    print(f"| in a 640x480 call (median of each call's largest) | {mem['in_call_median_of_max']:.1f} | |")
    print(f"| idle, after the calls (median) | {mem['idle_after']:.1f} | ≤ 120 |")


# --------------------------------------------------------------------------- main


async def bench(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    rig = Rig(tmp)
    screen: Screen | None = None
    load_before = os.getloadavg()
    width, _, height = args.staff_video.partition("@")[0].partition("x")
    fps = int(args.staff_video.partition("@")[2] or 30)
    report: dict[str, Any] = {"answered": {}}
    try:
        print("setting up: server, agent, citizen …", flush=True)
        await set_up(rig, ring_timeout=max(30.0, args.auto_answer_after * 4))
        ui_args = [str(BIN / "kiosk-ui"), "--state", str(rig.state), "--headless", "--demo-media",
                   "--auto-answer-after", str(args.auto_answer_after), "--log-level", "WARNING"]
        ui_env = dict(item.split("=", 1) for item in args.ui_env)
        screen = await start_screen(ui_args, tmp / "kiosk-ui.log", ui_env)
        async with CaregiverClient(rig.console, media=TestMedia(int(width), int(height), fps)) as anne:
            await anne.login("anne", PASSWORD)
            await anne.connect()
            print(f"kiosk-ui idle: memory for {args.idle_seconds:.0f} s …", flush=True)
            await asyncio.sleep(2)  # let it settle after start-up
            idle_before = await idle_rss(screen, args.idle_seconds)
            print(f"(a) {args.calls} calls, withdrawn when they ring …", flush=True)
            ring = await ring_round(anne, screen, rig.citizen_id, args.calls)
            print(f"(b, c) {args.answered} answered calls, {args.talk:.0f} s each …", flush=True)
            answered = await answered_round(anne, screen, rig.citizen_id, args.answered, args.talk, probe=False)
            await asyncio.sleep(2)
            idle_after = await idle_rss(screen, args.idle_seconds)
            await screen.stop()
            screen = None
            probe_rows: list[Answered] = []
            if not args.no_probe:
                print(f"(b) device side: {args.answered} answered calls with the probe screen …", flush=True)
                screen = await start_screen(
                    [sys.executable, str(THIS), "--device-probe", "--state", str(rig.state),
                     "--auto-answer-after", str(args.auto_answer_after)], tmp / "probe.log")
                probe_rows = await answered_round(anne, screen, rig.citizen_id, args.answered, 1.0, probe=True)
                # How late a line read from the pipe is, against the probe's own clock reading.
                report["pipe_delay"] = summary([at - r["t"] for at, r in screen.lines if "t" in r])
        in_call_max = [max(r.rss_in_call) for r in answered if r.rss_in_call]
        report.update({
            "ring": {k: summary(v) for k, v in ring.items()},
            "raw": {"ring": ring, "answered": [r.__dict__ for r in answered],
                    "probe": [r.__dict__ for r in probe_rows]},
            "memory_mb": {
                "idle_before": statistics.median(idle_before), "idle_after": statistics.median(idle_after),
                "in_call_max": max(in_call_max), "in_call_median_of_max": statistics.median(in_call_max),
            },
        })
        for round_name, rows in (("kiosk-ui", answered), ("probe", probe_rows)):
            if rows:
                report["answered"][round_name] = {
                    key: summary([getattr(r, key) for r in rows if getattr(r, key) is not None])
                    for key in ("press_to_staff_frame", "press_to_device_frame", "press_to_offer",
                                "offer_to_accept", "accept_to_connected", "connected_to_staff_frame",
                                "press_to_device_in_call")
                    if any(getattr(r, key) is not None for r in rows)}
    finally:
        if screen is not None:
            await screen.stop()
        rig.stop()
    report["machine"] = {
        "nproc": os.cpu_count(), "cpu": cpu_model(), "python": platform.python_version(),
        "load_before": " ".join(f"{v:.1f}" for v in load_before),
        "load_after": " ".join(f"{v:.1f}" for v in os.getloadavg()),
    }
    report["settings"] = {"ui_env": args.ui_env, "calls": args.calls, "answered": args.answered, "talk_s": args.talk,
                          "auto_answer_after_s": args.auto_answer_after, "staff_video": f"{width}x{height}@{fps}"}
    return report


# --------------------------------------------------------------------------- the probe screen


async def device_probe(state: Path, auto_answer_after: float) -> int:
    """kiosk-ui's headless screen (same session, agent client, media, auto-answer),
    plus a clock reading on each screen change and on each call's first decoded remote frame."""
    from kiosk.ui.cli import HeadlessScreen, run_headless
    from kiosk.ui.controller import Screen as UiScreen

    headless = HeadlessScreen(auto_answer_after, None)
    first_frames: set[str] = set()

    def show(screen: UiScreen) -> None:
        print(json.dumps({**screen.log_record(), "t": time.monotonic()}), flush=True)
        with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):  # its own line goes nowhere
            headless.show(screen)  # arms the auto-answer exactly as kiosk-ui does

    def frame(_frame: Any) -> None:
        call = headless.session.last_call if headless.session is not None else None
        if call is not None and call.call_id not in first_frames:
            first_frames.add(call.call_id)
            print(json.dumps({"probe": "first-frame", "call_id": call.call_id, "t": time.monotonic()}), flush=True)

    return await run_headless(state, headless, demo_media=True, on_screen=show, on_video_frame=frame)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", type=int, default=50, help="ring-only calls for (a) (default 50)")
    p.add_argument("--answered", type=int, default=10, help="answered calls for (b) and (c) (default 10)")
    p.add_argument("--talk", type=float, default=4.0, help="seconds each answered call stays connected (default 4)")
    p.add_argument("--auto-answer-after", type=float, default=1.5,
                   help="the screen answers this long after it rings (default 1.5 s)")
    p.add_argument("--staff-video", default="640x480@30", help="what the caller sends (default 640x480@30)")
    p.add_argument("--idle-seconds", type=float, default=3.0)
    p.add_argument("--ui-env", action="append", default=[], metavar="NAME=VALUE",
                   help="extra environment for kiosk-ui, e.g. MALLOC_ARENA_MAX=2 (repeatable)")
    p.add_argument("--no-probe", action="store_true", help="skip the device-side round with the probe screen")
    p.add_argument("--json", type=Path, help="also write every figure and sample here")
    p.add_argument("--max-seconds", type=float, default=900.0, help="give up after this long (default 900)")
    p.add_argument("--device-probe", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--state", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.device_probe:
        import logging
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
        return asyncio.run(device_probe(args.state, args.auto_answer_after))

    async def bounded(tmp: Path) -> dict[str, Any]:
        return await asyncio.wait_for(bench(args, tmp), args.max_seconds)

    with tempfile.TemporaryDirectory(prefix="kiosk-bench-calls-") as tmp:
        try:
            report = asyncio.run(bounded(Path(tmp)))
        except BaseException:
            for log in sorted(Path(tmp).glob("*.log")):
                tail = log.read_text(errors="replace").splitlines()[-15:]
                print(f"--- {log.name} (last lines)\n" + "\n".join(tail), file=sys.stderr)
            raise
    print_report(report)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
