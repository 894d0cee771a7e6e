"""Flashing: which disks are refused (a sysfs tree made here), and write + read-back on a file."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from kiosk.image import flash
from kiosk.image.progress import Progress


@pytest.fixture
def sys_block(tmp_path: Path) -> Path:
    """sda: the internal disk with the root on sda2; sdb: a removable card; dm-0 on sda3."""
    sysfs = tmp_path / "sys"
    disks = sysfs / "devices"
    block = sysfs / "class/block"
    block.mkdir(parents=True)
    for disk, removable, parts in (("sda", "0", ("sda1", "sda2", "sda3")), ("sdb", "1", ("sdb1",)),
                                   ("dm-0", "0", ())):
        (disks / disk).mkdir(parents=True)
        (disks / disk / "removable").write_text(removable + "\n")
        (block / disk).symlink_to(disks / disk)
        for part in parts:
            (disks / disk / part).mkdir()
            (disks / disk / part / "partition").write_text("1\n")
            (block / part).symlink_to(disks / disk / part)
    (disks / "dm-0" / "slaves").mkdir()
    (disks / "dm-0" / "slaves" / "sda3").mkdir()
    return block


def dev(tmp_path: Path, name: str) -> Path:
    (tmp_path / "dev").mkdir(exist_ok=True)
    node = tmp_path / "dev" / name
    node.touch()
    return node


def test_a_removable_card_is_accepted(tmp_path: Path, sys_block: Path) -> None:
    assert flash.check_target(dev(tmp_path, "sdb"), False, sys_block, mounts="/dev/sda2 / ext4 rw 0 0\n") == "sdb"


def test_the_system_disk_is_refused_even_when_forced(tmp_path: Path, sys_block: Path) -> None:
    with pytest.raises(flash.FlashError, match="mounted"):
        flash.check_target(dev(tmp_path, "sda"), True, sys_block, mounts="/dev/sda2 / ext4 rw 0 0\n")
    # also when the root is on device-mapper over one of its partitions
    with pytest.raises(flash.FlashError, match="mounted"):
        flash.check_target(dev(tmp_path, "sda"), True, sys_block, mounts="/dev/dm-0 / ext4 rw 0 0\n")


def test_a_fixed_disk_needs_force_and_a_partition_is_refused(tmp_path: Path, sys_block: Path) -> None:
    with pytest.raises(flash.FlashError, match="not a removable"):
        flash.check_target(dev(tmp_path, "sda"), False, sys_block, mounts="")
    assert flash.check_target(dev(tmp_path, "sda"), True, sys_block, mounts="") == "sda"
    with pytest.raises(flash.FlashError, match="partition"):
        flash.check_target(dev(tmp_path, "sdb1"), False, sys_block, mounts="")
    with pytest.raises(flash.FlashError, match="not a block device"):
        flash.check_target(dev(tmp_path, "nothing"), False, sys_block, mounts="")


def test_write_then_read_back_and_a_changed_medium_is_caught(tmp_path: Path) -> None:
    image = tmp_path / "kiosk.img"
    image.write_bytes(bytes(range(256)) * 40000)
    target = tmp_path / "medium"
    target.write_bytes(b"\xff" * 20_000_000)  # larger than the image, like a real card
    progress = Progress(2, out=io.StringIO())
    length, digest = flash.write(image, target, progress)
    assert length == image.stat().st_size
    flash.verify(target, length, digest, progress)
    with target.open("r+b") as f:
        f.seek(1234)
        f.write(b"\0")
    with pytest.raises(flash.FlashError, match="read-back differs"):
        flash.verify(target, length, digest, progress)
