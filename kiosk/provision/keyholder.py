"""Where the per-assignment key is kept, so that a wipe is a real crypto-erase.

Flash media (SD cards, SSDs, eMMC) keep copies of overwritten blocks where software cannot
reach them, so shredding a key file does not destroy every copy of it. On a PC with a TPM
the key file holds the key only wrapped (AES-GCM) under a key-encryption key that lives in
a TPM NV index; a wipe undefines that index inside the TPM, after which no copy of the
wrapped file, wherever the flash kept one, can be opened again.

Why an NV index and not a sealed object (``tpm2_create``, ``systemd-creds --with-key=tpm2``,
``systemd-cryptenroll``): a sealed blob lives on the disk and unseals under the TPM's storage
key for as long as the TPM's owner seed lives, so a stale copy of it on the flash would
still open. An undefined NV index is gone from the TPM itself.

Without a TPM (the Raspberry Pi) the key file is the key itself, and the wipe shreds it:
the README says plainly what that does and does not guarantee.
The TPM is driven with Debian's ``tpm2-tools``; ``KIOSK_TPM_TCTI`` names another TPM than
``/dev/tpmrm0`` (tests: ``swtpm:path=...``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kiosk.provision.files import atomic_write, shred

#: The key-encryption key's NV index, in the range the TCG leaves to the TPM's owner.
NV_INDEX = "0x01800B15"
KEK_BYTES = 32
TPM_DEVICE = Path("/dev/tpmrm0")
TCTI_VARIABLE = "KIOSK_TPM_TCTI"
#: Binds a wrapped file to its purpose (AES-GCM associated data).
WRAP_CONTEXT = b"skaermbesoeg assignment key v1"
#: What tpm2-tools prints when the index is not (or no longer) defined: TPM_RC_HANDLE.
UNDEFINED = "0x18B"
TPM_SECONDS = 60.0


class KeyHolderError(RuntimeError):
    """The TPM refused or failed: the key is neither made nor read (nothing is lost)."""


class KeyHolder(Protocol):
    #: What the wipe receipt names as erased besides the key file.
    erases: tuple[str, ...]

    def store(self, key: bytes) -> None: ...

    def load(self) -> bytes | None:
        """The key, or None when there is none (never made, or destroyed)."""
        ...

    def destroy(self) -> None:
        """Idempotent: a wipe resumed after a power cut destroys again."""
        ...


class FileKey:
    """The key as a file of its own (no TPM)."""

    erases: tuple[str, ...] = ()

    def __init__(self, path: Path) -> None:
        self.path = path

    def store(self, key: bytes) -> None:
        atomic_write(self.path, key)

    def load(self) -> bytes | None:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return None

    def destroy(self) -> None:
        shred(self.path)


class TpmKey:
    """The key wrapped under a key-encryption key in a TPM NV index."""

    erases: tuple[str, ...] = ("tpm-key-encryption-key",)

    def __init__(self, path: Path, tcti: str, index: str = NV_INDEX) -> None:
        self.path = path
        self.tcti = tcti
        self.index = index

    def _tpm(self, *args: str, stdin: bytes = b"", undefined_ok: bool = False) -> bytes | None:
        env = {**os.environ, "TPM2TOOLS_TCTI": self.tcti}
        try:
            proc = subprocess.run(args, input=stdin, capture_output=True, env=env, timeout=TPM_SECONDS)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise KeyHolderError(f"the TPM did not answer {args[0]}: {exc}") from None
        if proc.returncode == 0:
            return proc.stdout
        error = proc.stderr.decode(errors="replace")
        if undefined_ok and UNDEFINED in error:
            return None
        last = error.strip().splitlines()[-1] if error.strip() else f"exit status {proc.returncode}"
        raise KeyHolderError(f"{args[0]} {self.index} failed: {last}")

    def _kek(self) -> bytes | None:
        return self._tpm("tpm2_nvread", "-C", "o", "-s", str(KEK_BYTES), self.index, undefined_ok=True)

    def store(self, key: bytes) -> None:
        # a key made before a power cut cut this short is never used: start the index afresh
        self._tpm("tpm2_nvundefine", "-C", "o", self.index, undefined_ok=True)
        kek = AESGCM.generate_key(bit_length=KEK_BYTES * 8)
        self._tpm("tpm2_nvdefine", "-C", "o", "-s", str(KEK_BYTES), "-a", "ownerread|ownerwrite|no_da", self.index)
        self._tpm("tpm2_nvwrite", "-C", "o", "-i", "-", self.index, stdin=kek)
        nonce = os.urandom(12)
        atomic_write(self.path, nonce + AESGCM(kek).encrypt(nonce, key, WRAP_CONTEXT))

    def load(self) -> bytes | None:
        if not self.path.exists():
            return None
        kek = self._kek()
        if kek is None:
            return None  # the index is gone: whatever is left of the file can never be opened
        wrapped = self.path.read_bytes()
        return AESGCM(kek).decrypt(wrapped[:12], wrapped[12:], WRAP_CONTEXT)

    def destroy(self) -> None:
        self._tpm("tpm2_nvundefine", "-C", "o", self.index, undefined_ok=True)
        shred(self.path)


def for_unit(path: Path) -> KeyHolder:
    """A TPM key where the unit has a TPM (and Debian's tpm2-tools), otherwise a key file."""
    tcti = os.environ.get(TCTI_VARIABLE) or (f"device:{TPM_DEVICE}" if TPM_DEVICE.exists() else None)
    if tcti and shutil.which("tpm2_nvdefine"):
        return TpmKey(path, tcti)
    return FileKey(path)
