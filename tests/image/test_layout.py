"""The partition plan, and the GPT reader against tables written by sfdisk."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import TypedDict

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kiosk.image import gpt, layout

needs_sfdisk = pytest.mark.skipif(shutil.which("sfdisk") is None, reason="sfdisk (fdisk) not installed")


class Sizes(TypedDict):
    config_mib: int
    boot_mib: int
    root_mib: int
    data_mib: int


def sizes(config_mib: int = 32, boot_mib: int = 64, root_mib: int = 400, data_mib: int = 64) -> Sizes:
    return Sizes(config_mib=config_mib, boot_mib=boot_mib, root_mib=root_mib, data_mib=data_mib)


def test_six_partitions_in_order_aligned_and_adjacent() -> None:
    p = layout.plan("amd64", **sizes())
    assert [x.name for x in p.partitions] == ["config", "boot_a", "boot_b", "root_a", "root_b", "data"]
    assert p.partitions[0].offset == layout.MIB
    for before, after in zip(p.partitions, p.partitions[1:], strict=False):
        assert after.offset == before.end
        assert after.offset % layout.MIB == 0
    assert p["root_a"].size == p["root_b"].size == 400 * layout.MIB
    assert p.disk_size == p["data"].end + layout.GPT_TAIL


def test_the_config_partition_is_the_efi_system_partition_on_a_pc_only() -> None:
    assert layout.plan("amd64", **sizes())["config"].type_guid == layout.ESP
    assert layout.plan("arm64", **sizes())["config"].type_guid == layout.BASIC_DATA
    assert layout.plan("arm64", **sizes())["root_a"].type_guid == layout.ROOT_TYPE["arm64"]


def test_a_partition_of_no_size_is_refused() -> None:
    with pytest.raises(ValueError, match="boot_a"):
        layout.plan("amd64", **sizes(boot_mib=0))


@given(st.integers(0, 10**10), st.integers(0, 100))
def test_mib_for_always_holds_the_size_and_its_headroom(size: int, headroom: int) -> None:
    mib = layout.mib_for(size, headroom)
    assert mib >= 1
    assert mib * layout.MIB >= size * (100 + headroom) / 100
    assert (mib - 1) * layout.MIB < max(size * (100 + headroom) / 100, 1)


def partitioned(image: Path, p: layout.Plan) -> Path:
    """An empty disk image with the plan's table, written by sfdisk."""
    with image.open("wb") as f:
        f.truncate(p.disk_size)
    subprocess.run(["sfdisk", "-q", "--no-reread", "--no-tell-kernel", str(image)],
                   input=layout.sfdisk_script(p), text=True, check=True)
    return image


@needs_sfdisk
def test_sfdisk_writes_the_plan_and_the_reader_gets_it_back(tmp_path: Path) -> None:
    p = layout.plan("amd64", **sizes(root_mib=8, boot_mib=4, config_mib=4, data_mib=4))
    image = partitioned(tmp_path / "disk.img", p)
    entries = gpt.read(image)
    assert [(e.number, e.name, e.type_guid, e.uuid, e.offset, e.size) for e in entries] == [
        (x.number, x.name, x.type_guid, x.uuid, x.offset, x.size) for x in p.partitions]
    assert gpt.find(image, "data").offset == p["data"].offset


@needs_sfdisk
def test_a_damaged_table_is_an_error_not_a_guess(tmp_path: Path) -> None:
    image = partitioned(tmp_path / "disk.img", layout.plan("amd64", **sizes(root_mib=4, boot_mib=4, config_mib=4,
                                                                            data_mib=4)))
    with image.open("r+b") as f:
        f.seek(1024 + 130)  # inside the first entry's name
        f.write(b"X")
    with pytest.raises(gpt.GptError, match="checksum"):
        gpt.read(image)


def test_a_file_without_a_table_says_so(tmp_path: Path) -> None:
    junk = tmp_path / "junk.img"
    junk.write_bytes(b"\0" * 4096)
    with pytest.raises(gpt.GptError, match="no GPT"):
        gpt.read(junk)
    junk.write_bytes(b"short")
    with pytest.raises(gpt.GptError, match="too short"):
        gpt.read(junk)


@given(st.binary(min_size=0, max_size=2048), st.binary(max_size=1024))
def test_the_gpt_parser_never_fails_other_than_with_gpt_error(head: bytes, entries: bytes) -> None:
    try:
        gpt.header_span(head)
        gpt.parse(head, entries)
    except gpt.GptError:
        pass
