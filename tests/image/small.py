"""A small disk image laid out exactly as `kiosk-image build` lays one out (the build's own
steps), with a tiny root in slot A: enough for RAUC to sign, inspect and refuse bundles of
it in seconds instead of the minutes a full image's bundle takes."""

from __future__ import annotations

import json
import os
from pathlib import Path

from kiosk.image import bootcfg, build, layout
from kiosk.image.progress import run


def small_image(work: Path, version: str, name: str = "skaermbesoeg-kiosk", arch: str = "amd64") -> Path:
    work.mkdir(parents=True, exist_ok=True)
    root = work / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/os-release").write_text(f'IMAGE_VERSION="{version}"\n')
    (root / "payload").write_bytes(os.urandom(3 << 20))
    parts = work / "parts"
    parts.mkdir()
    hash_offset, root_hash = build._erofs_verity(root, parts / "root.img", work / "log")
    plan = layout.plan("amd64", config_mib=4, boot_mib=4, root_mib=8, data_mib=2)
    build._fat(parts / "boot_a.img", "BOOT_A", 4, {
        "slot.cfg": bootcfg.grub_slot_cfg(bootcfg.slot_args(hash_offset, root_hash)).encode(),
        "vmlinuz": b"not a kernel", "initrd.img": b"not an initramfs"})
    image = work / f"{name}-{arch}.img"
    with image.open("wb") as f:
        f.truncate(plan.disk_size)
    run(["sfdisk", "--no-reread", "--no-tell-kernel", "-q", image], input_text=layout.sfdisk_script(plan))
    build._place(image, plan["boot_a"], parts / "boot_a.img")
    build._place(image, plan["root_a"], parts / "root.img")
    (work / f"{name}-{arch}.manifest.json").write_text(json.dumps({"name": name, "version": version, "arch": arch}))
    return image
