"""The image tools from the image's own release: a small trixie tree made by mmdebstrap.

The host may be older (bookworm's RAUC 1.8 cannot make the bundles the unit's RAUC
wants), so `kiosk-image bundle` runs RAUC inside this tree (the idea of mkosi's ToolsTree).
It is built once into the shared cache and reused; a tree whose package list changed is
rebuilt.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from kiosk.image.progress import Progress, run
from kiosk.image.recipe import Recipe

# rauc makes and checks bundles; squashfs-tools packs them; openssl reads certificates;
# grub-common's grub-editenv lets the tests drive the unit's RAUC boot backend.
TOOLS = ("rauc", "squashfs-tools", "openssl", "ca-certificates", "grub-common")


def tools_tree(r: Recipe, cache: Path, progress: Progress | None = None) -> Path:
    """The tree for the recipe's suite on this host's architecture, built on first use."""
    host = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True,
                          check=True).stdout.strip()
    stamp = hashlib.sha256(f"{r.suite} {r.mirror} {host} {' '.join(TOOLS)}".encode()).hexdigest()[:12]
    tree = cache / f"tools-{r.suite}-{host}-{stamp}"
    if (tree / "usr/bin/rauc").exists():
        return tree
    partial = tree.with_name(tree.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    apt_cache = cache / f"apt-{host}"
    apt_cache.mkdir(parents=True, exist_ok=True)
    log = cache / f"{tree.name}.log"
    run(["mmdebstrap", "--mode=root", "--variant=apt", f"--arch={host}", "--include=" + ",".join(TOOLS),
         '--setup-hook=mkdir -p "$1"/var/cache/apt/archives/',
         f"--setup-hook=sync-in {apt_cache} /var/cache/apt/archives/",
         f"--customize-hook=sync-out /var/cache/apt/archives {apt_cache}",
         '--customize-hook=rm -rf "$1"/var/cache/apt/archives/*.deb "$1"/var/lib/apt/lists/*',
         r.suite, partial, r.mirror], log=log, relay="I: ", progress=progress)
    partial.rename(tree)
    return tree


def in_tree(tree: Path, args: Sequence[str | Path], binds: Sequence[Path], log: Path | None = None) -> str:
    """Run a command of the tools tree with the host's ``binds`` (directories) at the same paths.

    A private mount namespace (unshare) keeps the bind mounts from leaking to the host, and
    they go away with the command.
    """
    mounts = "mount -t proc proc \"$T/proc\" && mount --rbind /dev \"$T/dev\" && "
    for i, path in enumerate(binds):
        mounts += f'mkdir -p "$T{path}" && mount --bind "$B{i}" "$T{path}" && '
    env = " ".join(f'B{i}="{p}"' for i, p in enumerate(binds))
    script = f'{env} T="{tree}"; {mounts} exec chroot "$T" "$@"'
    return run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "in-tree", *args], log=log)
