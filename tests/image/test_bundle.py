"""`kiosk-image bundle` with the real RAUC (trixie's, from the tools tree), on a small image laid
out exactly as `kiosk-image build` lays one out; and the unit's RAUC boot backend on real
GRUB and U-Boot environment files.

Installing a bundle needs device-mapper (dm-verity), which this machine's kernel lacks: the
install, the anti-rollback refusal and the fall-back are tested by booting the image in
QEMU (tests/image/test_update.py). Here: the bundle, its signature and who it is for.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from kiosk.image import bootcfg, build, bundle, rauc, recipe, tools
from kiosk.image.progress import run
from tests.image import small

pytestmark = [pytest.mark.image, pytest.mark.slow, pytest.mark.timeout(900),
              pytest.mark.skipif(os.geteuid() != 0, reason="the tools tree runs RAUC in a chroot (root)"),
              pytest.mark.skipif(not shutil.which("mmdebstrap") or not shutil.which("mkfs.erofs"),
                                 reason="needs mmdebstrap and erofs-utils (scripts/setup.sh)")]
VERSION = "0.1.0+20261129.1200"


@pytest.fixture(scope="module")
def tree() -> Path:
    return tools.tools_tree(recipe.load("amd64"), build.DEFAULT_CACHE)


@pytest.fixture(scope="module")
def small_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small.small_image(tmp_path_factory.mktemp("small-image"), VERSION)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return rauc.create_keys(tmp_path_factory.mktemp("keys") / "update")


@pytest.fixture(scope="module")
def made(small_image: Path, keys: Path, tree: Path) -> tuple[Path, bundle.Release]:
    return bundle.make(small_image, small_image.parent / "out", keys, build.DEFAULT_CACHE)


def rauc_info(tree: Path, bundle_path: Path, keyring: Path, system_conf: Path | None = None) -> str:
    conf = [f"--conf={system_conf}"] if system_conf else []
    binds = [bundle_path.parent, keyring.parent, *([system_conf.parent] if system_conf else [])]
    return tools.in_tree(tree, ["rauc", *conf, f"--keyring={keyring}", "--output-format=json", "info",
                                bundle_path], binds=binds)


def test_the_verity_size_is_what_veritysetup_writes(tmp_path: Path) -> None:
    for blocks in (1, 2, 127, 128, 129, 5000, 16385):
        data = tmp_path / f"d{blocks}"
        data.write_bytes(b"\x01" * blocks * 4096)
        run(["veritysetup", "format", data, data, f"--hash-offset={blocks * 4096}", f"--data-blocks={blocks}"])
        assert data.stat().st_size == rauc.verity_image_size(blocks * 4096), blocks


def test_the_bundle_is_signed_for_this_unit_kind_with_the_version_that_only_grows(
        made: tuple[Path, bundle.Release], keys: Path, tree: Path) -> None:
    path, release = made
    info = json.loads(rauc_info(tree, path, keys / rauc.CA_CERT))
    assert info["compatible"] == "skaermbesoeg-kiosk-amd64"
    assert info["version"] == "0.1.202611291200" and info["description"] == VERSION
    images = {i["slotclass"] if "slotclass" in i else next(iter(i)): i for i in info["images"]}
    assert set(images) >= {"rootfs", "boot"}, info["images"]
    # each slot's image carries its block-hash index: a unit fetches only the blocks it lacks
    assert all(i[name]["adaptive"] == ["block-hash-index"] for name, i in images.items()), info["images"]
    sidecar = json.loads(path.with_name(path.name + ".json").read_text())
    assert sidecar == {"version": VERSION, "arch": "amd64", "compatible": "skaermbesoeg-kiosk-amd64",
                       "bytes": path.stat().st_size, "sha256": release.sha256}


def test_a_bundle_signed_by_another_ca_is_refused(made: tuple[Path, bundle.Release], tmp_path: Path,
                                                  tree: Path) -> None:
    other = rauc.create_keys(tmp_path / "other")
    with pytest.raises(Exception, match=r"(?i)signature|verif|certificate"):
        rauc_info(tree, made[0], other / rauc.CA_CERT)


def test_a_bundle_without_keys_or_manifest_is_refused_with_a_reason(small_image: Path, tmp_path: Path) -> None:
    with pytest.raises(bundle.BundleError, match="kiosk-image update-keys DIR"):
        bundle.make(small_image, tmp_path, tmp_path / "no-keys", build.DEFAULT_CACHE)
    stray = tmp_path / "x.img"
    stray.write_bytes(b"")
    with pytest.raises(bundle.BundleError, match="manifest"):
        bundle.make(stray, tmp_path, tmp_path, build.DEFAULT_CACHE)


def test_the_units_system_conf_is_one_rauc_reads(small_image: Path, made: tuple[Path, bundle.Release],
                                                 keys: Path, tree: Path, tmp_path: Path) -> None:
    conf = tmp_path / "system.conf"
    conf.write_text(rauc.system_conf("skaermbesoeg-kiosk", "amd64", VERSION)
                    .replace(f"path=/{rauc.KEYRING_IN_ROOT}", f"path={keys / rauc.CA_CERT}"))
    info = json.loads(rauc_info(tree, made[0], keys / rauc.CA_CERT, conf))
    assert info["compatible"] == "skaermbesoeg-kiosk-amd64"


BACKEND = Path(__file__).resolve().parents[2] / "image/overlay/usr/lib/kiosk/rauc-boot"


@pytest.mark.parametrize("kind", ["grub", "uboot"])
def test_the_rauc_boot_backend_moves_the_counters_the_bootloaders_read(kind: str, tree: Path, tmp_path: Path) -> None:
    env_path = tmp_path / ("grubenv" if kind == "grub" else "boot-count.env")
    env_path.write_bytes(bootcfg.render_grubenv(bootcfg.initial_env()) if kind == "grub"
                         else bootcfg.uboot_env(bootcfg.initial_env()))
    cmdline = tmp_path / "cmdline"
    cmdline.write_text("ro kiosk.slot=a rauc.slot=a quiet\n")
    shutil.copy(BACKEND, tmp_path / "rauc-boot")
    names = {"KIOSK_GRUBENV": str(tmp_path / "grubenv"), "KIOSK_UBOOTENV": str(tmp_path / "boot-count.env"),
             "KIOSK_CMDLINE": str(cmdline)}

    def backend(*args: str) -> str:
        env = " ".join(f"{k}={v}" for k, v in names.items())
        return tools.in_tree(tree, ["sh", "-c", f'{env} "$0" "$@"', str(tmp_path / "rauc-boot"), *args],
                             binds=[tmp_path]).strip()

    def counters() -> dict[str, str]:
        raw = env_path.read_bytes()
        if kind == "grub":
            return bootcfg.parse_grubenv(raw)
        return dict(line.split("=", 1) for line in raw.decode().splitlines())

    assert backend("get-current") == "a"
    assert backend("get-primary") == "a"
    assert (backend("get-state", "a"), backend("get-state", "b")) == ("good", "bad")
    backend("set-primary", "b")          # what RAUC does after writing slot B
    assert counters()["ORDER"] == "b a" and counters()["b_ok"] == "1" and counters()["b_try"] == "0"
    assert backend("get-primary") == "b"
    backend("set-state", "b", "bad")     # the health check failed: the bootloader passes B over
    assert counters()["b_ok"] == "0" and backend("get-primary") == "a"
    backend("set-state", "b", "good")
    assert counters()["b_ok"] == "1" and counters()["b_try"] == "0"
    with pytest.raises(Exception, match="unknown slot"):
        backend("set-state", "c", "good")
    if kind == "grub":
        assert len(env_path.read_bytes()) == bootcfg.GRUBENV_SIZE


def test_the_cli_makes_keys_once(tmp_path: Path) -> None:
    import sys
    made_keys = subprocess.run([sys.executable, "-m", "kiosk.image.cli", "update-keys", str(tmp_path / "k")],
                               capture_output=True, text=True)
    assert made_keys.returncode == 0 and (tmp_path / "k" / rauc.CA_CERT).exists()
    again = subprocess.run([sys.executable, "-m", "kiosk.image.cli", "update-keys", str(tmp_path / "k")],
                           capture_output=True, text=True)
    assert again.returncode == 1 and "a second CA would lock units out" in again.stderr
