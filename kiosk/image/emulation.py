"""Less work under emulation, for a root of a foreign architecture (arm64 built on amd64).

Every maintainer script of a foreign root runs through qemu-user, many times slower
than natively. Two kinds of work dominate and neither needs the foreign CPU:

- ``update-initramfs`` runs from the kernel's postinst and again from the trigger of
  every package that ships initramfs hooks, each time packing the whole initramfs.
  While packages are installed it is a no-op (a dpkg diversion, so the package's own
  file is kept aside and put back); customize.sh then makes the one initramfs.
- ``py3compile`` (run by every ``python3-*`` postinst) is a no-op too, and so is the
  compiling of the standard library by python3.13's own postinsts. Bytecode does
  not depend on the CPU, only on the Python version, so the root's Python files are
  compiled afterwards by the image's own Python release running natively: a small tools
  tree of the image's suite for the build host's architecture (as mkosi's ToolsTree does).
- udev's hardware database (``systemd-hwdb update``, 270 s under emulation here) and the
  MIME database (``update-mime-database``, 98 s) are data files: compiled natively too.
- ``dpkg-preconfigure``, which apt runs first to ask every package's debconf questions up
  front, unpacks the templates of all (some 400) packages under emulation; a build asks
  nobody anything, and each package's own scripts still see its questions when they run.

Native builds (amd64 on amd64) do none of this: there the scripts run at full speed.
"""

from __future__ import annotations

import posixpath
import shlex
import subprocess
from pathlib import Path

from kiosk.image.manifest import parse_dpkg_status
from kiosk.image.progress import run
from kiosk.image.recipe import Recipe

_NOTE = "kiosk-image: deferred while the packages are installed (kiosk/image/emulation.py)"


def _sh(body: str) -> str:
    return f"#!/bin/sh\n# {_NOTE}\n{body}\n"


# What stands in for each deferred file while packages are installed; the real files are
# restored after. apt writes dpkg-preconfigure the package list on stdin: it is read.
# python3.13's postinsts compile the standard library by running py_compile.py as a script
# (the stand-in is an empty module; nothing else imports it while packages are installed).
DEFERRED = {
    "/usr/sbin/update-initramfs": _sh("exit 0"),
    "/usr/bin/py3compile": _sh("exit 0"),
    "/usr/sbin/update-ca-certificates": _sh("exit 0"),
    "/usr/sbin/dpkg-preconfigure": _sh("exec cat >/dev/null"),
    "/usr/lib/python3.13/py_compile.py": f"# {_NOTE}\n",
    "/usr/bin/systemd-hwdb": _sh("exit 0"),
    "/usr/bin/update-mime-database": _sh("exit 0"),
}
_ASIDE = ".kiosk-deferred"
# What Debian byte-compiles: the standard library (python3.13's postinsts), the rest (py3compile).
PYTHON_TREES = ("usr/lib/python3.13", "usr/lib/python3/dist-packages", "usr/share/python3")
PYTHON_RUNTIME = "libpython3.13-minimal"
# What update-ca-certificates reads (the certificates, the list of those trusted) and writes.
CA_PATHS = ("usr/share/ca-certificates", "usr/local/share/ca-certificates", "etc/ca-certificates.conf",
            "etc/ssl/certs")
TOOLS_PACKAGES = (PYTHON_RUNTIME, "python3.13-minimal", "ca-certificates", "udev", "shared-mime-info")


class EmulationError(RuntimeError):
    pass


def host_arch() -> str:
    return subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True,
                          check=True).stdout.strip()


def is_foreign(arch: str) -> bool:
    return arch != host_arch()


def defer_hooks() -> list[str]:
    """mmdebstrap options: divert the deferred commands before the packages are installed...

    From the essential hook on, when only the essential packages are there: a deferred file's
    directory may not exist yet (/usr/lib/python3.13 comes with python3.13-minimal), so the
    stand-in makes it; dpkg then unpacks the package into it as usual."""
    steps = [f'dpkg-divert --root="$1" --local --rename --divert {cmd}{_ASIDE} --add {cmd} >/dev/null '
             f'&& mkdir -p "$1"{posixpath.dirname(cmd)} '
             f'&& printf %s {shlex.quote(stub)} > "$1"{cmd} && chmod 755 "$1"{cmd}'
             for cmd, stub in DEFERRED.items()]
    return ["--essential-hook=" + " && ".join(steps)]


