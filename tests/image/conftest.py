"""The image under test, built once per test run, and the one unit that lives through the
image tests' story.

Fixtures here, not in one test module imported by another: an imported session fixture is
a second definition, and pytest ran the 8-17 minute build twice (once for test_boot.py, once
for test_update.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kiosk.image import gpt
from tests import swtpm
from tests.harness import ServerProcess, free_port
from tests.image.unit import failpoint_args, make_unit, set_kernel_args, sha256_range, wait_online
from tests.image.vm import SERVER_IN_GUEST, Vm

#: Where a run's image manifests are kept (the build's package list, for a look afterwards).
ARTIFACTS = Path(os.environ.get("KIOSK_IMAGE_ARTIFACTS", "/var/tmp/kiosk-image-test"))


@pytest.fixture(scope="session")
def built_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built once per test run with `kiosk-image build` (KIOSK_TEST_IMAGE reuses one while developing)."""
    if given := os.environ.get("KIOSK_TEST_IMAGE"):
        return Path(given)
    out = tmp_path_factory.mktemp("image-build")
    proc = subprocess.run([sys.executable, "-m", "kiosk.image.cli", "build", "--arch", "amd64", "--out", str(out)],
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, f"kiosk-image build failed:\n{proc.stderr[-4000:]}"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for manifest in out.glob("*.manifest.json"):
        shutil.copy(manifest, ARTIFACTS / manifest.name)
    return out / "skaermbesoeg-kiosk-amd64.img"


@pytest.fixture(scope="session")
def unit(built_image: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One amd64 unit for the boot tests, then the update story: an emulated boot costs minutes
    of a shared machine's CPU, so every boot serves several checks. Online after its first
    boot (the fixture's yield); from there its wipes stop at the fail point
    ``wipe:key-destroyed``, for test_boot.py's power cut in the middle of a wipe (whose next
    boot runs as built again); then test_update.py's boots, on the same disk. A power cut in
    the middle of the enrollment is the agent's (tests/e2e/test_enrollment_faults.py), not
    booted here: a boot more was minutes more of CI.

    A PC with a TPM (swtpm): the unit keeps the citizen data's key-encryption key there."""
    work = tmp_path_factory.mktemp("unit")
    # DEBUG: the server says how many bytes of a bundle each range request cost (test_update.py)
    server = ServerProcess(work / "server", extra_args=["--server-name", SERVER_IN_GUEST,
                                                        "--log-level", "DEBUG"]).start()
    disk = make_unit(built_image, work, server)
    root_a = gpt.find(disk, "root_a")
    root_before = sha256_range(disk, root_a.offset, root_a.size)
    stick = work / "stick.img"
    subprocess.run(["mkfs.vfat", "-C", "-n", "STICK", str(stick), "8192"], check=True, capture_output=True)
    set_kernel_args(disk, work, failpoint_args("wipe:key-destroyed=hold"))
    tpm = swtpm.Swtpm(work / "tpm", for_qemu=True).start() if swtpm.available() else None
    vm = Vm(disk, work, server.device_port, ssh_probe_port=free_port(), tpm_ctrl=tpm.ctrl if tpm else None)
    try:
        vm.start()
        device_id = wait_online(server, vm)
        yield {"server": server, "vm": vm, "disk": disk, "device_id": device_id, "work": work, "stick": stick,
               "root_a": root_a, "root_before": root_before, "online_after": time.monotonic() - vm.started_at,
               "tpm": tpm}
    finally:
        vm.stop()
        if tpm:
            tpm.stop()
        server.stop()
