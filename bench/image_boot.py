"""Power on -> enrolled and online, for a built amd64 image under QEMU, split into phases.

    .venv/bin/python bench/image_boot.py IMAGE [--runs N]

Each run boots a fresh provisioned copy of IMAGE (tests/image/vm.py: OVMF, virtio, user
networking restricted to one forward to a kiosk-server on loopback). To see the phases,
the copy's grub.cfg is rewritten without ``quiet`` and with the journal forwarded to the
serial console (the same kernel, initramfs and root as the image). Phases, from the
kernel's own timestamps on the serial line plus the wall clock:

    firmware   QEMU start -> the kernel's first message (OVMF + GRUB + loading the kernel)
    kernel     -> "Run /init" (the initramfs starts)
    initramfs  -> systemd starts in the real root (data grown, verity root opened)
    userspace  -> kiosk-agent connected to the server (network, firewall, agent, enrollment)
    screen     -> the real screen (QMP screendump, looked at every 5 s) shows "ready for a
                  new citizen" (tests/image/test_boot.py: wait_for_the_ready_screen)
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.harness import ServerProcess, wait_until
from tests.image.test_boot import wait_for_the_ready_screen
from tests.image.unit import JOURNAL_TO_SERIAL, make_unit, set_kernel_args
from tests.image.vm import SERVER_IN_GUEST, Vm, kvm_usable

STAMP = re.compile(r"^\[\s*(\d+\.\d+)\]", re.M)
MARKS = {"kernel": r"Run /init as init process", "initramfs": r"systemd\[1\]: systemd \d+",
         "userspace": r"kiosk\.agent\.link: connected"}


def _stamp(serial: str, pattern: str) -> float | None:
    for line in serial.splitlines():
        if re.search(pattern, line) and (m := STAMP.match(line)):
            return float(m.group(1))
    return None


def one_boot(image: Path, work: Path) -> dict[str, float]:
    server = ServerProcess(work / "server", extra_args=["--server-name", SERVER_IN_GUEST]).start()
    try:
        disk = make_unit(image, work, server)
        set_kernel_args(disk, work, JOURNAL_TO_SERIAL, debug=True)
        vm = Vm(disk, work, server.device_port).start()
        first_kernel_line: list[float] = []

        def online() -> bool:
            serial = vm.serial()
            if not first_kernel_line and STAMP.search(serial):
                first_kernel_line.append(time.monotonic() - vm.started_at)
            return _stamp(serial, MARKS["userspace"]) is not None

        wait_until(online, 900, 0.2, what="the unit online")
        wait_for_the_ready_screen(vm, "bench-screen-amd64.png")  # judged from the pixels, every 5 s
        ready_at = time.monotonic() - vm.started_at
        serial = vm.serial()
        vm.stop()
    finally:
        server.stop()
    stamps = {name: _stamp(serial, pattern) or 0.0 for name, pattern in MARKS.items()}
    firmware = first_kernel_line[0] if first_kernel_line else 0.0
    return {"firmware": firmware, "kernel": stamps["kernel"],
            "initramfs": stamps["initramfs"] - stamps["kernel"],
            "userspace": stamps["userspace"] - stamps["initramfs"],
            "screen": ready_at - firmware - stamps["userspace"], "total": ready_at}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("image", type=Path)
    p.add_argument("--runs", type=int, default=1)
    args = p.parse_args()
    print(f"accelerator: {'KVM' if kvm_usable() else 'TCG (no hardware KVM here)'}")
    runs = []
    for n in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="kiosk-boot-bench-") as tmp:
            result = one_boot(args.image, Path(tmp))
        runs.append(result)
        print(f"run {n + 1}: " + ", ".join(f"{k} {v:.1f} s" for k, v in result.items()), flush=True)
    if len(runs) > 1:
        print("median: " + ", ".join(f"{k} {statistics.median(r[k] for r in runs):.1f} s" for k in runs[0]))


if __name__ == "__main__":
    main()
