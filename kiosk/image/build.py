"""``kiosk-image build``: Debian packages + our wheels -> a partitioned, verity-protected disk image.

Steps: fetch wheels; build the root with mmdebstrap (image/customize.sh lays on
image/overlay and sets the units); install the wheels; take the boot files out of the
root; make the erofs root with its dm-verity hash tree; make the FAT and ext4 partitions;
write the GPT and place everything; compress; write the manifest.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import kiosk
from kiosk.image import bootcfg, emulation, kernel, layout, rauc, wheels
from kiosk.image.manifest import Manifest, parse_dpkg_status
from kiosk.image.progress import CommandFailed, Progress, run
from kiosk.image.recipe import IMAGE_DIR, Arch, Recipe

DEFAULT_CACHE = Path(os.environ.get("KIOSK_IMAGE_CACHE", "/var/cache/kiosk-image"))
#: The update CA and signing key (kiosk/image/rauc.py); the CA certificate goes into every image.
DEFAULT_UPDATE_KEYS = Path(os.environ.get("KIOSK_UPDATE_KEYS", "/var/lib/kiosk-image/update-keys"))
HOST_TOOLS = ("mmdebstrap", "mkfs.erofs", "veritysetup", "mkfs.vfat", "mcopy", "mmd", "mkfs.ext4", "sfdisk", "zstd")
BLOCK = 4096


class BuildError(RuntimeError):
    pass


@dataclass(frozen=True)
class Options:
    recipe: Recipe
    out: Path
    debug: bool = False
    cache: Path = DEFAULT_CACHE
    keep_work: bool = False
    update_keys: Path = DEFAULT_UPDATE_KEYS


@dataclass(frozen=True)
class Result:
    image: Path
    compressed: Path
    manifest: Path


def check_host(arch: Arch) -> None:
    needed = (*HOST_TOOLS, "mkimage") if arch == "arm64" else HOST_TOOLS
    missing = [tool for tool in needed if shutil.which(tool) is None]
    if missing:
        raise BuildError(f"missing build tools: {', '.join(missing)} (scripts/setup.sh installs them)")
    if os.geteuid() != 0:
        raise BuildError("building an image needs root (mmdebstrap --mode=root, chroot)")
    host = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True).stdout.strip()
    qemu_user = "qemu-aarch64" if arch == "arm64" else "qemu-x86_64"
    if arch != host and not Path("/proc/sys/fs/binfmt_misc", qemu_user).exists():
        raise BuildError(f"building {arch} on {host} needs qemu-user-static and binfmt-support")


def _mmdebstrap(r: Recipe, root: Path, apt_cache: Path, debug: bool, foreign: bool, log: Path,
                progress: Progress) -> None:
    apt_cache.mkdir(parents=True, exist_ok=True)
    args: list[str | Path] = [
        "mmdebstrap", "--mode=root", "--variant=apt", f"--arch={r.arch}", "--include=" + ",".join(r.packages),
        "--components=" + ",".join(r.components),
        "--skip=essential/unlink",
        *[f"--dpkgopt=path-exclude={p}" for p in r.trim_exclude],
        *[f"--dpkgopt=path-include={p}" for p in r.trim_include],
        # downloaded packages are kept between builds (outside the tree): a rebuild downloads nothing new
        '--setup-hook=mkdir -p "$1"/var/cache/apt/archives/',
        f"--setup-hook=sync-in {apt_cache} /var/cache/apt/archives/",
        # the kernel's first initramfs is made with no modules; customize.sh makes the real one
        '--essential-hook=mkdir -p "$1"/etc/initramfs-tools/conf.d '
        '&& echo MODULES=list > "$1"/etc/initramfs-tools/conf.d/kiosk.conf',
        *(emulation.defer_hooks() if foreign else []),
        f"--customize-hook=sync-out /var/cache/apt/archives {apt_cache}",
        # dpkg's log stays with the build's: where an emulated build spends its time (bench/image_build_profile.py)
        f'--customize-hook=cp "$1"/var/log/dpkg.log {log.with_suffix(".dpkg.log")}',
        *(emulation.restore_hooks() if foreign else []),
        f'--customize-hook={IMAGE_DIR / "customize.sh"} "$1" {r.arch} {IMAGE_DIR / "overlay"} {int(debug)} '
        + " ".join(r.initramfs_modules),
        '--customize-hook=rm -rf "$1"/var/cache/apt/archives/*.deb "$1"/var/lib/apt/lists/*',
        r.suite, root, r.mirror,
    ]
    run(args, log=log, relay="I: ", progress=progress)


def _stamp_version(root: Path, name: str, version: str) -> None:
    os_release = root / "usr/lib/os-release"
    text = os_release.read_text()
    os_release.write_text(text + f'IMAGE_ID={name}\nIMAGE_VERSION="{version}"\n')


def _rauc_config(root: Path, r: Recipe, version: str, keys: Path, progress: Progress) -> None:
    """RAUC's slots and the update CA the unit trusts (only this one)."""
    if not (keys / rauc.CA_CERT).exists():
        progress.say(f"no update keys in {keys}: making a new update CA there (keep it; units trust only it)")
        rauc.create_keys(keys)
    conf = root / rauc.SYSTEM_CONF_IN_ROOT
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text(rauc.system_conf(r.name, r.arch, version))
    shutil.copy(keys / rauc.CA_CERT, root / rauc.KEYRING_IN_ROOT)


