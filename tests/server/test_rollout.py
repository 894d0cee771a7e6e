"""A roll-out of three waves to four real agents against a real server, halting on a failed wave.

What stands in, said plainly: RAUC and the reboot. This machine's kernel has no
device-mapper, so RAUC cannot install a verity bundle here (the image tests do that in QEMU).
Each agent runs a stand-in ``rauc`` that fetches the bundle from the server's device port over
mutual TLS with the unit's own certificate (as RAUC's streaming does) and checks it is the
published one, then succeeds or refuses as the test tells it. The agents' reboots are recorded
(``--system-actions record``); the test plays the bootloader: it restarts the agent with the
other slot on its command line (or, for a unit whose new slot "fails to boot", the old one).
Everything else is the real thing: the signed ``update`` command, the agent's updater and
health check, the unit's reports, the server's waves, pause, halt and audit.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kiosk.protocol import agent_socket
from kiosk.protocol import messages as m
from tests.harness import AgentProcess, ServerProcess, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]  # agents enroll slowly on a loaded machine

OLD, NEW = "0.1.0+20261101.0900", "0.1.0+20261129.1200"
STAND_IN = f"""#!{sys.executable}
# A stand-in for RAUC (see the test's docstring): install fetches over mutual TLS and checks.
import hashlib, json, os, ssl, sys, urllib.request
args = sys.argv[1:]
log = open(os.environ["STANDIN_LOG"], "a")
log.write(json.dumps(args) + "\\n")
if args[0] == "install":
    opts = dict(a[2:].split("=", 1) for a in args[1:-1])
    ctx = ssl.create_default_context(cafile=opts["tls-ca"])
    ctx.load_cert_chain(opts["tls-cert"], opts["tls-key"])
    body = urllib.request.urlopen(args[-1], context=ctx, timeout=30).read()
    if hashlib.sha256(body).hexdigest() != os.environ["STANDIN_SHA256"]:
        print("error: the bundle fetched is not the one published"); sys.exit(1)
    if os.environ.get("STANDIN_REFUSE"):
        print("error: " + os.environ["STANDIN_REFUSE"]); sys.exit(1)
    print("Installing done.")
