"""``kiosk-image audit``: an image's binaries and files against ``image/audit-policy.toml``.

``audit_tree`` walks a root tree and returns findings; ``judge`` (pure) turns one file's
facts into findings under the policy. Auditing an image unpacks its root_a erofs with
``fsck.erofs --extract`` (as root, so owners and setuid bits survive).
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import tomllib
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from elftools.common.exceptions import ELFError

from kiosk.image import elfcheck, gpt
from kiosk.image.layout import ROOT_TYPE
from kiosk.image.recipe import IMAGE_DIR

Severity = Literal["breach", "report"]
CHECKS = ("pie", "nx", "relro", "stack_protector")


class AuditError(RuntimeError):
    pass


@dataclass(frozen=True)
class Finding:
    path: str
    check: str
    severity: Severity
    detail: str


@dataclass(frozen=True)
class Policy:
    arch_must_match: bool
    executables: dict[str, Severity]
    libraries: dict[str, Severity]
    rpath_prefixes: tuple[str, ...]
    setuid_allow: frozenset[str]
    sticky_dirs: frozenset[str]
    exempt: dict[str, str]

    def exemption(self, path: str) -> str | None:
        return next((why for pattern, why in self.exempt.items() if fnmatch.fnmatch(path, pattern)), None)


def _severities(table: dict[str, Any], where: str) -> dict[str, Severity]:
    out: dict[str, Severity] = {}
    for key, value in table.items():
        if key not in CHECKS or value not in ("breach", "report"):
            raise AuditError(f"policy [{where}]: {key} = {value!r} (checks: {', '.join(CHECKS)}; "
                             "values: breach or report)")
        out[key] = value
    return out


def load_policy(path: Path = IMAGE_DIR / "audit-policy.toml") -> Policy:
    try:
        data = tomllib.loads(path.read_text())
        return Policy(
            arch_must_match=bool(data.get("arch_must_match", True)),
            executables=_severities(data.get("executables", {}), "executables"),
            libraries=_severities(data.get("libraries", {}), "libraries"),
            rpath_prefixes=tuple(data.get("rpath", {}).get("allow_prefixes", [])),
            setuid_allow=frozenset(data.get("setuid", {}).get("allow", [])),
            sticky_dirs=frozenset(data.get("world_writable", {}).get("sticky_dirs", [])),
            exempt=dict(data.get("exempt", {})),
        )
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise AuditError(f"cannot read the audit policy {path}: {exc}") from None


def judge(path: str, facts: elfcheck.ElfFacts, arch: str, policy: Policy) -> list[Finding]:
    """Findings for one ELF file."""
    out = []
    if policy.arch_must_match and facts.machine != elfcheck.MACHINES[arch]:
        out.append(Finding(path, "arch", "breach", f"built for {facts.machine}, the image is {arch}"))
    rules = {"executable": policy.executables, "library": policy.libraries}.get(facts.kind, {})
    failed = {"pie": not facts.pie, "nx": not facts.nx, "relro": facts.relro == "none",
              "stack_protector": not facts.stack_protector}
    words = {"pie": "not position-independent", "nx": "executable stack", "relro": "no RELRO",
             "stack_protector": "no stack protector"}
    for check, severity in rules.items():
        if failed[check]:
            out.append(Finding(path, check, severity, f"{facts.kind}: {words[check]}"))
    for rpath in facts.rpaths:
        if not any(rpath == p or rpath.startswith(p.rstrip("/") + "/") for p in policy.rpath_prefixes):
            out.append(Finding(path, "rpath", "breach", f"RPATH/RUNPATH {rpath!r} is outside the allowed places"))
    return out


def judge_mode(path: str, mode: int, policy: Policy) -> list[Finding]:
    """Findings for a file's permission bits (setuid/setgid, world-writable)."""
    out = []
    if stat.S_ISREG(mode) and mode & (stat.S_ISUID | stat.S_ISGID) and path not in policy.setuid_allow:
        bits = "setuid" if mode & stat.S_ISUID else "setgid"
        out.append(Finding(path, "setuid", "breach", f"{bits} and not on the allowlist"))
    if mode & stat.S_IWOTH and not stat.S_ISLNK(mode):
        if stat.S_ISDIR(mode) and mode & stat.S_ISVTX and path in policy.sticky_dirs:
            pass
        elif stat.S_ISDIR(mode):
            out.append(Finding(path, "world_writable", "breach", "world-writable directory not on the list"))
        elif not (stat.S_ISCHR(mode) or stat.S_ISSOCK(mode) or stat.S_ISFIFO(mode)):
            out.append(Finding(path, "world_writable", "breach", "world-writable file"))
    return out


