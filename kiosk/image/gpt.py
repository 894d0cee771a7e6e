"""Reading a GPT partition table from a disk image, without root and without mounting.

``parse`` is pure (bytes in, entries out) and strict: a damaged table is an error that
says so, never a guess.
"""

from __future__ import annotations

import struct
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path

SECTOR = 512
SIGNATURE = b"EFI PART"
_HEADER = struct.Struct("<8sIIIIQQQQ16sQIII")
_ENTRY = struct.Struct("<16s16sQQQ72s")
MAX_ENTRIES = 1024


class GptError(ValueError):
    pass


@dataclass(frozen=True)
class Entry:
    number: int
    name: str
    type_guid: str
    uuid: str
    first_lba: int
    last_lba: int

    @property
    def offset(self) -> int:
        return self.first_lba * SECTOR

    @property
    def size(self) -> int:
        return (self.last_lba - self.first_lba + 1) * SECTOR

    @property
    def end(self) -> int:
        return self.offset + self.size


def _guid(raw: bytes) -> str:
    return str(uuid.UUID(bytes_le=raw)).upper()


def header_span(head: bytes) -> tuple[int, int]:
    """(offset, length) of the entry array the primary header at LBA 1 points to."""
    if len(head) < 2 * SECTOR:
        raise GptError("too short to hold a partition table")
    fields = _HEADER.unpack_from(head, SECTOR)
    if fields[0] != SIGNATURE:
        raise GptError("no GPT partition table (is this a kiosk image? a compressed one must be unpacked first)")
    header_size, entries_lba, count, entry_size = fields[2], fields[10], fields[11], fields[12]
    if not 92 <= header_size <= SECTOR or entry_size < _ENTRY.size or count > MAX_ENTRIES:
        raise GptError("the GPT header is damaged (impossible sizes)")
    return entries_lba * SECTOR, count * entry_size


def parse(head: bytes, entries: bytes) -> list[Entry]:
    """The used entries, given the first two sectors and the entry array they point to."""
    _, length = header_span(head)
    if len(entries) != length:
        raise GptError("the GPT entry array is cut short")
    fields = _HEADER.unpack_from(head, SECTOR)
    header_size, header_crc, entry_size, entries_crc = fields[2], fields[3], fields[12], fields[13]
    header = bytearray(head[SECTOR:SECTOR + header_size])
    header[16:20] = b"\0\0\0\0"
    if zlib.crc32(header) != header_crc:
        raise GptError("the GPT header checksum is wrong: the table is damaged")
    if zlib.crc32(entries) != entries_crc:
        raise GptError("the GPT entry checksum is wrong: the table is damaged")
    out = []
    for number, start in enumerate(range(0, len(entries), entry_size), start=1):
        type_raw, uuid_raw, first, last, _flags, name_raw = _ENTRY.unpack_from(entries, start)
        if type_raw == bytes(16):
            continue
        if last < first:
            raise GptError(f"partition {number} ends before it starts")
        name = name_raw.decode("utf-16-le", errors="replace").split("\0", 1)[0]
        out.append(Entry(number, name, _guid(type_raw), _guid(uuid_raw), first, last))
    return out


def read(image: Path) -> list[Entry]:
    with image.open("rb") as f:
        head = f.read(2 * SECTOR)
        offset, length = header_span(head)
        f.seek(offset)
        entries = f.read(length)
    if len(entries) != length:
        raise GptError("the image ends inside its partition table")
    return parse(head, entries)


def find(image: Path, name: str) -> Entry:
    for entry in read(image):
        if entry.name == name:
            return entry
    raise GptError(f"{image} has no partition named {name!r}: is it a kiosk image?")


def copy_range(image: Path, offset: int, size: int, dest: Path) -> None:
    """Bytes ``offset``..``offset + size`` of ``image`` (e.g. one partition) into the file ``dest``."""
    with image.open("rb") as src, dest.open("wb") as out:
        src.seek(offset)
        left = size
        while left:
            chunk = src.read(min(left, 4 << 20))
            if not chunk:
                raise GptError(f"{image} ends before byte {offset + size}: a truncated image?")
            out.write(chunk)
            left -= len(chunk)
