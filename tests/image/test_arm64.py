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
boot.scr, and the unit enrolls. Not checked anywhere: the Raspberry Pi firmware stage
before U-Boot (QEMU's raspi boards have no SD or USB to boot from).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kiosk.image import gpt, layout
from tests.harness import ServerProcess
from tests.image.test_boot import make_unit, wait_online
from tests.image.vm import SERVER_IN_GUEST, UBOOT_QEMU_ARM64, Vm

WANTED = os.environ.get("KIOSK_IMAGE_ARM64", "")
pytestmark = [
    pytest.mark.image, pytest.mark.slow, pytest.mark.timeout(7200),
    pytest.mark.skipif(not WANTED, reason="the arm64 image runs with `make test-image-arm64` (too slow for CI here)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="building and auditing the image needs root"),
    pytest.mark.skipif(not UBOOT_QEMU_ARM64.exists(), reason="needs u-boot-qemu and qemu-system-arm"),
]


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


def test_u_boot_runs_the_images_boot_scr_and_the_unit_enrolls(arm64_image: Path, tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "server", extra_args=["--server-name", SERVER_IN_GUEST]).start()
    vm: Vm | None = None
    try:
        vm = Vm(make_unit(arm64_image, tmp_path, server), tmp_path, server.device_port, arch="arm64").start()
        wait_online(server, vm, timeout=3600)
    finally:
        if vm:
            vm.stop()
        server.stop()
