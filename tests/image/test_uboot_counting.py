"""The arm64 boot counting, run by real U-Boot: Debian's u-boot-qemu on QEMU's arm64 virt board.

The disk has the image's partition table and its own boot.scr (kiosk.image.bootcfg, compiled
with mkimage as the build does) with the counters on the config partition. Each slot's
partition holds only its slot.env: the kernel never starts, so each power-on is a failed
boot, as when a slot's system never comes up to mark itself good. QEMU is powered off once
the script has said which slot it boots (it has saved the counters before), and the counters
are read back from the disk with mtools. What the Pi's firmware does before U-Boot is not
tested anywhere (QEMU's raspi boards cannot boot from SD or USB).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from kiosk.image import bootcfg, gpt, kernel, layout
from kiosk.image.build import DEFAULT_CACHE, _fat, _place
from tests.harness import wait_until
from tests.image.vm import UBOOT_QEMU_ARM64, Vm

pytestmark = [
    pytest.mark.slow, pytest.mark.timeout(900),
    pytest.mark.skipif(not UBOOT_QEMU_ARM64.exists() or not shutil.which("qemu-system-aarch64"),
                       reason="needs u-boot-qemu and qemu-system-arm (scripts/setup.sh)"),
    pytest.mark.skipif(not shutil.which("mkimage") or not shutil.which("mcopy"), reason="needs u-boot-tools, mtools"),
]
TRIES = 3
BOOTING = re.compile(r"kiosk: booting slot (\w) from partition (\d) \(tries a=(\d+) b=(\d+)\)")


def make_disk(tmp_path: Path, counters: dict[str, str], slot_files: dict[str, Path | bytes] | None = None,
              boot_mib: int = 8) -> Path:
    plan = layout.plan("arm64", config_mib=8, boot_mib=boot_mib, root_mib=1, data_mib=1)
    script = tmp_path / "boot.cmd"
    script.write_text(bootcfg.uboot_script(bootcfg.kernel_cmdline("arm64", debug=False), TRIES))
    subprocess.run(["mkimage", "-A", "arm64", "-T", "script", "-C", "none", "-n", "kiosk A/B boot",
                    "-d", script, tmp_path / "boot.scr"], check=True, capture_output=True)
    _fat(tmp_path / "config.img", "CONFIG", 8, {"boot.scr": tmp_path / "boot.scr",
                                                 "boot-count.env": bootcfg.uboot_env(counters)})
    for slot in bootcfg.SLOTS:
        _fat(tmp_path / f"boot_{slot}.img", f"BOOT_{slot.upper()}", boot_mib,
             {"slot.env": bootcfg.uboot_env({"kiosk_args": f"root=/dev/mapper/root-{slot}"}), **(slot_files or {})})
    disk = tmp_path / "disk.img"
    with disk.open("wb") as f:
        f.truncate(plan.disk_size)
    subprocess.run(["sfdisk", "--no-reread", "--no-tell-kernel", "-q", disk], input=layout.sfdisk_script(plan),
                   text=True, check=True, capture_output=True)
    for name in ("config", "boot_a", "boot_b"):
        _place(disk, plan[name], tmp_path / f"{name}.img")
    return disk


def counters(disk: Path) -> dict[str, str]:
    """boot-count.env as U-Boot (or the unit's kiosk-boot-ok) left it on the config partition
    (``env export -t``: lines, perhaps a NUL at the end)."""
    raw = subprocess.run(["mtype", "-i", f"{disk}@@{gpt.find(disk, 'config').offset}", "::boot-count.env"],
                         capture_output=True, check=True).stdout
    return dict(line.split("=", 1) for line in raw.rstrip(b"\0\n").decode().splitlines())


def power_on(disk: Path, work: Path, until: re.Pattern[str] = BOOTING, timeout: float = 300,
             memory_mib: int = 512) -> tuple[str, str]:
    """One power-on: (the slot U-Boot chose, everything on the serial line up to ``until``)."""
    vm = Vm(disk, work, server_port=9, arch="arm64", memory_mib=memory_mib).start()
    try:
        wait_until(lambda: until.search(vm.serial()) or (vm.proc and vm.proc.poll() is not None),
                   timeout, 0.5, what=f"{until.pattern!r} on the serial line")
        serial = vm.serial()
    finally:
        vm.stop()
    match = BOOTING.search(serial)
    assert match, f"boot.scr chose no slot:\n{serial[-3000:]}"
    return match.group(1), serial


def test_a_slot_that_never_comes_up_is_passed_over_after_its_tries(tmp_path: Path) -> None:
    disk = make_disk(tmp_path, {"ORDER": "a b", "a_ok": "1", "a_try": "0", "b_ok": "1", "b_try": "0"})
    chosen = [power_on(disk, tmp_path)[0] for _ in range(TRIES + 1)]
    assert chosen == ["a"] * TRIES + ["b"]
    assert counters(disk) == {"ORDER": "a b", "a_ok": "1", "a_try": str(TRIES), "b_ok": "1", "b_try": "1"}


def test_with_no_tries_left_anywhere_both_slots_start_over(tmp_path: Path) -> None:
    # slot B is shipped empty (b_ok=0); slot A has used its tries
    disk = make_disk(tmp_path, {"ORDER": "a b", "a_ok": "1", "a_try": str(TRIES), "b_ok": "0", "b_try": "0"})
    chosen, serial = power_on(disk, tmp_path)
    assert "No slot has tries left: starting over with both." in serial
    assert chosen == "a", "after U-Boot's reset the script runs again and takes slot A afresh"
    assert counters(disk)["a_try"] == "1"


def test_the_slots_own_kernel_arguments_are_handed_on(tmp_path: Path) -> None:
    disk = make_disk(tmp_path, {"ORDER": "b a", "a_ok": "1", "a_try": "0", "b_ok": "1", "b_try": "0"})
    chosen, serial = power_on(disk, tmp_path)
    assert chosen == "b"
    assert BOOTING.search(serial).group(2) == str(bootcfg.BOOT_PARTITION["b"])  # type: ignore[union-attr]


ARM64_KERNEL_DEBS = sorted(Path(DEFAULT_CACHE, "apt-arm64").glob("linux-image-*-arm64_*_arm64.deb"))
LINUX = re.compile(r"Linux version (\S+)")


@pytest.mark.skipif(not ARM64_KERNEL_DEBS, reason="needs Debian's arm64 kernel in the apt cache (an arm64 build)")
def test_boot_scr_starts_debians_arm64_kernel_and_a_panic_counts_as_a_failed_boot(tmp_path: Path) -> None:
    """The Pi's kernel, started by boot.scr with booti; with no root it panics and (panic=10)
    restarts, and U-Boot counts that as the slot's next try. No initramfs: not the image's boot."""
    unpacked = tmp_path / "deb"
    subprocess.run(["dpkg-deb", "-x", ARM64_KERNEL_DEBS[-1], unpacked], check=True)
    [vmlinuz] = unpacked.glob("boot/vmlinuz-*")
    image = kernel.arm64_image(vmlinuz.read_bytes())
    # ignore_loglevel: the slot's own argument, so the kernel's banner shows despite the image's quiet
    disk = make_disk(tmp_path, {"ORDER": "a b", "a_ok": "1", "a_try": "0", "b_ok": "0", "b_try": "0"},
                           {"Image": image, "slot.env": bootcfg.uboot_env({"kiosk_args": "ignore_loglevel"})},
                           boot_mib=layout.mib_for(len(image), 20))
    second_try = re.compile(r"kiosk: booting slot a from partition 2 \(tries a=2 b=0\)")
    _, serial = power_on(disk, tmp_path, until=second_try, timeout=1500, memory_mib=1024)
    linux = LINUX.search(serial)
    assert linux and linux.group(1) == vmlinuz.name.removeprefix("vmlinuz-"), f"Debian's kernel ran:\n{serial[-3000:]}"
    assert "kiosk.slot=a" in serial and "Kernel panic - not syncing" in serial
    assert second_try.search(serial), "after the panic U-Boot ran boot.scr again and counted a second try"
    assert counters(disk)["a_try"] == "2"
