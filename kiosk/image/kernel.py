"""The arm64 kernel as U-Boot's ``booti`` wants it: an uncompressed ``Image``.

Debian ships ``vmlinuz`` either gzip-compressed or as an EFI zboot executable (a small
EFI program carrying the compressed Image); both are unpacked here.
"""

from __future__ import annotations

import gzip
import struct
import subprocess

ARM64_MAGIC = b"ARM\x64"  # at offset 56 of an arm64 Image


class KernelError(ValueError):
    pass


def _decompress(kind: bytes, payload: bytes) -> bytes:
    if kind == b"gzip":
        return gzip.decompress(payload)
    if kind == b"zstd":
        proc = subprocess.run(["zstd", "-dc"], input=payload, capture_output=True)
        if proc.returncode == 0:
            return proc.stdout
        raise KernelError(f"unpacking the zstd kernel failed: {proc.stderr.decode(errors='replace')}")
    raise KernelError(f"the kernel is compressed with {kind.decode(errors='replace')!r}, which is not handled")


def arm64_image(vmlinuz: bytes) -> bytes:
    if vmlinuz[:2] == b"\x1f\x8b":
        image = gzip.decompress(vmlinuz)
    elif vmlinuz[:2] == b"MZ" and vmlinuz[4:8] == b"zimg":
        offset, size = struct.unpack_from("<II", vmlinuz, 8)
        image = _decompress(vmlinuz[24:32].split(b"\0", 1)[0], vmlinuz[offset:offset + size])
    else:
        image = vmlinuz
    if image[56:60] != ARM64_MAGIC:
        raise KernelError("this is not an arm64 kernel Image")
    return image
