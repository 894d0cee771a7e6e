"""A software TPM 2.0 (``swtpm``, Debian's) for tests: on Unix sockets in a test's directory.

Its state directory outlives the process, so a TPM can be stopped and started again (a VM's
TPM looked at after the VM is off). ``tcti`` is what tpm2-tools take (TPM2TOOLS_TCTI) when
the test itself talks to it; a QEMU guest reaches it through ``ctrl`` (``-tpmdev emulator``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


def available() -> bool:
    return all(shutil.which(tool) for tool in ("swtpm", "tpm2_nvdefine", "tpm2_getcap"))


@dataclass
class Swtpm:
    state: Path
    for_qemu: bool = False
    proc: subprocess.Popen[bytes] | None = None

    @property
    def sock(self) -> Path:
        return self.state / "sock"

    @property
    def ctrl(self) -> Path:
        # tpm2-tools' swtpm TCTI looks for the control socket beside the server's, as ``.ctrl``
        return self.state / "sock.ctrl"

    @property
    def tcti(self) -> str:
        return f"swtpm:path={self.sock}"

    def start(self) -> Swtpm:
        self.state.mkdir(parents=True, exist_ok=True)
        for leftover in (self.sock, self.ctrl):
            leftover.unlink(missing_ok=True)
        if self.for_qemu:  # QEMU drives it over the control socket alone, and starts the TPM itself
            args = ["--ctrl", f"type=unixio,path={self.ctrl}"]
        else:
            args = ["--server", f"type=unixio,path={self.sock}", "--ctrl", f"type=unixio,path={self.ctrl}",
                    "--flags", "not-need-init,startup-clear"]
        self.proc = subprocess.Popen(["swtpm", "socket", "--tpm2", "--tpmstate", f"dir={self.state}", *args],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while not self.ctrl.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"swtpm did not start (exit status {self.proc.poll()})")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)

    def tools(self, *args: str) -> subprocess.CompletedProcess[str]:
        """A tpm2-tools command against this TPM (not while QEMU holds it)."""
        return subprocess.run(args, capture_output=True, encoding="utf-8", errors="replace", timeout=60,
                              env={**os.environ, "TPM2TOOLS_TCTI": self.tcti})

    def nv_indices_between_boots(self) -> list[str]:
        """A VM's TPM looked at from outside while the VM is off; then a VM's TPM again."""
        assert self.for_qemu
        self.stop()
        self.for_qemu = False
        try:
            return self.start().nv_indices()
        finally:
            self.stop()
            self.for_qemu = True
            self.start()

    def nv_indices(self) -> list[str]:
        out = self.tools("tpm2_getcap", "handles-nv-index")
        assert out.returncode == 0, out.stderr
        return [line.strip("- ").strip().lower() for line in out.stdout.splitlines() if line.strip()]
