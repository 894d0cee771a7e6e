"""Health checks a support person can read: each OK, WARN or FAIL with a plain reason.

Each check reads one thing from the machine and judges it; a check that cannot tell
(no sensor, no Wi-Fi) says so rather than guessing. Nothing personal is reported.
"""

from __future__ import annotations

import glob
import os
import platform
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import kiosk
from kiosk.protocol.messages import CheckStatus, DiagnosticCheck


@dataclass(frozen=True)
class LinkFacts:
    """What the agent knows about its own situation when the checks run."""

    state_dir: Path
    connected: bool
    round_trip_ms: float | None
    ui_alive: bool
    started_at: float


def _check(name: str, status: CheckStatus, detail: str) -> DiagnosticCheck:
    return DiagnosticCheck(name=name, status=status, detail=detail)


def _os_release() -> dict[str, str]:
    try:
        lines = Path("/etc/os-release").read_text().splitlines()
    except OSError:
        return {}
    return {key: value.strip('"') for key, sep, value in (line.partition("=") for line in lines) if sep}


def _boot_slot() -> str | None:
    """The A/B slot the kiosk image booted from (its bootloader puts kiosk.slot= on the command line)."""
    try:
        args = Path("/proc/cmdline").read_text().split()
    except OSError:
        return None
    return next((arg.removeprefix("kiosk.slot=") for arg in args if arg.startswith("kiosk.slot=")), None)


def versions(_: LinkFacts) -> DiagnosticCheck:
    release = _os_release()
    detail = f"agent {kiosk.__version__}; {release.get('PRETTY_NAME', 'unknown OS')}; kernel {platform.release()}"
    if "IMAGE_VERSION" in release:
        detail += f"; image {release['IMAGE_VERSION']} slot {_boot_slot() or '?'}"
    return _check("versions", "OK", detail)


def uptime(facts: LinkFacts) -> DiagnosticCheck:
    try:
        seconds = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return _check("uptime", "WARN", "cannot read the system uptime")
    agent = time.time() - facts.started_at
    return _check("uptime", "OK", f"system up {seconds / 3600:.1f} h; agent up {agent / 60:.1f} min")


def judge_temperature(celsius: float) -> tuple[CheckStatus, str]:
    if celsius >= 80:
        return "FAIL", f"CPU at {celsius:.0f} °C: too hot, the unit will slow down; check ventilation"
    if celsius >= 70:
        return "WARN", f"CPU at {celsius:.0f} °C: warm; check that the unit is not covered"
    return "OK", f"CPU at {celsius:.0f} °C"


def cpu_temperature(_: LinkFacts) -> DiagnosticCheck:
    zones = sorted(glob.glob("/sys/class/thermal/thermal_zone*/temp"))
    if not zones:
        return _check("cpu-temperature", "OK", "this hardware reports no temperature sensor")
    try:
        celsius = max(int(Path(z).read_text()) for z in zones) / 1000
    except (OSError, ValueError):
        return _check("cpu-temperature", "WARN", "the temperature sensor could not be read")
    status, detail = judge_temperature(celsius)
    return _check("cpu-temperature", status, detail)


def throttling(_: LinkFacts) -> DiagnosticCheck:
    # Only a Raspberry Pi's firmware tells; elsewhere there is nothing to ask.
    if not shutil.which("vcgencmd"):
        return _check("throttling", "OK", "not a Raspberry Pi: no firmware throttling report")
    try:
        out = subprocess.run(["vcgencmd", "get_throttled"], capture_output=True, text=True, timeout=5).stdout
        flags = int(out.strip().split("=")[1], 16)
    except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
        return _check("throttling", "WARN", "the firmware throttling report could not be read")
    if flags & 0x5:
        return _check("throttling", "FAIL", "under-voltage or throttling now: use the original power supply")
    if flags & 0x50000:
        return _check("throttling", "WARN", "under-voltage or throttling happened since boot")
    return _check("throttling", "OK", "no under-voltage or throttling")


def judge_memory(available: int, total: int) -> tuple[CheckStatus, str]:
    pct = 100 * available / total if total else 0
    text = f"{available / 2**20:.0f} MB of {total / 2**20:.0f} MB free ({pct:.0f} %)"
    if pct < 5:
        return "FAIL", text + ": almost out of memory; a restart helps for now"
    if pct < 15:
        return "WARN", text + ": memory is getting low"
    return "OK", text


def memory(_: LinkFacts) -> DiagnosticCheck:
    try:
        info = {line.split(":")[0]: int(line.split()[1]) * 1024
                for line in Path("/proc/meminfo").read_text().splitlines() if line.split()[1:2]}
    except (OSError, ValueError):
        return _check("memory", "WARN", "cannot read memory figures")
    status, detail = judge_memory(info.get("MemAvailable", 0), info.get("MemTotal", 0))
    return _check("memory", status, detail)


def judge_disk(label: str, free: int, total: int) -> tuple[CheckStatus, str]:
    pct = 100 * free / total if total else 0
    text = f"{label}: {free / 2**30:.1f} GB free of {total / 2**30:.1f} GB"
    if free < 50 * 2**20 or pct < 2:
        return "FAIL", text + ": full; the unit cannot store schedules or updates"
    if pct < 10:
        return "WARN", text + ": getting full"
    return "OK", text


