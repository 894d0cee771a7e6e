"""`make demo`: a municipality server and one enrolled unit on this machine, on loopback.

Walks through what logistics and support staff do: create a provisioning file, let a
unit enroll itself, run its health checks, assign it to a (fictional) citizen, wipe it
with a signed receipt. Then it keeps running so you can look around, until Ctrl-C
(or exits at once with --no-wait).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from kiosk.ui.virtual_display import XvfbError, start_xvfb

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DEMO = ROOT / "demo-data"
DEMO_PASSWORD = "skaermbesoeg-demo"
SCREENS = DEMO / "screens"


#: The console's demo accounts, one per role: (account, role, name shown on the citizen's screen).
DEMO_ACCOUNTS = (("admin", "admin", "Administrator"), ("anne", "caregiver", "Anne, sygeplejerske"),
                 ("lis", "logistics", "Lis, logistik"), ("sara", "support", "Sara, support"),
                 ("mette", "management", "Mette, ledelse"))
CONSOLE_HOME = {"admin": "everything", "caregiver": "my citizens: call, plan visits, call history; "
                "assign a new citizen to call the screen again", "logistics": "units, batches, assign, wipe",
                "support": "units: diagnostics, logs, restart",
                "management": "figures: visits planned, made, unanswered, failed; chart and CSV"}

def free_port(preferred: int) -> int:
    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise RuntimeError("no free port")


def sh(*args: object, stdin: str | None = None) -> str:
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, input=stdin)
    if proc.returncode != 0:
        sys.exit(f"demo: {' '.join(map(str, args[:3]))} failed:\n{proc.stderr}")
    return proc.stdout


def server_cli(*args: object) -> Any:
    return json.loads(sh(BIN / "kiosk-server", *args, "--data", DEMO / "server", "--json"))


def wait(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    sys.exit(f"demo: timed out waiting for {what}")


def run_command(device_id: str, kind: str, *args: str) -> dict[str, Any]:
    extra = [x for a in args for x in ("--arg", a)]
    command_id = server_cli("command", "send", device_id, kind, *extra)["id"]
    return dict(wait(lambda: (v := server_cli("command", "show", command_id))["state"] in ("done", "failed") and v,
                     20, f"the {kind} command"))


def screen_display(procs: list[subprocess.Popen[bytes]]) -> tuple[dict[str, str], str]:
    """Where the citizen's screen opens: the desktop's display if there is one (no extra
    environment), else a private virtual screen whose pictures are written to SCREENS."""
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        return {}, "a window on this display"
    try:
        display, xvfb = start_xvfb(1280, 800)
    except XvfbError as exc:
        sys.exit(f"demo: no display, and {exc}")
    procs.append(xvfb)
    return ({"DISPLAY": display, "SDL_AUDIODRIVER": "dummy"},
            f"no display here, so it runs on a virtual one; a picture of each screen goes to {SCREENS}/")


def step(text: str) -> None:
    print(f"\n== {text}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--no-wait", action="store_true", help="exit after the walk-through")
    args = parser.parse_args()
    shutil.rmtree(DEMO, ignore_errors=True)  # every demo starts from a new municipality
    DEMO.mkdir()
    device_port, console_port = free_port(8443), free_port(8080)
    procs: list[subprocess.Popen[bytes]] = []

    def stop(*_: object) -> None:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            p.wait(10)
        sys.exit(0)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        turn_args: list[str | Path] = []
        if shutil.which("turnserver"):
            step("The municipality's own TURN server (coturn) on loopback, for calls through firewalls")
            turn_port, secret = free_port(3478), secrets.token_hex(24)
            (DEMO / "turn.secret").write_text(secret)
            (DEMO / "turn.secret").chmod(0o600)
            (DEMO / "coturn").mkdir()
            procs.append(subprocess.Popen([ROOT / "scripts" / "coturn.sh", "--port", str(turn_port),
                                           "--dir", DEMO / "coturn"], env={**os.environ, "COTURN_SECRET": secret},
                                          stdout=(DEMO / "coturn.log").open("w"), stderr=subprocess.STDOUT))
            turn_args = ["--turn", f"127.0.0.1:{turn_port}", "--turn-secret-file", DEMO / "turn.secret"]
            print(f"coturn on 127.0.0.1:{turn_port}")
        else:
            print("coturn is not installed (make setup installs it): calls use direct connections only")

        step("Municipality server: creating its root CA, keys and database")
        log = (DEMO / "server.log").open("w")
        procs.append(subprocess.Popen(
            [BIN / "kiosk-server", "serve", "--data", DEMO / "server", "--municipality", "Demo Kommune",
             "--device-listen", f"127.0.0.1:{device_port}", "--console-listen", f"127.0.0.1:{console_port}",
             "--ring-timeout", "30s", *turn_args],
            stdout=log, stderr=subprocess.STDOUT))
        wait(lambda: "root CA SHA-256" in (DEMO / "server.log").read_text(), 20, "the server to start")
        print((DEMO / "server.log").read_text().strip().splitlines()[-1])
        for account, role, shown in DEMO_ACCOUNTS:  # one demo account per role of the console
            sh(BIN / "kiosk-server", "user", "add", account, "--role", role, "--display-name", shown,
               "--password-stdin", "--data", DEMO / "server", stdin=DEMO_PASSWORD + "\n")

        step("Logistics: a provisioning file with a one-time token, as written into a unit's boot partition")
        prov = Path(sh(BIN / "kiosk-server", "enroll-token", "create", "--data", DEMO / "server", "--count", "1",
                       "--expires", "1d", "--server-url", f"https://127.0.0.1:{device_port}",
                       "--out", DEMO / "provisioning").split()[0])
        print(prov.read_text().replace(prov.read_text().split("token: ")[1].split()[0], "<one-time token>"))

        step("The unit boots: it checks the server against the pin, enrolls, and connects with mutual TLS")
        agent_log = (DEMO / "agent.log").open("w")
        procs.append(subprocess.Popen([BIN / "kiosk-agent", "run", "--state", DEMO / "unit", "--provision", prov],
                                      stdout=agent_log, stderr=subprocess.STDOUT))
        status = wait(lambda: (s := json.loads(sh(BIN / "kiosk-agent", "status", "--state", DEMO / "unit", "--json")))
                      ["server_online"] and s, 30, "the unit to enroll")
        device_id = status["device_id"]
        print(f"unit {device_id}: {status['state']}, pinned to {status['server']} ({status['municipality']})")
        print("token left in the provisioning file:", "token: null" in prov.read_text() and "none (destroyed)")

        step("Support: remote health checks")
        for check in run_command(device_id, "diagnostics")["result"]["detail"]["checks"]:
            print(f"  {check['status']:<4} {check['name']:<16} {check['detail']}")

        step("Logistics: the citizen gets the screen; Anne is in her care team (name stored encrypted on the unit)")
        citizen = server_cli("citizen", "add", "--name", "Karen Jensen", "--device", device_id, "--caregiver", "anne")
        wait(lambda: server_cli("command", "show", citizen["assign_command"])["state"] == "done", 20, "the assignment")
        print("state:", json.loads(sh(BIN / "kiosk-agent", "status", "--state", DEMO / "unit", "--json"))["state"])
        screen_env, where = screen_display(procs)
        procs.append(subprocess.Popen(
            [BIN / "kiosk-ui", "--state", DEMO / "unit", "--demo-media", "--auto-answer-after", "1",
             *(["--size", "1280x800", "--screenshots", str(SCREENS)] if screen_env else [])],
            env={**os.environ, **screen_env, "KIVY_HOME": str(DEMO / "kivy"), "KIVY_NO_ARGS": "1"},
            stdout=(DEMO / "screen.log").open("w"), stderr=subprocess.STDOUT))
        wait(lambda: '"screen": "idle"' in (DEMO / "screen.log").read_text(), 60, "the screen app")
        print(f"the citizen's screen: {where}")

        step("Anne calls Karen; the screen (answering by itself in the demo) picks up")
        call = json.loads(sh(sys.executable, "-m", "kiosk.caregiver", "--console",
                             f"http://127.0.0.1:{console_port}", "--user", "anne", "--password-stdin",
                             "--citizen", citizen["citizen_id"], "--talk", "4", stdin=DEMO_PASSWORD + "\n"))
        print(f"call ended: {call['end_reason']}; received {call['video_frames']} video and "
              f"{call['audio_frames']} audio frames")
        record = wait(lambda: [r for r in server_cli("call", "list") if r["quality_device"]], 20, "the call record")[0]
        for side in ("quality_staff", "quality_device"):
            q = record[side]
            rtt = q.get("round_trip_time_ms")
            print(f"  {side.split('_')[1]:<7} frames decoded {q.get('frames_decoded')}, packets lost "
                  f"{q.get('packets_lost')}, round trip {rtt if rtt is None else round(rtt, 1)} ms, "
                  f"freezes {q.get('freezes')}")

        step("The municipality collects the unit: wipe, with a receipt signed by the unit's key")
        started = time.monotonic()
        wiped = run_command(device_id, "wipe")
        receipt = wiped["result"]["detail"]
        print(f"wipe {wiped['state']}: {1000 * (receipt['finished_at'] - receipt['intent_at']):.0f} ms on the unit, "
              f"{time.monotonic() - started:.1f} s from the command to the verified receipt; signature verified: "
              f"{wiped['result_verified']}; erased: {', '.join(receipt['erased'])}")
        print("state:", json.loads(sh(BIN / "kiosk-agent", "status", "--state", DEMO / "unit", "--json"))["state"],
              "(still enrolled and pinned: ready for the next citizen)")

        step("Where to look")
        if SCREENS.is_dir():
            print(f"  the screens     {SCREENS}/  ({', '.join(sorted(p.name for p in SCREENS.glob('*.png')))})")
        print(f"  console         http://127.0.0.1:{console_port}/  (password {DEMO_PASSWORD} for every account)")
        for account, role, _ in DEMO_ACCOUNTS:
            print(f"    {role:<10} {account:<6} {CONSOLE_HOME[role]}")
        print(f"  console API     http://127.0.0.1:{console_port}/openapi.json  (log in as admin / {DEMO_PASSWORD})")
        print(f"  audit log       {BIN / 'kiosk-server'} audit list --data {DEMO / 'server'}")
        print(f"  devices         {BIN / 'kiosk-server'} device list --data {DEMO / 'server'}")
        print(f"  unit's trail    {BIN / 'kiosk-agent'} audit --state {DEMO / 'unit'}")
        print(f"  logs            {DEMO / 'server.log'}, {DEMO / 'agent.log'}")
        if args.no_wait or not sys.stdin.isatty():
            stop()
        print("\nRunning; press Ctrl-C to stop.", flush=True)
        while True:
            time.sleep(3600)
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
