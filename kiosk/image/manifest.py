"""The build manifest: what is in an image, how big, and its checksums.

``parse_dpkg_status`` is pure: the text of ``/var/lib/dpkg/status`` in, installed
packages out.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True, order=True)
class Package:
    name: str
    version: str
    installed_kib: int


def parse_dpkg_status(text: str) -> list[Package]:
    """Installed packages (Status: ... installed), sorted by name."""
    out = []
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line[:1] in (" ", "\t") or ":" not in line:
                continue  # continuation lines (descriptions, conffiles)
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
        if "Package" in fields and fields.get("Status", "").endswith(" installed"):
            size = fields.get("Installed-Size", "0")
            out.append(Package(fields["Package"], fields.get("Version", ""), int(size) if size.isdigit() else 0))
    return sorted(out)


def largest(packages: list[Package], count: int = 10) -> list[Package]:
    return sorted(packages, key=lambda p: (-p.installed_kib, p.name))[:count]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class Manifest:
    name: str
    version: str
    arch: str
    debug: bool
    suite: str
    built_at: str
    build_seconds: float = 0.0
    root_hash: str = ""
    partitions: list[dict[str, Any]] = field(default_factory=list)
    packages: list[Package] = field(default_factory=list)
    wheels: list[dict[str, str]] = field(default_factory=list)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    steps: dict[str, float] = field(default_factory=dict)

    def add_file(self, path: Path) -> None:
        self.files[path.name] = {"bytes": path.stat().st_size, "sha256": sha256_file(path)}

    def to_json(self) -> str:
        data = asdict(self)
        data["largest_packages"] = [asdict(p) for p in largest(self.packages)]
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def load(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a kiosk image manifest")
    return data
