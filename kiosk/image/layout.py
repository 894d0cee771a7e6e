"""The partition table, planned as pure data: names, types, offsets, sizes.

    1 config  FAT: the provisioning file; the bootloader (EFI on a PC, U-Boot on a Pi)
    2 boot_a  FAT: kernel, initramfs and the slot's kernel arguments
    3 boot_b  FAT: the same for slot B (empty until an update)
    4 root_a  erofs + dm-verity hash tree, read-only
    5 root_b  the same for slot B (shipped empty)
    6 data    ext4, grown to fill the medium at first boot

Partitions start on 1 MiB boundaries; the last one (data) can grow in place.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass

from kiosk.image.recipe import Arch

MIB = 1024 * 1024
SECTOR = 512
FIRST_OFFSET = MIB  # leaves room for the protective MBR and the primary GPT
GPT_TAIL = MIB       # room for the backup GPT after the last partition

ESP = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
BASIC_DATA = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"
LINUX_DATA = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
# The Discoverable Partitions Specification's root types say what a slot holds.
ROOT_TYPE: dict[Arch, str] = {"amd64": "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709",
                              "arm64": "B921B045-1DF0-41C3-AF44-4C6F280D3FAE"}


@dataclass(frozen=True)
class Partition:
    number: int
    name: str
    type_guid: str
    uuid: str
    offset: int  # bytes
    size: int    # bytes

    @property
    def end(self) -> int:
        return self.offset + self.size


@dataclass(frozen=True)
class Plan:
    disk_uuid: str
    partitions: tuple[Partition, ...]

    @property
    def disk_size(self) -> int:
        return self.partitions[-1].end + GPT_TAIL

    def __getitem__(self, name: str) -> Partition:
        for part in self.partitions:
            if part.name == name:
                return part
        raise KeyError(name)


def mib_for(size_bytes: int, headroom_percent: int = 0) -> int:
    """Whole MiB that hold ``size_bytes`` plus a headroom share of it."""
    if size_bytes < 0 or headroom_percent < 0:
        raise ValueError("sizes and headroom cannot be negative")
    return max(1, math.ceil(size_bytes * (100 + headroom_percent) / 100 / MIB))


def plan(arch: Arch, *, config_mib: int, boot_mib: int, root_mib: int, data_mib: int,
         uuids: dict[str, str] | None = None) -> Plan:
    """The table for these sizes; ``uuids`` (name -> uuid, and ``disk``) fixes the identifiers."""
    sizes = [("config", ESP if arch == "amd64" else BASIC_DATA, config_mib),
             ("boot_a", BASIC_DATA, boot_mib), ("boot_b", BASIC_DATA, boot_mib),
             ("root_a", ROOT_TYPE[arch], root_mib), ("root_b", ROOT_TYPE[arch], root_mib),
             ("data", LINUX_DATA, data_mib)]
    ids = uuids or {}
    offset = FIRST_OFFSET
    parts = []
    for number, (name, type_guid, mib) in enumerate(sizes, start=1):
        if mib <= 0:
            raise ValueError(f"partition {name} needs a positive size, got {mib} MiB")
        parts.append(Partition(number, name, type_guid, ids.get(name) or str(uuid.uuid4()).upper(),
                               offset, mib * MIB))
        offset += mib * MIB
    return Plan(ids.get("disk") or str(uuid.uuid4()).upper(), tuple(parts))


def sfdisk_script(p: Plan) -> str:
    """Input for ``sfdisk``, which writes the table into a disk image file without root."""
    lines = ["label: gpt", f"label-id: {p.disk_uuid}", "unit: sectors", "first-lba: 2048", ""]
    for part in p.partitions:
        lines.append(f"start={part.offset // SECTOR}, size={part.size // SECTOR}, type={part.type_guid}, "
                     f"uuid={part.uuid}, name={part.name}")
    return "\n".join(lines) + "\n"