#: Where the Pi's firmware and U-Boot lie in the root (raspi-firmware, u-boot-rpi)
PI_FIRMWARE_IN_ROOT = "usr/lib/raspi-firmware"
PI_UBOOT_IN_ROOT = "usr/lib/u-boot/rpi_arm64/u-boot.bin"
PI_FIRMWARE = ("start4.elf", "fixup4.dat")
PI_4_DEVICE_TREE = "bcm2711-rpi-4-b.dtb"


def _take_boot_files(root: Path, arch: Arch, dest: Path) -> None:
    """Kernel, initramfs (and GRUB's EFI binary, or the Pi's firmware and U-Boot) leave the
    root for the boot and config partitions: Linux never reads them once booted."""
    dest.mkdir(parents=True, exist_ok=True)
    boot = root / "boot"
    kernels = sorted(boot.glob("vmlinuz-*"))
    initrds = sorted(boot.glob("initrd.img-*"))
    if len(kernels) != 1 or len(initrds) != 1:
        raise BuildError(f"expected one kernel and one initramfs in the root, found {kernels} {initrds}")
    shutil.move(kernels[0], dest / "vmlinuz")
    shutil.move(initrds[0], dest / "initrd.img")
    if arch == "amd64":
        shutil.move(boot / "BOOTX64.EFI", dest / "BOOTX64.EFI")
    else:
        for needed in (PI_FIRMWARE_IN_ROOT, PI_UBOOT_IN_ROOT):
            if not (root / needed).exists():
                raise BuildError(f"the root has no {needed}: the Pi could not boot (raspi-firmware, u-boot-rpi)")
        shutil.move(root / PI_FIRMWARE_IN_ROOT, dest / "raspi-firmware")
        shutil.move(root / PI_UBOOT_IN_ROOT, dest / "u-boot.bin")
    # raspi-firmware's kernel hook copies kernel, initramfs and firmware to /boot/firmware too
    for leftover in boot.iterdir():
        if leftover.name != "config":
            leftover.unlink() if leftover.is_file() or leftover.is_symlink() else shutil.rmtree(leftover)


#: lz4hc in 64 KiB physical clusters (the default: 4 KiB) for a smaller image; the kernel reads
#: big pclusters since 5.13. Level 9, not the highest (12): 12 took 3.3x the CPU (149 against
#: 45 s) for a root 0.3 % smaller (docs/benchmarks.md, "erofs levels").
EROFS_COMPRESSION = ("-zlz4hc,9", "-C65536")


def _erofs_verity(root: Path, dest: Path, log: Path,
                  compression: tuple[str, ...] = EROFS_COMPRESSION) -> tuple[int, str]:
    """The root as erofs with its verity hash tree appended; (hash offset, root hash)."""
    run(["mkfs.erofs", *compression, dest, root], log=log)
    data_size = dest.stat().st_size
    if data_size % BLOCK:
        raise BuildError(f"the erofs image is {data_size} bytes, not a whole number of {BLOCK}-byte blocks")
    out = run(["veritysetup", "format", dest, dest, f"--hash-offset={data_size}",
               f"--data-blocks={data_size // BLOCK}"])
    match = re.search(r"Root hash:\s+([0-9a-f]{64})", out)
    if not match:
        raise BuildError(f"veritysetup printed no root hash:\n{out}")
    return data_size, match.group(1)


