"""A unit made from the built image the way logistics staff make one, and how the image tests
look at it: its server's CLI, its serial line and its disk file.

Shared by the boot tests (test_boot.py), the update story (test_update.py), the arm64 tests
and bench/image_boot.py."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path
from typing import Any

from kiosk.image import bootcfg, gpt, recipe
from tests.harness import ServerProcess, wait_until
from tests.image.vm import SERVER_IN_GUEST, SERVER_PORT_IN_GUEST, Vm

GUEST_URL = f"https://{SERVER_IN_GUEST}:{SERVER_PORT_IN_GUEST}"
BOOT_TIMEOUT = 600  # KVM boots in seconds; TCG on a loaded machine takes minutes (up to 6 seen)
#: Journal lines go to the serial console, so a fail point's hit can be seen from outside.
JOURNAL_TO_SERIAL = "systemd.journald.forward_to_console=1"
WIPE_HELD = "kiosk failpoint wipe:key-destroyed: hold"


def copy_image(built_image: Path, work: Path, grow_mib: int) -> Path:
    """The image written to a medium ``grow_mib`` larger than itself (the first boot grows data)."""
    disk = work / "disk.img"
    subprocess.run(["cp", "--sparse=always", str(built_image), str(disk)], check=True)
    with disk.open("r+b") as f:
        f.truncate(disk.stat().st_size + grow_mib * 1024 * 1024)
    return disk


def make_unit(built_image: Path, work: Path, server: ServerProcess, grow_mib: int = 512) -> Path:
    """A copy of the image as a larger medium, provisioned the way logistics staff do it."""
    disk = copy_image(built_image, work, grow_mib)
    prov_dir = work / "prov"
    lines = server.cli("enroll-token", "create", "--count", "1", "--expires", "1d",
                       "--server-url", GUEST_URL, "--out", str(prov_dir)).stdout.split()
    subprocess.run([sys.executable, "-m", "kiosk.image.cli", "provision", str(disk), "--file", lines[0]],
                   check=True, capture_output=True, text=True)
    return disk


def set_kernel_args(disk: Path, work: Path, extra: str = "", debug: bool = False) -> None:
    """The unit's grub.cfg (on its config partition) as built, plus ``extra`` kernel arguments."""
    args = bootcfg.kernel_cmdline("amd64", debug) + (f" {extra}" if extra else "")
    cfg = work / "grub.cfg"
    cfg.write_text(bootcfg.grub_cfg(args, recipe.load("amd64").layout.boot_tries))
    config = gpt.find(disk, "config")
    subprocess.run(["mcopy", "-o", "-i", f"{disk}@@{config.offset}", str(cfg), "::/EFI/BOOT/grub.cfg"], check=True)


def failpoint_args(spec: str) -> str:
    """The agent's fail points (kiosk/provision/failpoints.py), given to every service by systemd."""
    return f"systemd.setenv=KIOSK_FAILPOINTS={spec} {JOURNAL_TO_SERIAL}"


def mtools(*args: str) -> bytes:
    return subprocess.run(args, check=True, capture_output=True).stdout


def sha256_range(path: Path, offset: int, size: int) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        f.seek(offset)
        left = size
        while left and (chunk := f.read(min(left, 1 << 20))):
            digest.update(chunk)
            left -= len(chunk)
    return digest.hexdigest()


def data_grown(disk: Path) -> bool:
    """The data partition reaches the end of the disk (the first boot grew it)."""
    return disk.stat().st_size - gpt.find(disk, "data").end < 8 * 1024 * 1024


def devices(server: ServerProcess) -> list[dict[str, Any]]:
    return list(server.cli_json("device", "list"))


def wait_online(server: ServerProcess, vm: Vm, timeout: float = BOOT_TIMEOUT) -> str:
    def online() -> str | None:
        assert vm.proc is not None and vm.proc.poll() is None, f"QEMU exited:\n{vm.serial()[-3000:]}"
        return next((d["id"] for d in devices(server) if d["online"]), None)
    try:
        return str(wait_until(online, timeout, 1.0, what="the unit to enroll and come online"))
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nserial console:\n{vm.serial()[-4000:]}\n"
                             f"server:\n{server.log()[-2000:]}") from None


def diagnostics(server: ServerProcess, device_id: str) -> dict[str, dict[str, str]]:
    # seconds on a quiet machine; an emulated unit beside the rest of the suite takes longer
    view = server.wait_command(server.send(device_id, "diagnostics"), timeout=300)
    assert view["state"] == "done" and view["result_verified"], view
    return {c["name"]: c for c in view["result"]["detail"]["checks"]}
