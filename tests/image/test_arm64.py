"""The arm64 image (Raspberry Pi 4/5 class), outside `make test`: building it runs dpkg and
every maintainer script under qemu-user (kiosk/image/emulation.py moves the worst of that
work out of emulation, but unpacking and configuring ~400 packages stays there) and booting
it emulates every instruction, which takes far longer than the CI budget here (see
docs/benchmarks.md). Run it with `make test-image-arm64`
(KIOSK_IMAGE_ARM64=1, or KIOSK_IMAGE_ARM64=/path/to/built.img to reuse a build).
`make test` runs the boot counting of boot.scr under the same U-Boot without an image
(tests/image/test_uboot_counting.py), including Debian's arm64 kernel when an arm64
build has left it in the apt cache.

Checked: the audit passes; the partition table is the planned one; the image boots under
qemu-system-aarch64 (virt board) with Debian's u-boot-qemu running the image's own
boot.scr, and the unit enrolls and answers diagnostics (2026-11-29: build 61 min, this
module 509 s with a built image, at load ~18; docs/benchmarks.md); the slot marks itself
good in U-Boot's counters and a pulled plug then leaves the config partition whole (quiet
machine: the boot tests 181 s, online 142 s after QEMU started; with the Pi's boot stage on
the config partition, 214 s and 85 s, and a build of 31 min at load 3-6). Not checked anywhere:
the Raspberry Pi firmware stage before U-Boot running (QEMU's raspi boards have no SD or
USB to boot from); that the config partition carries it is checked as files.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kiosk.image import bootcfg, gpt, layout
from kiosk.protocol import provisioning
from tests.harness import ServerProcess, wait_until
from tests.image.test_uboot_counting import counters
from tests.image.unit import diagnostics, make_unit, mtools, wait_online
from tests.image.vm import SERVER_IN_GUEST, UBOOT_QEMU_ARM64, Vm

WANTED = os.environ.get("KIOSK_IMAGE_ARM64", "")
pytestmark = [
    pytest.mark.image, pytest.mark.slow, pytest.mark.timeout(7200),
    pytest.mark.skipif(not WANTED, reason="the arm64 image runs with `make test-image-arm64` (too slow for CI here)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="building and auditing the image needs root"),
    pytest.mark.skipif(not UBOOT_QEMU_ARM64.exists(), reason="needs u-boot-qemu and qemu-system-arm"),
]
#: Every instruction emulated, on a shared 2-core machine: the kernel alone takes minutes.
BOOT_TIMEOUT = 3600
FIRST_BOOT = "kiosk: booting slot a from partition 2 (tries a=1 b=0)"


@pytest.fixture(scope="module")
def arm64_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if WANTED != "1":
        return Path(WANTED)
    out = tmp_path_factory.mktemp("arm64-build")
    proc = subprocess.run([sys.executable, "-m", "kiosk.image.cli", "build", "--arch", "arm64", "--out", str(out)],
                          capture_output=True, text=True, timeout=6000)
    assert proc.returncode == 0, f"kiosk-image build failed:\n{proc.stderr[-4000:]}"
    return out / "skaermbesoeg-kiosk-arm64.img"


def test_the_arm64_image_passes_its_audit(arm64_image: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "kiosk.image.cli", "audit", str(arm64_image)],
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, "\n".join(line for line in proc.stdout.splitlines() if line.startswith("BREACH"))
    assert "(arm64)" in proc.stdout


def test_the_partition_table_is_the_planned_one(arm64_image: Path) -> None:
    entries = gpt.read(arm64_image)
    assert [e.name for e in entries] == ["config", "boot_a", "boot_b", "root_a", "root_b", "data"]
    assert {e.type_guid for e in entries if e.name.startswith("root")} == {layout.ROOT_TYPE["arm64"]}
    assert all(e.offset % layout.MIB == 0 for e in entries)
    assert entries[3].size == entries[4].size


def test_the_config_partition_carries_the_pis_boot_stage_and_the_root_does_not(arm64_image: Path) -> None:
    """What a Pi 4 needs before U-Boot (its boot ROM reads the first FAT partition): the
    firmware, config.txt handing over to U-Boot, U-Boot, the device trees. Not booted here
    (QEMU has no Pi that boots from a disk), so checked as files."""
    config = f"{arm64_image}@@{gpt.find(arm64_image, 'config').offset}"
    names = {line.rsplit("/", 1)[-1] for line in mtools("mdir", "-b", "-i", config, "::/").decode().split()}
    assert {"start4.elf", "fixup4.dat", "u-boot.bin", "config.txt", "boot.scr", "bcm2711-rpi-4-b.dtb",
            "bcm2712-rpi-5-b.dtb"} <= names, names
    config_txt = mtools("mtype", "-i", config, "::/config.txt").decode()
    assert "kernel=u-boot.bin" in config_txt and "arm_64bit=1" in config_txt, config_txt
    start4 = mtools("mtype", "-i", config, "::/start4.elf")
    assert start4[:4] == b"\x7fELF" and len(start4) > 1_000_000  # the VideoCore firmware itself
    manifest = json.loads(arm64_image.with_name(arm64_image.name.removesuffix(".img") + ".manifest.json")
                          .read_text())
    assert "raspi-firmware" in {p["name"] for p in manifest["packages"]}


@pytest.fixture(scope="module")
def unit(arm64_image: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One provisioned copy of the image, powered on once under U-Boot and left running until
    it has enrolled (a TCG boot costs minutes: the checks below share it)."""
    work = tmp_path_factory.mktemp("arm64-unit")
    server = ServerProcess(work / "server", extra_args=["--server-name", SERVER_IN_GUEST]).start()
    vm: Vm | None = None
    try:
        disk = make_unit(arm64_image, work, server)
        vm = Vm(disk, work, server.device_port, arch="arm64").start()
        device_id = wait_online(server, vm, timeout=BOOT_TIMEOUT)
        yield {"server": server, "vm": vm, "disk": disk, "device_id": device_id,
               "online_after": time.monotonic() - vm.started_at}
    finally:
        if vm:
            vm.stop()
        server.stop()


