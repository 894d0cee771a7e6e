"""Hardening facts of one ELF file (pyelftools): architecture, PIE, NX stack, RELRO,
stack protector, RPATH/RUNPATH. Reading only; what is acceptable is audit.py's business."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from elftools.common.exceptions import ELFError
from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

MACHINES = {"amd64": "EM_X86_64", "arm64": "EM_AARCH64"}
ELF_MAGIC = b"\x7fELF"
DF_BIND_NOW = 0x8
DF_1_NOW = 0x1
DF_1_PIE = 0x08000000
PF_X = 0x1

Kind = Literal["executable", "library", "object"]
Relro = Literal["none", "partial", "full"]


@dataclass(frozen=True)
class ElfFacts:
    machine: str
    kind: Kind
    pie: bool
    nx: bool
    relro: Relro
    stack_protector: bool
    rpaths: tuple[str, ...]


def is_elf(f: BinaryIO) -> bool:
    head = f.read(4)
    f.seek(0)
    return head == ELF_MAGIC


def facts(f: BinaryIO) -> ElfFacts:
    """Raises ELFError for a damaged file."""
    elf = ELFFile(f)
    etype = elf.header["e_type"]
    segments = list(elf.iter_segments())
    seg_types = {seg["p_type"] for seg in segments}
    has_interp = "PT_INTERP" in seg_types
    dynamic = next((s for s in elf.iter_sections() if isinstance(s, DynamicSection)), None)
    tags = {}
    rpaths: list[str] = []
    if dynamic is not None:
        for tag in dynamic.iter_tags():
            tags[tag.entry.d_tag] = tag.entry.d_val
            if tag.entry.d_tag in ("DT_RPATH", "DT_RUNPATH"):
                # pyelftools resolves the string into an attribute named after the tag
                rpaths += str(getattr(tag, tag.entry.d_tag[3:].lower())).split(":")
    kind: Kind
    if etype == "ET_EXEC" or (etype == "ET_DYN" and (has_interp or tags.get("DT_FLAGS_1", 0) & DF_1_PIE)):
        kind = "executable"
    elif etype == "ET_DYN":
        kind = "library"
    else:
        kind = "object"
    stack = next((seg for seg in segments if seg["p_type"] == "PT_GNU_STACK"), None)
    nx = stack is not None and not stack["p_flags"] & PF_X
    bind_now = "DT_BIND_NOW" in tags or tags.get("DT_FLAGS", 0) & DF_BIND_NOW or tags.get("DT_FLAGS_1", 0) & DF_1_NOW
    relro: Relro = ("full" if bind_now else "partial") if "PT_GNU_RELRO" in seg_types else "none"
    return ElfFacts(machine=elf.header["e_machine"], kind=kind, pie=kind == "executable" and etype == "ET_DYN",
                    nx=nx, relro=relro, stack_protector=_has_canary(elf), rpaths=tuple(p for p in rpaths if p))


def _has_canary(elf: ELFFile) -> bool:
    for name in (".dynsym", ".symtab"):
        table = elf.get_section_by_name(name)
        if isinstance(table, SymbolTableSection):
            for sym in table.iter_symbols():
                if sym.name in ("__stack_chk_fail", "__stack_chk_guard", "__stack_chk_fail_local"):
                    return True
    return False


def read(path: Path) -> ElfFacts | None:
    """Facts for an ELF file; None for anything else."""
    with path.open("rb") as f:
        if not is_elf(f):
            return None
        try:
            return facts(f)
        except (ELFError, ValueError, KeyError) as exc:
            raise ELFError(f"{path}: damaged ELF file ({exc})") from None