"""


@dataclass
class Unit:
    agent: AgentProcess
    cmdline: Path
    os_release: Path
    boot_id: Path
    actions: Path
    falls_back: bool = False  # its new slot "fails to boot": the bootloader starts the old one
    device_id: str = ""
    rebooted: bool = False

    def boot(self, slot: str, version: str) -> None:
        self.cmdline.write_text(f"ro kiosk.slot={slot} rauc.slot={slot}\n")
        self.os_release.write_text(f'PRETTY_NAME="Debian GNU/Linux 13 (trixie)"\nIMAGE_VERSION="{version}"\n')
        self.boot_id.write_text(f"{uuid.uuid4()}\n")  # each boot its own, as the kernel's


def screen(unit: Unit, stop: threading.Event) -> None:
    """A stand-in for the screen app: says hello and beats, reconnecting after each agent start."""
    while not stop.is_set():
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(str(agent_socket.socket_path(unit.agent.state)))
                s.sendall(m.encode(m.UiHello(ui_version="stand-in")) + b"\n")
                while not stop.is_set():
                    s.sendall(m.encode(m.UiHeartbeat(screen_awake=True)) + b"\n")
                    stop.wait(1.0)
        except OSError:
            stop.wait(0.5)


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[tuple[ServerProcess, list[Unit], Path]]:
    server = ServerProcess(tmp_path / "server").start()
    bundle = tmp_path / f"skaermbesoeg-kiosk-amd64-{NEW}.raucb"
    bundle.write_bytes(os.urandom(256 * 1024))
    digest = hashlib.sha256(bundle.read_bytes()).hexdigest()
    bundle.with_name(bundle.name + ".json").write_text(json.dumps(
        {"version": NEW, "arch": "amd64", "compatible": "skaermbesoeg-kiosk-amd64", "bytes": 256 * 1024,
         "sha256": digest}))
    rauc = tmp_path / "rauc"
    rauc.write_text(STAND_IN)
    rauc.chmod(0o755)
    units: list[Unit] = []
    stop = threading.Event()
    screens: list[threading.Thread] = []
    try:
        for i in range(4):
            state = tmp_path / f"unit{i}"
            unit = Unit(AgentProcess(state, server.provisioning_file(tmp_path / f"prov{i}")),
                        tmp_path / f"cmdline{i}", tmp_path / f"os-release{i}", tmp_path / f"boot-id{i}",
                        state / "system-actions.log")
            unit.agent.extra_args = ["--rauc", str(rauc), "--boot-cmdline", str(unit.cmdline),
                                     "--os-release", str(unit.os_release), "--boot-id", str(unit.boot_id),
                                     "--update-health-deadline", "60"]
            unit.agent.env = {"STANDIN_LOG": str(tmp_path / f"rauc{i}.log"), "STANDIN_SHA256": digest}
            unit.boot("a", OLD)
            unit.device_id = unit.agent.start().wait_online()
            units.append(unit)
            screens.append(threading.Thread(target=screen, args=(unit, stop), daemon=True))
            screens[-1].start()
        yield server, units, bundle
    finally:
        stop.set()
        for unit in units:
            unit.agent.stop()
        server.stop()


def play_bootloader(units: list[Unit]) -> None:
    """A unit that asked to reboot comes back in its new slot, or, if it falls back, in the old."""
    for unit in units:
        if not unit.rebooted and unit.actions.exists() and "reboot" in unit.actions.read_text():
            unit.rebooted = True
            unit.agent.stop()
            unit.boot("a", OLD) if unit.falls_back else unit.boot("b", NEW)
            unit.agent.start()


def test_a_rollout_goes_wave_by_wave_and_halts_when_a_wave_fails(
        fleet: tuple[ServerProcess, list[Unit], Path]) -> None:
    server, units, bundle = fleet
    order = [d["id"] for d in sorted(server.cli_json("device", "list"), key=lambda d: d["id"])]
    assert len(order) == 4
    assert "release 0.1.0+20261129.1200 (amd64, 262144 bytes) added" in server.cli("release", "add",
                                                                                   str(bundle)).stdout
    # waves in the server's order (by enrollment): 1 unit, then 2, then 1
    second_wave = [units[1], units[2]]
    units[1].agent.stop()
    units[1].agent.env["STANDIN_REFUSE"] = "bundle signature verification failed (another key)"
    units[1].agent.start().wait_online()
    units[2].falls_back = True

    rollout_id = server.cli("rollout", "start", NEW, "--waves", "25%,75%,100%", "--pause", "2s",
                            "--max-failed", "10%").stdout.strip()

    def status() -> dict[str, object]:
        play_bootloader(units)
        return dict(server.cli_json("rollout", "status", rollout_id))

    view = wait_until(lambda: (v := status())["state"] != "running" and v, 600, 0.5,
                      what="the roll-out to halt")
    assert view["state"] == "halted", view
    # it halts at the first failure past the share; the wave's other unit goes on and ends
    view = wait_until(lambda: (v := status())["waves"][1]["rolled-back"] and v, 300, 0.5,  # type: ignore[index]
                      what="the second unit of wave 2 to fall back")
    waves = view["waves"]
    assert isinstance(waves, list)
    print(json.dumps(view, indent=1))
    assert view["state"] == "halted" and "wave 2" in str(view["reason"]), view
    assert [w["units"] for w in waves] == [1, 2, 1]
    assert waves[0]["good"] == 1                                  # wave 1 passed: the unit runs slot b
    assert waves[1]["failed"] == 1 and waves[1]["rolled-back"] == 1, waves[1]
    problems = {p["device_id"]: p for p in waves[1]["problems"]}
    assert "another key" in problems[units[1].device_id]["detail"]
    assert "slot b failed to boot" in problems[units[2].device_id]["detail"]
    assert waves[2]["pending"] == 1 and not waves[2]["sent"]      # never sent: the rest is safe
    for unit in units[3:]:
        assert not Path(unit.agent.env["STANDIN_LOG"]).exists()  # RAUC never asked to do anything
        assert not [c for c in server.cli_json("audit", "list", "--device", unit.device_id)
                    if c["action"] == "command-queued" and c["detail"].get("kind") == "update"]

    first = units[0]
    audit = [e["action"] for e in server.cli_json("audit", "list", "--limit", "500")]
    for step in ("release-added", "rollout-started", "rollout-wave-sent", "update-downloading",
                 "update-installed", "update-booted", "update-good", "rollout-wave-passed",
                 "update-failed", "update-rolled-back", "rollout-halted"):
        assert step in audit, step
    # the unit's own trail holds its side; the good unit marked its slot good with RAUC
    marks = [json.loads(line) for line in Path(first.agent.env["STANDIN_LOG"]).read_text().splitlines()]
    assert ["status", "mark-good", "booted"] in marks
    assert second_wave[0].device_id in problems