def test_u_boot_runs_the_images_boot_scr_and_the_unit_enrolls(unit: dict[str, Any]) -> None:
    print(f"online {unit['online_after']:.0f} s after QEMU started")
    # the image's own boot.scr chose slot A and counted its first try (kiosk.image.bootcfg)
    assert FIRST_BOOT in unit["vm"].serial(), unit["vm"].serial()[-3000:]


def test_diagnostics_report_the_image_version_and_slot(unit: dict[str, Any]) -> None:
    versions = diagnostics(unit["server"], unit["device_id"])["versions"]["detail"]
    assert "image 0." in versions and "slot a" in versions, versions
    assert "Debian GNU/Linux 13" in versions


def counters_while_running(disk: Path) -> dict[str, str] | None:
    """boot-count.env read from outside while the unit runs, or None if that read caught its
    FAT mid-update (the guest writes the FAT and the directory in separate sectors: from
    outside, a live FAT may for a moment name a cluster its table has not yet given out)."""
    try:
        return counters(disk)
    except (subprocess.CalledProcessError, ValueError):
        return None


def test_the_slot_marks_itself_good_and_a_power_cut_then_leaves_the_config_partition_whole(
        unit: dict[str, Any]) -> None:
    """kiosk-boot-ok resets slot A's try counter in boot-count.env (the file boot.scr reads), the
    agent has spent the enrollment token in the provisioning file; then the plug is pulled.
    Both files must survive the cut on the FAT partition: a lost provisioning file would leave a
    unit that cannot prove which server it belongs to after its next wipe. Last in the module:
    it powers the unit off."""
    disk: Path = unit["disk"]
    wait_until(lambda: (c := counters_while_running(disk)) is not None and c["a_try"] == "0", 600, 2.0,
               what="kiosk-boot-ok to reset a_try in boot-count.env")
    unit["vm"].pull_the_plug()
    config = gpt.find(disk, "config")
    copy = disk.with_name("config-after-cut.img")
    with disk.open("rb") as src:
        src.seek(config.offset)
        copy.write_bytes(src.read(config.size))
    check = subprocess.run(["fsck.fat", "-n", str(copy)], capture_output=True, text=True)
    findings = [line for line in check.stdout.splitlines()[1:]
                if line.strip() and "Dirty bit" not in line and "dirty bit" not in line
                and not line.startswith(("Leaving filesystem", str(copy)))]
    assert not findings, check.stdout  # a cut may leave the dirty bit, nothing else
    assert counters(disk) == {**bootcfg.initial_env(), "a_try": "0"}
    spent = subprocess.run(["mtype", "-i", f"{disk}@@{config.offset}", "::kiosk-provision.yaml"],
                           capture_output=True, check=True).stdout
    assert provisioning.parse(spent).token is None, "the provisioning file lost, torn, or its token unspent"
