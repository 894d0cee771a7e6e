"""``kiosk-image flash``: an image onto a removable medium, then read back and compared.

Refuses the disk the running system (or anything mounted) lives on, and any disk the
kernel does not call removable unless forced. A ``.zst`` image is unpacked on the fly.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from kiosk.image.progress import Progress

CHUNK = 4 << 20


class FlashError(RuntimeError):
    pass


def block_name(device: Path, sys_block: Path = Path("/sys/class/block")) -> str:
    """/dev/sdb -> sdb, refusing partitions and things that are not block devices."""
    real = device.resolve()
    sys_dir = sys_block / real.name
    if not sys_dir.exists():
        raise FlashError(f"{device} is not a block device")
    if (sys_dir / "partition").exists():
        raise FlashError(f"{device} is a partition: give the whole medium (e.g. /dev/sdb, not /dev/sdb1)")
    return real.name


def mounted_disks(mounts: str, sys_block: Path = Path("/sys/class/block")) -> set[str]:
    """Whole disks with a mounted file system (from /proc/mounts text), the root's among them."""
    disks = set()
    for line in mounts.splitlines():
        source = line.split(" ", 1)[0]
        if not source.startswith("/dev/"):
            continue
        name = Path(source).resolve().name
        node = sys_block / name
        if (node / "partition").exists():
            name = node.resolve().parent.name
        disks.add(name)
        # a device-mapper or md device: its underlying disks count too
        for slave in (sys_block / name / "slaves").glob("*") if (sys_block / name / "slaves").exists() else []:
            slave_node = sys_block / slave.name
            disks.add(slave_node.resolve().parent.name if (slave_node / "partition").exists() else slave.name)
    return disks


def check_target(device: Path, force: bool, sys_block: Path = Path("/sys/class/block"),
                 mounts: str | None = None) -> str:
    name = block_name(device, sys_block)
    in_use = mounted_disks(mounts if mounts is not None else Path("/proc/mounts").read_text(), sys_block)
    if name in in_use:
        raise FlashError(f"{device} holds a mounted file system (perhaps the running system): refusing, "
                         "even with --force")
    removable = (sys_block / name / "removable").read_text().strip() == "1"
    if not removable and not force:
        raise FlashError(f"{device} is not a removable medium: pass --force if you are sure it is the right disk")
    return name


@contextmanager
def _image_stream(image: Path) -> Iterator[tuple[IO[bytes], int | None]]:
    if image.suffix == ".zst":
        proc = subprocess.Popen(["zstd", "-dc", str(image)], stdout=subprocess.PIPE)
        assert proc.stdout is not None
        try:
            yield proc.stdout, None
        finally:
            proc.stdout.close()
            if proc.wait() != 0:
                raise FlashError(f"unpacking {image} failed")
    else:
        with image.open("rb") as f:
            yield f, image.stat().st_size


def write(image: Path, target: Path, progress: Progress) -> tuple[int, str]:
    """Copy the image to ``target``; returns (bytes written, sha256)."""
    digest = hashlib.sha256()
    written = 0
    started = time.monotonic()
    with _image_stream(image) as (src, total), target.open("r+b" if target.exists() else "wb") as dst:
        while chunk := src.read(CHUNK):
            dst.write(chunk)
            digest.update(chunk)
            written += len(chunk)
            progress.bytes(written, total or written + 1, started)
        dst.flush()
        os.fsync(dst.fileno())
    progress.bytes(written, written, started)
    return written, digest.hexdigest()


def verify(target: Path, length: int, expected: str, progress: Progress) -> None:
    digest = hashlib.sha256()
    done = 0
    started = time.monotonic()
    with target.open("rb") as f:
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)  # read the medium, not the cache
        while done < length and (chunk := f.read(min(CHUNK, length - done))):
            digest.update(chunk)
            done += len(chunk)
            progress.bytes(done, length, started)
    if done != length or digest.hexdigest() != expected:
        raise FlashError(f"read-back differs from the image after {done} bytes: the medium may be faulty")


def flash(image: Path, device: Path, force: bool = False, progress: Progress | None = None) -> None:
    if not image.exists():
        raise FlashError(f"no image at {image}")
    check_target(device, force)
    progress = progress or Progress(2)
    with progress.step(f"writing {image.name} to {device}"):
        length, checksum = write(image, device, progress)
    with progress.step("reading back and comparing"):
        verify(device, length, checksum, progress)
    progress.say(f"{device} is ready: {length / 1e6:.0f} MB written and verified")