def disk(facts: LinkFacts) -> DiagnosticCheck:
    root = shutil.disk_usage("/")
    data = shutil.disk_usage(facts.state_dir)
    results = [judge_disk("system", root.free, root.total), judge_disk("data partition", data.free, data.total)]
    worst: CheckStatus = (
        "FAIL" if any(s == "FAIL" for s, _ in results) else "WARN" if any(s == "WARN" for s, _ in results) else "OK")
    return _check("disk", worst, "; ".join(d for _, d in results))


def network(_: LinkFacts) -> DiagnosticCheck:
    up = []
    for iface in sorted(os.listdir("/sys/class/net")):
        if iface == "lo":
            continue
        try:
            if Path(f"/sys/class/net/{iface}/operstate").read_text().strip() == "up":
                up.append(iface)
        except OSError:
            continue
    if not up:
        return _check("network", "FAIL", "no network connection is up: check the cable or Wi-Fi")
    return _check("network", "OK", f"connected via {', '.join(up)}")


def judge_wifi_signal(dbm: float) -> tuple[CheckStatus, str]:
    if dbm <= -80:
        return "FAIL", f"Wi-Fi signal {dbm:.0f} dBm: too weak for video; move the unit nearer the router"
    if dbm <= -70:
        return "WARN", f"Wi-Fi signal {dbm:.0f} dBm: weak; video may freeze"
    return "OK", f"Wi-Fi signal {dbm:.0f} dBm"


def wifi(_: LinkFacts) -> DiagnosticCheck:
    try:
        lines = Path("/proc/net/wireless").read_text().splitlines()[2:]
    except OSError:
        lines = []
    if not lines:
        return _check("wifi", "OK", "no Wi-Fi in use")
    try:
        dbm = float(lines[0].split()[3].rstrip("."))
    except (IndexError, ValueError):
        return _check("wifi", "WARN", "Wi-Fi signal could not be read")
    status, detail = judge_wifi_signal(dbm)
    return _check("wifi", status, detail)


def judge_round_trip(connected: bool, rtt_ms: float | None) -> tuple[CheckStatus, str]:
    if not connected:
        return "FAIL", "not connected to the municipality server"
    if rtt_ms is None:
        return "WARN", "connected, round trip not measured yet"
    if rtt_ms > 1000:
        return "FAIL", f"round trip to the server {rtt_ms:.0f} ms: the line is too slow for video"
    if rtt_ms > 300:
        return "WARN", f"round trip to the server {rtt_ms:.0f} ms: slow line; calls may lag"
    return "OK", f"round trip to the server {rtt_ms:.0f} ms"


def server_link(facts: LinkFacts) -> DiagnosticCheck:
    status, detail = judge_round_trip(facts.connected, facts.round_trip_ms)
    return _check("server-link", status, detail)


def clock_sync(_: LinkFacts) -> DiagnosticCheck:
    if not shutil.which("timedatectl"):
        return _check("clock-sync", "WARN", "cannot tell whether the clock is synchronised (no timedatectl)")
    try:
        out = subprocess.run(["timedatectl", "show", "-p", "NTPSynchronized", "--value"],
                             capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        out = ""
    if out == "yes":
        return _check("clock-sync", "OK", "clock synchronised")
    if out == "no":
        return _check("clock-sync", "WARN", "clock not synchronised: certificates and schedules may be judged wrong")
    return _check("clock-sync", "WARN", "cannot tell whether the clock is synchronised")


def camera(_: LinkFacts) -> DiagnosticCheck:
    devices = sorted(glob.glob("/dev/video*"))
    if not devices:
        return _check("camera", "FAIL", "no camera found: check the USB cable")
    return _check("camera", "OK", f"camera present ({', '.join(devices)})")


def microphone(_: LinkFacts) -> DiagnosticCheck:
    captures = glob.glob("/dev/snd/pcmC*D*c")
    if not captures:
        return _check("microphone", "FAIL", "no microphone found: check the USB cable or headset")
    return _check("microphone", "OK", f"{len(captures)} microphone input(s) present")


def ui_process(facts: LinkFacts) -> DiagnosticCheck:
    if facts.ui_alive:
        return _check("ui", "OK", "the screen app is running and responding")
    return _check("ui", "FAIL", "the screen app is not responding: send restart-ui")


CHECKS: list[Callable[[LinkFacts], DiagnosticCheck]] = [
    versions, uptime, cpu_temperature, throttling, memory, disk, network, wifi, server_link,
    clock_sync, camera, microphone, ui_process,
]


def run_all(facts: LinkFacts) -> list[DiagnosticCheck]:
    results = []
    for check in CHECKS:
        try:
            results.append(check(facts))
        except Exception as exc:  # noqa: BLE001 (one broken check must not hide the others)
            results.append(_check(check.__name__.replace("_", "-"), "WARN", f"check failed: {exc}"))
    return results
