"""A kiosk image booted in QEMU, watched from outside: serial log, QMP, the disk afterwards.

The guest's network is QEMU user networking with ``restrict=on``: it reaches nothing but
the one address the test forwards (10.0.2.100:8443 -> the kiosk-server on this machine's
loopback), so a booted unit can never send traffic anywhere else.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SERVER_IN_GUEST = "10.0.2.100"
SERVER_PORT_IN_GUEST = 8443
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
UBOOT_QEMU_ARM64 = Path("/usr/lib/u-boot/qemu_arm64/u-boot.bin")  # Debian's u-boot-qemu


def kvm_usable() -> bool:
    """Hardware KVM. Not PVM (kvm_pvm, KVM inside a VM without VT-x): it runs only PVM-aware
    guest kernels and stops at OVMF's first FPU instruction, so there QEMU emulates (TCG)."""
    hardware = Path("/sys/module/kvm_intel").exists() or Path("/sys/module/kvm_amd").exists()
    return hardware and os.access("/dev/kvm", os.R_OK | os.W_OK)


@dataclass
class Vm:
    disk: Path
    workdir: Path
    server_port: int
    ssh_probe_port: int | None = None
    #: a software TPM's control socket (tests/swtpm.py, for_qemu): the VM gets a TPM 2.0 (TIS)
    tpm_ctrl: Path | None = None
    memory_mib: int = 2048
    arch: str = "amd64"
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    boots: int = field(default=0)

    @property
    def serial_log(self) -> Path:
        return self.workdir / "serial.log"

    @property
    def qmp_path(self) -> Path:
        return self.workdir / "qmp.sock"

    def _machine(self) -> list[str]:
        if self.arch == "arm64":
            # the virt board with Debian's U-Boot, which finds and runs the image's boot.scr
            return ["qemu-system-aarch64", "-machine", "virt", "-cpu", "cortex-a72", "-accel", "tcg",
                    "-bios", str(UBOOT_QEMU_ARM64), "-device", "virtio-gpu-pci",
                    "-drive", f"if=none,id=disk,format=raw,file={self.disk},cache=unsafe",
                    "-device", "virtio-blk-pci,drive=disk"]
        vars_copy = self.workdir / "OVMF_VARS.fd"
        if not vars_copy.exists():
            shutil.copy(OVMF_VARS, vars_copy)
        accel = ["-accel", "kvm", "-cpu", "host"] if kvm_usable() else ["-accel", "tcg"]
        return ["qemu-system-x86_64", "-machine", "q35", *accel,
                "-drive", f"if=pflash,format=raw,readonly=on,file={OVMF_CODE}",
                "-drive", f"if=pflash,format=raw,file={vars_copy}",
                "-drive", f"if=virtio,format=raw,file={self.disk},cache=unsafe", "-device", "virtio-vga"]

    def command(self) -> list[str]:
        forward = f"guestfwd=tcp:{SERVER_IN_GUEST}:{SERVER_PORT_IN_GUEST}-cmd:socat - TCP:127.0.0.1:{self.server_port}"
        netdev = f"user,id=net0,restrict=on,{forward}"
        if self.ssh_probe_port:
            netdev += f",hostfwd=tcp:127.0.0.1:{self.ssh_probe_port}-:22"
        args = [*self._machine(), "-smp", "2", "-m", str(self.memory_mib),
                "-nodefaults", "-no-user-config", "-display", "none",
                "-netdev", netdev, "-device", "virtio-net-pci,netdev=net0",
                "-serial", f"file:{self.serial_log}",
                "-qmp", f"unix:{self.qmp_path},server=on,wait=off",
                "-device", "qemu-xhci,id=xhci", "-device", "usb-kbd"]
        if self.tpm_ctrl:
            args += ["-chardev", f"socket,id=chrtpm,path={self.tpm_ctrl}", "-tpmdev", "emulator,id=tpm0,chardev=chrtpm",
                     "-device", "tpm-tis,tpmdev=tpm0"]
        return args

    def start(self) -> Vm:
        self.serial_log.unlink(missing_ok=True)
        self.qmp_path.unlink(missing_ok=True)
        self.boots += 1
        log = (self.workdir / f"qemu-{self.boots}.log").open("wb")
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT)
        return self

    def serial(self) -> str:
        return self.serial_log.read_text(errors="replace") if self.serial_log.exists() else ""

    def pull_the_plug(self) -> None:
        """A power cut: the VM dies at once, nothing is flushed or shut down."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def qmp(self, execute: str, **arguments: Any) -> Any:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(30)
            s.connect(str(self.qmp_path))
            f = s.makefile("rwb")
            json.loads(f.readline())  # greeting
            for cmd in ({"execute": "qmp_capabilities"}, {"execute": execute, "arguments": arguments}):
                f.write(json.dumps(cmd).encode() + b"\n")
                f.flush()
                while True:
                    reply = json.loads(f.readline())
                    if "return" in reply or "error" in reply:
                        break
            if "error" in reply:
                raise RuntimeError(f"QMP {execute}: {reply['error']}")
            return reply["return"]

    def screendump(self, png: Path) -> Path:
        self.qmp("screendump", filename=str(png), format="png")
        return png

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            try:
                self.qmp("quit")
                self.proc.wait(10)
            except (OSError, RuntimeError, subprocess.TimeoutExpired):
                self.pull_the_plug()