def audit_tree(root: Path, arch: str, policy: Policy) -> tuple[list[Finding], Counter[str]]:
    findings: list[Finding] = []
    counts: Counter[str] = Counter()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in [*dirnames, *sorted(filenames)]:
            full = Path(dirpath) / name
            rel = "/" + str(full.relative_to(root))
            mode = full.lstat().st_mode
            counts["files"] += 1
            findings += judge_mode(rel, mode, policy)
            if not stat.S_ISREG(mode) or policy.exemption(rel):
                continue
            try:
                facts = elfcheck.read(full)
            except ELFError as exc:
                findings.append(Finding(rel, "elf", "breach", str(exc)))
                continue
            if facts is None:
                continue
            counts[facts.kind] += 1
            counts["pie"] += facts.pie
            counts[f"relro_{facts.relro}"] += 1
            counts["stack_protector"] += facts.stack_protector
            findings += judge(rel, facts, arch, policy)
    return findings, counts


def extract_root(image: Path, dest: Path) -> str:
    """Unpack root_a of an image into ``dest``; returns the image's architecture."""
    if os.geteuid() != 0:
        raise AuditError("auditing an image needs root (to unpack its root with owners and setuid bits)")
    part = gpt.find(image, "root_a")
    arch = next((a for a, guid in ROOT_TYPE.items() if guid == part.type_guid), None)
    if arch is None:
        raise AuditError(f"{image}: root_a has type {part.type_guid}, not a kiosk root for a known architecture")
    erofs = dest.parent / "root_a.erofs"
    try:
        gpt.copy_range(image, part.offset, part.size, erofs)
    except gpt.GptError as exc:
        raise AuditError(str(exc)) from None
    proc = subprocess.run(["fsck.erofs", f"--extract={dest}", "--preserve", str(erofs)],
                          capture_output=True, text=True)
    erofs.unlink()
    if proc.returncode != 0:
        raise AuditError(f"cannot unpack root_a: {proc.stderr.strip()[-500:]}")
    return arch


def main(image: Path, policy_path: Path | None, as_json: bool = False) -> int:
    policy = load_policy(policy_path or IMAGE_DIR / "audit-policy.toml")
    if shutil.which("fsck.erofs") is None:
        raise AuditError("fsck.erofs is missing (apt-get install erofs-utils)")
    with tempfile.TemporaryDirectory(prefix="kiosk-audit-") as tmp:
        root = Path(tmp) / "root"
        try:
            arch = extract_root(image, root)
        except gpt.GptError as exc:
            raise AuditError(str(exc)) from None
        findings, counts = audit_tree(root, arch, policy)
    breaches = [f for f in findings if f.severity == "breach"]
    if as_json:
        json.dump({"arch": arch, "counts": counts, "findings": [asdict(f) for f in findings]}, sys.stdout, indent=1)
        print()
    else:
        for f in findings:
            print(f"{f.severity.upper():7} {f.check:16} {f.path}: {f.detail}")
        print(f"{image.name} ({arch}): {counts['files']} files, {counts['executable']} programs "
              f"({counts['pie']} PIE), {counts['library']} libraries; RELRO full {counts['relro_full']}, "
              f"partial {counts['relro_partial']}, none {counts['relro_none']}; stack protector in "
              f"{counts['stack_protector']}; {len(breaches)} breaches, {len(findings) - len(breaches)} reported")
    return 1 if breaches else 0