def _fat(path: Path, label: str, mib: int, files: dict[str, Path | bytes]) -> None:
    path.unlink(missing_ok=True)
    run(["mkfs.vfat", "-C", "-n", label, path, str(mib * 1024)])
    made: set[str] = set()
    for name, content in files.items():
        parts = name.split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            folder = "/".join(parts[:depth])
            if folder not in made:
                run(["mmd", "-i", path, f"::/{folder}"])
                made.add(folder)
        src = content if isinstance(content, Path) else path.with_name(path.name + "." + name.replace("/", "_"))
        if isinstance(content, bytes):
            src.write_bytes(content)
        run(["mcopy", "-i", path, src, f"::/{name}"])


def _place(image: Path, part: layout.Partition, content: Path) -> None:
    size = content.stat().st_size
    if size > part.size:
        raise BuildError(f"{content.name} ({size} bytes) does not fit partition {part.name} ({part.size} bytes)")
    with content.open("rb") as src, image.open("r+b") as dst:
        dst.seek(part.offset)
        shutil.copyfileobj(src, dst, 4 << 20)


def build(opts: Options, progress: Progress | None = None) -> Result:
    r = opts.recipe
    check_host(r.arch)
    started = time.monotonic()
    foreign = emulation.is_foreign(r.arch)
    progress = progress or Progress(9 if foreign else 8)
    now = datetime.now(UTC)
    version = f"{kiosk.__version__}+{now:%Y%m%d.%H%M}" + ("-debug" if opts.debug else "")
    stem = f"{r.name}-{r.arch}"
    out = opts.out
    out.mkdir(parents=True, exist_ok=True)
    work = out / f".work-{r.arch}"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir()
    log = out / f"{stem}.build.log"
    log.write_text(f"kiosk-image build {r.arch} {version} at {now.isoformat()}\n")
    root = work / "root"
    parts = work / "parts"
    parts.mkdir()
    manifest = Manifest(name=r.name, version=version, arch=r.arch, debug=opts.debug, suite=r.suite,
                        built_at=now.isoformat(timespec="seconds"))
    try:
        with progress.step("fetching our wheel and its pinned dependencies"):
            wheel_files = wheels.fetch(r.arch, r.wheels_left_out, opts.cache / "pip", work / "wheels", log)
        with progress.step(f"building the {r.suite} {r.arch} root (mmdebstrap; see {log.name})"):
            _mmdebstrap(r, root, opts.cache / f"apt-{r.arch}", opts.debug, foreign, log, progress)
        with progress.step("installing the project into the root"):
            manifest.wheels = wheels.install(root, wheel_files, r.arch, r.commands, log)
            wheels.prune_locale_data(root / wheels.SITE, r.locales)
            if not foreign:
                run(["chroot", root, "python3", "-m", "compileall", "-q", "--invalidation-mode", "unchecked-hash",
                     "/" + wheels.SITE], log=log)
            _stamp_version(root, r.name, version)
            _rauc_config(root, r, version, opts.update_keys, progress)
            manifest.packages = parse_dpkg_status((root / "var/lib/dpkg/status").read_text())
        if foreign:
            with progress.step(f"byte-compiling, CA store, hwdb and MIME databases natively ({r.suite} tools tree)"):
                tools = emulation.tools_tree(r, work / "tools", opts.cache / f"apt-{emulation.host_arch()}", log)
                emulation.byte_compile(tools, root, (*emulation.PYTHON_TREES, wheels.SITE), log)
                emulation.trust_store(tools, root, log)
                emulation.databases(tools, root, log)
        with progress.step("taking the boot files out of the root"):
            _take_boot_files(root, r.arch, work / "boot")
        with progress.step("making the read-only root (erofs + dm-verity)"):
            hash_offset, root_hash = _erofs_verity(root, parts / "root.img", log)
            manifest.root_hash = root_hash
        with progress.step("making the boot, config and data partitions"):
            plan = layout.plan(r.arch, config_mib=r.layout.config_mib, boot_mib=r.layout.boot_mib,
                               root_mib=layout.mib_for((parts / "root.img").stat().st_size,
                                                       r.layout.root_headroom_percent),
                               data_mib=r.layout.data_mib)
            _boot_partitions(r, plan, root, work / "boot", parts, hash_offset, root_hash, opts.debug)
            data_tree = work / "data"
            for sub in ("kiosk", "journal", "rauc"):
                (data_tree / sub).mkdir(parents=True, mode=0o700)
            run(["mkfs.ext4", "-q", "-L", "data", "-E", "root_owner=0:0", "-d", data_tree,
                 parts / "data.img", f"{r.layout.data_mib}M"])
        image = out / f"{stem}.img"
        with progress.step(f"writing the disk image ({plan.disk_size // layout.MIB} MiB)"):
            image.unlink(missing_ok=True)
            with image.open("wb") as f:
                f.truncate(plan.disk_size)
            run(["sfdisk", "--no-reread", "--no-tell-kernel", "-q", image], input_text=layout.sfdisk_script(plan))
            for name in ("config", "boot_a", "boot_b", "root_a", "data"):
                _place(image, plan[name], parts / f"{name.replace('root_a', 'root')}.img")
            manifest.partitions = [{"number": p.number, "name": p.name, "offset": p.offset, "bytes": p.size,
                                    "uuid": p.uuid, "type": p.type_guid} for p in plan.partitions]
        compressed = out / f"{stem}.img.zst"
        with progress.step("compressing (zstd)"):
            run(["zstd", "-q", "-f", "-T0", "-3", image, "-o", compressed])  # erofs is compressed already
            manifest.add_file(image)
            manifest.add_file(compressed)
    except CommandFailed as exc:
        raise BuildError(str(exc)) from None
    finally:
        if not opts.keep_work and work.exists():
            shutil.rmtree(work)
    manifest.steps = progress.timings
    manifest.build_seconds = round(time.monotonic() - started, 1)
    manifest_path = out / f"{stem}.manifest.json"
    manifest_path.write_text(manifest.to_json())
    return Result(image, compressed, manifest_path)


