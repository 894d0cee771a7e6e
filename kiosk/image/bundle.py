"""``kiosk-image bundle``: a built image -> a signed RAUC bundle (``format=verity``) for its slots.

The bundle carries slot A's two partitions of the built image: the boot partition (kernel,
initramfs, the verity root hash) and the root (erofs + its hash tree, cut to its real
length). Both are slot-agnostic: the bootloader tells the initramfs which slot it booted,
and the initramfs opens that slot's root, so RAUC can write them to whichever slot is not
running. RAUC itself runs from the tools tree (the image's own Debian release).

Beside the bundle, ``BUNDLE.json`` says what it is for the server (version, architecture,
size, SHA-256); the unit trusts only the bundle's own signature.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from kiosk.image import gpt, rauc, tools
from kiosk.image.manifest import load as load_manifest
from kiosk.image.manifest import sha256_file
from kiosk.image.progress import CommandFailed, Progress
from kiosk.image.recipe import ARCHES, Arch, load

_OFFSET = re.compile(r"kiosk\.verity=(\d+):[0-9a-f]{64}")


class BundleError(RuntimeError):
    pass


@dataclass(frozen=True)
class Release:
    """What ``BUNDLE.json`` holds; the server reads it with ``kiosk-server release add``."""

    version: str
    arch: Arch
    compatible: str
    bytes: int
    sha256: str

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=2) + "\n"


def slot_hash_offset(image: Path, boot: gpt.Entry) -> int:
    where = f"{image}@@{boot.offset}"
    for name in ("slot.cfg", "slot.env"):  # GRUB's (amd64) or U-Boot's (arm64)
        done = subprocess.run(["mtype", "-i", where, f"::/{name}"], capture_output=True, text=True)
        if done.returncode == 0 and (match := _OFFSET.search(done.stdout)):
            return int(match.group(1))
    raise BundleError(f"{image}: slot A's boot partition names no verity root (slot.cfg / slot.env)")


def make(image: Path, out: Path, keys: Path, cache: Path, progress: Progress | None = None) -> tuple[Path, Release]:
    """The bundle for ``image`` (its ``.manifest.json`` beside it), signed with ``keys``."""
    progress = progress or Progress(3)
    image, out, keys = image.resolve(), out.resolve(), keys.resolve()
    manifest_path = image.with_name(image.name.removesuffix(".img") + ".manifest.json")
    if not image.is_file() or not manifest_path.is_file():
        raise BundleError(f"need a built image and its manifest: {image} and {manifest_path}")
    for needed in (rauc.SIGNING_CERT, rauc.SIGNING_KEY, rauc.CA_CERT):
        if not (keys / needed).is_file():
            raise BundleError(f"{keys} has no {needed}: make update keys with `kiosk-image update-keys DIR`")
    meta = load_manifest(manifest_path)
    name, version, arch = str(meta["name"]), str(meta["version"]), meta["arch"]
    if arch not in ARCHES:
        raise BundleError(f"{manifest_path}: unknown architecture {arch!r}")
    out.mkdir(parents=True, exist_ok=True)
    bundle = out / f"{name}-{arch}-{version}.raucb"
    work = out / f".bundle-{arch}"
    shutil.rmtree(work, ignore_errors=True)
    content = work / "content"
    content.mkdir(parents=True)
    try:
        with progress.step("taking slot A's boot and root out of the image"):
            parts = {e.name: e for e in gpt.read(image)}
            root_bytes = rauc.verity_image_size(slot_hash_offset(image, parts["boot_a"]))
            if root_bytes > parts["root_a"].size:
                raise BundleError("the verity root runs past its partition: not an image kiosk-image built")
            gpt.copy_range(image, parts["root_a"].offset, root_bytes, content / "root.img")
            gpt.copy_range(image, parts["boot_a"].offset, parts["boot_a"].size, content / "boot.vfat")
            (content / "manifest.raucm").write_text(rauc.bundle_manifest(name, arch, version))
        with progress.step("building the tools tree (RAUC from the image's release), once"):
            tree = tools.tools_tree(load(arch), cache, progress)
        with progress.step(f"signing the bundle {bundle.name} (rauc bundle, format=verity)"):
            bundle.unlink(missing_ok=True)
            # 64 KiB squashfs blocks (RAUC's advice for adaptive installs): a unit that needs one
            # changed 4 KiB block fetches and unpacks 64 KiB of the bundle, not 128
            tools.in_tree(tree, ["rauc", "bundle", f"--cert={keys / rauc.SIGNING_CERT}",
                                 f"--key={keys / rauc.SIGNING_KEY}", f"--keyring={keys / rauc.CA_CERT}",
                                 "--mksquashfs-args=-b 64k", content, bundle], binds=[keys, out])
    except (CommandFailed, gpt.GptError) as exc:
        raise BundleError(str(exc)) from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    release = Release(version, arch, rauc.compatible(name, arch), bundle.stat().st_size, sha256_file(bundle))
    bundle.with_name(bundle.name + ".json").write_text(release.to_json())
    return bundle, release
