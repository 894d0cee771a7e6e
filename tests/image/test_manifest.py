"""The manifest's dpkg status parser and its largest-packages list."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from kiosk.image.manifest import Manifest, Package, largest, parse_dpkg_status

STATUS = """Package: libc6
Status: install ok installed
Priority: optional
Installed-Size: 12345
Version: 2.41-12
Description: GNU C Library
 a continuation line: with a colon
 .

Package: removed-one
Status: deinstall ok config-files
Version: 1.0
Installed-Size: 5

Package: python3
Status: install ok installed
Version: 3.13.5-1
Installed-Size: 90
"""


def test_installed_packages_only_with_versions_and_sizes() -> None:
    assert parse_dpkg_status(STATUS) == [Package("libc6", "2.41-12", 12345), Package("python3", "3.13.5-1", 90)]


@given(st.text(max_size=400))
def test_parser_takes_any_text(text: str) -> None:
    for package in parse_dpkg_status(text):
        assert package.installed_kib >= 0


def test_largest_ten_by_size_then_name() -> None:
    pkgs = [Package(f"p{i}", "1", i % 5) for i in range(20)]
    top = largest(pkgs)
    assert len(top) == 10 and top[0].installed_kib == 4
    assert [p.installed_kib for p in top] == sorted((p.installed_kib for p in top), reverse=True)


def test_manifest_json_has_checksums_and_the_largest(tmp_path: Path) -> None:
    f = tmp_path / "x.img"
    f.write_bytes(b"abc")
    m = Manifest(name="k", version="1", arch="amd64", debug=False, suite="trixie", built_at="now",
                 packages=[Package("a", "1", 3)])
    m.add_file(f)
    data = json.loads(m.to_json())
    assert data["files"]["x.img"] == {"bytes": 3, "sha256":
                                      "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"}
    assert data["largest_packages"] == [{"name": "a", "version": "1", "installed_kib": 3}]
