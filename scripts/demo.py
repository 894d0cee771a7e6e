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
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DEMO = ROOT / "demo-data"
DEMO_PASSWORD = "skaermbesoeg-demo"


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
        step("Municipality server: creating its root CA, keys and database")
        log = (DEMO / "server.log").open("w")
        procs.append(subprocess.Popen(
            [BIN / "kiosk-server", "serve", "--data", DEMO / "server", "--municipality", "Demo Kommune",
             "--device-listen", f"127.0.0.1:{device_port}", "--console-listen", f"127.0.0.1:{console_port}"],
            stdout=log, stderr=subprocess.STDOUT))
        wait(lambda: "root CA SHA-256" in (DEMO / "server.log").read_text(), 20, "the server to start")
        print((DEMO / "server.log").read_text().strip().splitlines()[-1])
        sh(BIN / "kiosk-server", "user", "add", "admin", "--role", "admin", "--password-stdin",
           "--data", DEMO / "server", stdin=DEMO_PASSWORD + "\n")

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

        step("Logistics: assign the unit to a citizen (stored encrypted on the unit only)")
        run_command(device_id, "assign", "citizen_name=Karen Jensen", "contact_staff=Anne (sygeplejerske)")
        print("state:", json.loads(sh(BIN / "kiosk-agent", "status", "--state", DEMO / "unit", "--json"))["state"])

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
