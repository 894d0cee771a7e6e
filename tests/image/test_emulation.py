"""A foreign root's deferred commands: no-ops while packages install, their real selves after.

The hooks are the exact mmdebstrap option strings, run by sh as mmdebstrap runs them
(the root as $1), with the build host's real dpkg-divert on a scratch root.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kiosk.image import emulation, recipe
from kiosk.image.build import DEFAULT_CACHE

pytestmark = pytest.mark.skipif(shutil.which("dpkg-divert") is None, reason="needs dpkg-divert (Debian)")


def run_hook(option: str, root: Path) -> None:
    _, _, script = option.partition("=")
    subprocess.run(["sh", "-c", script, "exec", str(root)], check=True)


def scratch_root(tmp_path: Path) -> Path:
    """A root as the essential hook finds it: dpkg's database, /usr/bin and /usr/sbin, but not
    yet the directories of packages still to come (/usr/lib/python3.13)."""
    root = tmp_path / "root"
    (root / "var/lib/dpkg/info").mkdir(parents=True)
    (root / "var/lib/dpkg/status").write_text("")
    for essential in ("usr/bin", "usr/sbin"):
        (root / essential).mkdir(parents=True)
    return root


def test_deferred_commands_do_nothing_while_installing_and_come_back_after(tmp_path: Path) -> None:
    root = scratch_root(tmp_path)
    [defer] = emulation.defer_hooks()
    run_hook(defer, root)
    for cmd in emulation.DEFERRED:
        stub = root / cmd.lstrip("/")
        argv = [sys.executable, "-I", str(stub)] if stub.suffix == ".py" else [str(stub)]
        done = subprocess.run([*argv, "--version"], input=b"/var/cache/apt/archives/a.deb\n" * 5000,
                              capture_output=True, timeout=30)
        assert (done.returncode, done.stdout) == (0, b""), "a stub does nothing, says nothing, takes all input"
        # the package unpacks its real command beside the stub (what dpkg does with a diversion)
        stub.with_name(stub.name + ".kiosk-deferred").write_text(f"#!/bin/sh\necho real {cmd}\n")
    diversions = subprocess.run(["dpkg-divert", f"--root={root}", "--list"], capture_output=True, text=True).stdout
    assert all(cmd in diversions for cmd in emulation.DEFERRED)

    [restore] = emulation.restore_hooks()
    run_hook(restore, root)
    for cmd in emulation.DEFERRED:
        assert (root / cmd.lstrip("/")).read_text() == f"#!/bin/sh\necho real {cmd}\n"
        assert not (root / (cmd.lstrip("/") + ".kiosk-deferred")).exists()
    assert subprocess.run(["dpkg-divert", f"--root={root}", "--list"], capture_output=True, text=True).stdout == ""


def test_restoring_what_was_never_deferred_fails_the_build(tmp_path: Path) -> None:
    [restore] = emulation.restore_hooks()
    with pytest.raises(subprocess.CalledProcessError):
        run_hook(restore, scratch_root(tmp_path))


def status(version: str) -> str:
    return (f"Package: {emulation.PYTHON_RUNTIME}\nStatus: install ok installed\nVersion: {version}\n"
            "Installed-Size: 5000\n")


def test_bytecode_is_made_only_by_the_roots_own_python_version(tmp_path: Path) -> None:
    tools, root = scratch_root(tmp_path / "t"), scratch_root(tmp_path / "r")
    (tools / "var/lib/dpkg/status").write_text(status("3.13.5-2+deb13u5"))
    (root / "var/lib/dpkg/status").write_text(status("3.13.5-2+deb13u4"))
    with pytest.raises(emulation.EmulationError, match="not the root's"):
        emulation.byte_compile(tools, root, emulation.PYTHON_TREES, tmp_path / "log")
    (root / "var/lib/dpkg/status").write_text("")
    with pytest.raises(emulation.EmulationError, match="has no"):
        emulation.byte_compile(tools, root, emulation.PYTHON_TREES, tmp_path / "log")


@pytest.mark.image
@pytest.mark.slow
@pytest.mark.skipif(shutil.which("mmdebstrap") is None, reason="needs mmdebstrap")
@pytest.mark.skipif(os.geteuid() != 0, reason="a tools tree is made as root")
def test_the_tools_tree_compiles_python_and_makes_the_ca_store_as_the_root_would(tmp_path: Path) -> None:
    r = recipe.load("arm64")
    tools = emulation.tools_tree(r, tmp_path / "tools", DEFAULT_CACHE / f"apt-{emulation.host_arch()}",
                                 tmp_path / "log")
    root = scratch_root(tmp_path)
    shutil.copy(tools / "var/lib/dpkg/status", root / "var/lib/dpkg/status")
    module = root / "usr/lib/python3/dist-packages/pkg/m.py"
    module.parent.mkdir(parents=True)
    module.write_text("def f() -> int:\n    return 1\n")
    subprocess.run(["cp", "-a", tools / "usr/lib/python3.13", root / "usr/lib/"], check=True)  # a standard library
    emulation.byte_compile(tools, root, emulation.PYTHON_TREES, tmp_path / "log")
    assert (root / "usr/lib/python3.13/__pycache__/os.cpython-313.pyc").exists()
    [pyc] = (module.parent / "__pycache__").glob("m.cpython-313.pyc")
    data = pyc.read_bytes()
    assert int.from_bytes(data[4:8], "little") == 1, "an unchecked hash-based pyc (the root never changes)"
    assert b"/usr/lib/python3/dist-packages/pkg/m.py" in data and str(tmp_path).encode() not in data

    # the CA store: the root's certificates and list, its links pointing where they will in the image
    for path in ("usr/share/ca-certificates", "etc/ca-certificates.conf", "usr/sbin/update-ca-certificates"):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cp", "-a", tools / path, root / path], check=True)
    (root / "etc/ssl/certs").mkdir(parents=True)
    emulation.trust_store(tools, root, tmp_path / "log")
    links = list((root / "etc/ssl/certs").glob("*.pem"))
    assert len(links) > 100
    assert all(os.readlink(link).startswith("/usr/share/ca-certificates/") for link in links)
    assert (root / "etc/ssl/certs/ca-certificates.crt").read_text().count("BEGIN CERTIFICATE") == len(links)

    # udev's hardware database and the MIME database, from the root's sources into the root
    for path in ("usr/lib/udev/hwdb.d", "usr/share/mime/packages", "usr/bin/systemd-hwdb"):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cp", "-a", tools / path, root / path], check=True)
    emulation.databases(tools, root, tmp_path / "log")
    assert (root / "usr/lib/udev/hwdb.bin").read_bytes()[:8] == b"KSLPHHRH"
    assert "text/plain" in (root / "usr/share/mime/types").read_text().split()

    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(tools) not in mounts, "the bind mounts ended with the commands"