def _boot_partitions(r: Recipe, plan: layout.Plan, root: Path, boot: Path, parts: Path, hash_offset: int,
                     root_hash: str, debug: bool) -> None:
    slot_a = bootcfg.slot_args(hash_offset, root_hash)
    common = bootcfg.kernel_cmdline(r.arch, debug)
    boot_a: dict[str, Path | bytes] = {"initrd.img": boot / "initrd.img"}
    if r.arch == "amd64":
        config: dict[str, Path | bytes] = {
            "EFI/BOOT/BOOTX64.EFI": boot / "BOOTX64.EFI",
            "EFI/BOOT/grub.cfg": bootcfg.grub_cfg(common, r.layout.boot_tries).encode(),
            "EFI/BOOT/grubenv": bootcfg.render_grubenv(bootcfg.initial_env()),
        }
        boot_a |= {"vmlinuz": boot / "vmlinuz", "slot.cfg": bootcfg.grub_slot_cfg(slot_a).encode()}
    else:
        script = parts / "boot.cmd"
        script.write_text(bootcfg.uboot_script(common, r.layout.boot_tries))
        run(["mkimage", "-A", "arm64", "-T", "script", "-C", "none", "-n", "kiosk A/B boot", "-d", script,
             parts / "boot.scr"])
        config = {"boot.scr": parts / "boot.scr",
                  "boot-count.env": bootcfg.uboot_env(bootcfg.initial_env()),
                  **_raspberry_pi_files(root, boot)}
        boot_a |= {"Image": kernel.arm64_image((boot / "vmlinuz").read_bytes()),
                   "slot.env": bootcfg.uboot_env({"kiosk_args": slot_a})}
    _fat(parts / "config.img", "CONFIG", r.layout.config_mib, config)
    _fat(parts / "boot_a.img", "BOOT_A", r.layout.boot_mib, boot_a)
    _fat(parts / "boot_b.img", "BOOT_B", r.layout.boot_mib, {})


PI_CONFIG_TXT = """# Raspberry Pi 4/5 firmware: hand over to U-Boot, which runs boot.scr (A/B boot counting).
arm_64bit=1
kernel=u-boot.bin
enable_uart=1
disable_splash=1
"""


def _raspberry_pi_files(root: Path, boot: Path) -> dict[str, Path | bytes]:
    """The Pi's boot stage for the config partition: the firmware the Pi 4 loads (start4.elf,
    fixup4.dat; the camera and debug variants are not needed, and the Pi 5 keeps its firmware
    in EEPROM), U-Boot (both taken out of the root by _take_boot_files into ``boot``),
    config.txt, and the Pi 4/5 device trees the firmware hands on."""
    firmware = {name: boot / "raspi-firmware" / name for name in PI_FIRMWARE}
    trees = {dtb.name: dtb for dtb in sorted(root.glob("usr/lib/linux-image-*/broadcom/bcm271[12]-rpi-*.dtb"))}
    missing = [name for name, path in firmware.items() if not path.exists()]
    missing += [] if PI_4_DEVICE_TREE in trees else [PI_4_DEVICE_TREE]
    if missing:
        raise BuildError(f"the Pi 4's boot files are incomplete: {', '.join(missing)} missing")
    return {"config.txt": PI_CONFIG_TXT.encode(), "u-boot.bin": boot / "u-boot.bin", **firmware, **trees}
