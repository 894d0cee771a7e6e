"""Unpacking Debian's arm64 vmlinuz (gzip or EFI zboot) into the Image U-Boot boots."""

from __future__ import annotations

import gzip
import struct

import pytest

from kiosk.image import kernel

IMAGE = b"\0" * 56 + kernel.ARM64_MAGIC + b"kernel body" * 100


def zboot(payload: bytes, kind: bytes) -> bytes:
    header = b"MZ\0\0" + b"zimg" + struct.pack("<II", 64, len(payload)) + b"\0" * 8 + kind.ljust(8, b"\0")
    return header.ljust(64, b"\0") + payload + b"\0" * 4


def test_plain_gzip_and_zboot_all_give_the_image() -> None:
    assert kernel.arm64_image(IMAGE) == IMAGE
    assert kernel.arm64_image(gzip.compress(IMAGE)) == IMAGE
    assert kernel.arm64_image(zboot(gzip.compress(IMAGE), b"gzip")) == IMAGE


def test_an_unknown_compression_or_a_foreign_kernel_is_refused() -> None:
    with pytest.raises(kernel.KernelError, match="lzma"):
        kernel.arm64_image(zboot(b"xx", b"lzma"))
    with pytest.raises(kernel.KernelError, match="not an arm64"):
        kernel.arm64_image(b"\0" * 200)