def restore_hooks() -> list[str]:
    """...and put the real commands back once they are (before customize.sh uses them)."""
    steps = [f'rm "$1"{cmd} && dpkg-divert --root="$1" --local --rename --remove {cmd} >/dev/null' for cmd in DEFERRED]
    return ["--customize-hook=" + " && ".join(steps)]


def tools_tree(r: Recipe, dest: Path, apt_cache: Path, log: Path) -> Path:
    """The image's suite for the build host's CPU, with what the deferred work needs: runs natively."""
    apt_cache.mkdir(parents=True, exist_ok=True)
    run(["mmdebstrap", "--mode=root", "--variant=essential", "--include=" + ",".join(TOOLS_PACKAGES),
         "--skip=essential/unlink", "--dpkgopt=path-exclude=/usr/share/doc/*",
         '--setup-hook=mkdir -p "$1"/var/cache/apt/archives/',
         f"--setup-hook=sync-in {apt_cache} /var/cache/apt/archives/",
         f"--customize-hook=sync-out /var/cache/apt/archives {apt_cache}",
         r.suite, dest, r.mirror], log=log)
    return dest


def _version(root: Path, name: str) -> str:
    for package in parse_dpkg_status((root / "var/lib/dpkg/status").read_text()):
        if package.name == name:
            return package.version
    raise EmulationError(f"{root} has no {name}")


def _same_version(tools: Path, root: Path, name: str) -> None:
    if _version(tools, name) != _version(root, name):
        raise EmulationError(f"the tools tree's {name} ({_version(tools, name)}) is not the root's "
                             f"({_version(root, name)}): their results may differ")


def _in_tools(tools: Path, binds: dict[Path, str], argv: list[str], log: Path) -> None:
    """Run ``argv`` natively in the tools tree with parts of the root bind-mounted into it.

    ``binds`` maps a path of the root to where the tools tree sees it. The mounts live in
    a private mount namespace, so they cannot outlive the command, whatever happens.
    """
    mounts = []
    for source, target in binds.items():
        inside = tools / target.lstrip("/")
        if source.is_dir():
            inside.mkdir(parents=True, exist_ok=True)
        elif source.is_file():
            inside.parent.mkdir(parents=True, exist_ok=True)
            inside.touch()
        else:
            raise EmulationError(f"{source} is missing from the root")
        mounts.append(f"mount --bind {shlex.quote(str(source))} {shlex.quote(str(tools) + target)}")
    script = " && ".join([*mounts, f'exec chroot {shlex.quote(str(tools))} "$@"'])
    run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *argv], log=log)


def byte_compile(tools: Path, root: Path, trees: tuple[str, ...], log: Path) -> None:
    """Compile ``trees`` of ``root`` with the tools tree's Python, as the root's Python would.

    The recorded source paths are the root's own. Hash-based pycs: the root is read-only,
    its sources never change.
    """
    _same_version(tools, root, PYTHON_RUNTIME)
    present = [f"/mnt/root/{tree}" for tree in trees if (root / tree).is_dir()]
    _in_tools(tools, {root: "/mnt/root"}, ["python3.13", "-m", "compileall", "-q", "--invalidation-mode",
                                           "unchecked-hash", "-s", "/mnt/root", "-p", "/", *present], log)


def trust_store(tools: Path, root: Path, log: Path) -> None:
    """The root's /etc/ssl/certs from its CA certificates and ca-certificates.conf, made natively.

    The root's own directories are mounted where update-ca-certificates looks, so its
    links point where they will in the image.
    """
    if not (root / "usr/sbin/update-ca-certificates").exists():
        return  # no ca-certificates in this root
    _same_version(tools, root, "ca-certificates")
    (root / "usr/local/share/ca-certificates").mkdir(parents=True, exist_ok=True)
    _in_tools(tools, {root / path: "/" + path for path in CA_PATHS}, ["update-ca-certificates", "--hooksdir", ""],
              log)


def databases(tools: Path, root: Path, log: Path) -> None:
    """udev's hardware database and the MIME database, compiled natively into the root.

    Both are data files read the same on every CPU (hwdb.bin is little-endian, as arm64 and
    amd64 are); made by the same versions of their tools as the root's.
    """
    if (root / "usr/bin/systemd-hwdb").exists():
        _same_version(tools, root, "udev")
        _in_tools(tools, {root: "/mnt/root"}, ["systemd-hwdb", "--root=/mnt/root", "--usr", "update"], log)
    if (root / "usr/share/mime/packages").is_dir():
        _same_version(tools, root, "shared-mime-info")
        _in_tools(tools, {root: "/mnt/root"}, ["update-mime-database", "/mnt/root/usr/share/mime"], log)
