"""Later releases of an already-built image, made without a second `kiosk-image build`.

A build takes 8-17 minutes here; what an update test needs from a "newer release" is a slot
that truly is another release: its root says the new version (``/usr/lib/os-release``) and
refuses anything older (RAUC's ``min-bundle-version``), its boot files name the new root's
verity hash. So the built root is taken as it is (loop-mounted read-only, copied with its
owners, modes and extended attributes), those two files are stamped again exactly as the
build stamps them, and the root is packed again with the build's own erofs + verity step,
at the build's own level (so that, like a real next release, it shares most blocks).

A release whose slot fails its health check is the same root with one change to its boot
files: kernel arguments that keep the screen app from starting.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

from kiosk.image import bootcfg, build, bundle, gpt, rauc
from kiosk.protocol import update

_VERITY_ARG = re.compile(r"kiosk\.verity=\d+:[0-9a-f]{64}")


def later(version: str, patches: int = 1) -> str:
    """A version newer than ``version`` (its patch number raised)."""
    major, minor, patch, day, minute = update.version_key(version)
    return f"{major}.{minor}.{patch + patches}+{day}.{minute:04d}"


def manifest_path(image: Path) -> Path:
    return image.with_name(image.name.removesuffix(".img") + ".manifest.json")


def manifest_of(image: Path) -> dict[str, Any]:
    return dict(json.loads(manifest_path(image).read_text()))


def _copy(image: Path, work: Path, version: str) -> Path:
    work.mkdir(parents=True, exist_ok=True)
    copy = work / image.name
    subprocess.run(["cp", "--sparse=always", str(image), str(copy)], check=True)
    manifest_path(copy).write_text(json.dumps(manifest_of(image) | {"version": version}))
    return copy


def _edit_slot_cfg(image: Path, work: Path, verity: str | None = None, extra_args: str = "") -> None:
    """Slot A's boot files (GRUB's slot.cfg): the root's verity argument set to ``verity``,
    and ``extra_args`` added."""
    boot = f"{image}@@{gpt.find(image, 'boot_a').offset}"
    cfg = subprocess.run(["mtype", "-i", boot, "::/slot.cfg"], check=True, capture_output=True, text=True).stdout
    if verity:
        cfg = _VERITY_ARG.sub(verity, cfg)
    if extra_args:
        cfg = cfg.replace('"\n', f' {extra_args}"\n')
    (work / "slot.cfg").write_text(cfg)
    subprocess.run(["mcopy", "-o", "-i", boot, str(work / "slot.cfg"), "::/slot.cfg"], check=True)


def _stamp(root: Path, name: str, arch: str, version: str) -> None:
    os_release = root / "usr/lib/os-release"
    kept = [line for line in os_release.read_text().splitlines(keepends=True)
            if not line.startswith(("IMAGE_ID=", "IMAGE_VERSION="))]
    os_release.write_text("".join(kept))
    build._stamp_version(root, name, version)  # as the build stamps it: one definition
    (root / rauc.SYSTEM_CONF_IN_ROOT).write_text(rauc.system_conf(name, arch, version))  # type: ignore[arg-type]


def newer(image: Path, work: Path, version: str) -> Path:
    """``image`` as the release ``version``: its root re-packed with that version stamped in."""
    meta = manifest_of(image)
    copy = _copy(image, work, version)
    root_a = gpt.find(copy, "root_a")
    data_bytes = bundle.slot_hash_offset(copy, gpt.find(copy, "boot_a"))
    mnt, root = work / "mnt", work / "root"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "erofs", "-o", f"loop,ro,offset={root_a.offset},sizelimit={data_bytes}",
                    str(copy), str(mnt)], check=True)
    try:
        subprocess.run(["cp", "-a", f"{mnt}/.", str(root)], check=True)
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
    _stamp(root, str(meta["name"]), str(meta["arch"]), version)
    packed = work / "root.img"
    # packed as the build packs it, so that like the next real release it shares most of its
    # 4 KiB blocks with the running one: what an adaptive install leaves out is measured
    hash_offset, root_hash = build._erofs_verity(root, packed, work / "erofs.log")
    subprocess.run(["rm", "-rf", str(root)], check=True)
    if packed.stat().st_size > root_a.size:
        raise AssertionError(f"the re-packed root ({packed.stat().st_size} bytes) outgrew slot A ({root_a.size})")
    with packed.open("rb") as src, copy.open("r+b") as dst:
        dst.seek(root_a.offset)
        while chunk := src.read(4 << 20):
            dst.write(chunk)
    packed.unlink()
    _edit_slot_cfg(copy, work, bootcfg.slot_args(hash_offset, root_hash).split()[-1])
    return copy


def failing_health_check(image: Path, work: Path, version: str, health_deadline: int) -> Path:
    """``image`` as the release ``version`` whose slot keeps the screen app from starting (and
    gives itself ``health_deadline`` seconds to be healthy): the health check must fail."""
    copy = _copy(image, work, version)
    _edit_slot_cfg(copy, work, extra_args=f"systemd.mask=kiosk-ui.service kiosk.health_deadline={health_deadline}")
    return copy
