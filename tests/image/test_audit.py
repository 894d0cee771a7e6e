"""The audit: real binaries built here with and without hardening, judged by the real policy."""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from kiosk.image import audit, elfcheck

needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc not installed")
SOURCE = "#include <stdio.h>\n#include <string.h>\nint main(int c, char **v) { char b[64]; " \
         "strcpy(b, v[0]); puts(b); return 0; }\n"


@pytest.fixture(scope="module")
def policy() -> audit.Policy:
    return audit.load_policy()


def compile_c(tmp: Path, name: str, *flags: str) -> Path:
    src = tmp / "prog.c"
    src.write_text(SOURCE)
    out = tmp / name
    subprocess.run(["gcc", "-O1", str(src), "-o", str(out), *flags], check=True, capture_output=True)
    return out


@needs_gcc
def test_a_hardened_program_passes(tmp_path: Path, policy: audit.Policy) -> None:
    prog = compile_c(tmp_path, "good", "-fPIE", "-pie", "-fstack-protector-strong", "-Wl,-z,relro,-z,now")
    facts = elfcheck.read(prog)
    assert facts is not None
    assert (facts.kind, facts.pie, facts.nx, facts.relro, facts.stack_protector) == (
        "executable", True, True, "full", True)
    assert audit.judge("/usr/bin/good", facts, "amd64", policy) == []


@needs_gcc
def test_weak_programs_breach_the_policy(tmp_path: Path, policy: audit.Policy) -> None:
    no_pie = compile_c(tmp_path, "nopie", "-no-pie", "-fno-pie")
    execstack = compile_c(tmp_path, "execstack", "-z", "execstack")
    rpath = compile_c(tmp_path, "rpath", "-Wl,-rpath,/home/someone/lib")
    norelro = compile_c(tmp_path, "norelro", "-Wl,-z,norelro", "-fno-stack-protector")
    checks = {}
    for prog in (no_pie, execstack, rpath, norelro):
        facts = elfcheck.read(prog)
        assert facts is not None
        checks[prog.name] = {(f.check, f.severity) for f in audit.judge(prog.name, facts, "amd64", policy)}
    assert ("pie", "breach") in checks["nopie"]
    assert ("nx", "breach") in checks["execstack"]
    assert ("rpath", "breach") in checks["rpath"]
    assert {("relro", "breach"), ("stack_protector", "report")} <= checks["norelro"]


def test_an_elf_of_another_architecture_breaches(policy: audit.Policy) -> None:
    facts = elfcheck.ElfFacts("EM_AARCH64", "library", False, True, "full", True, ())
    assert [f.check for f in audit.judge("/usr/lib/x.so", facts, "amd64", policy)] == ["arch"]


def test_setuid_and_world_writable_files(policy: audit.Policy) -> None:
    reg = stat.S_IFREG
    assert audit.judge_mode("/usr/bin/su", reg | 0o4755, policy)[0].check == "setuid"
    assert audit.judge_mode("/usr/lib/dbus-1.0/dbus-daemon-launch-helper", reg | 0o4754, policy) == []
    assert audit.judge_mode("/etc/x", reg | 0o666, policy)[0].check == "world_writable"
    assert audit.judge_mode("/tmp", stat.S_IFDIR | 0o1777, policy) == []
    assert audit.judge_mode("/srv/drop", stat.S_IFDIR | 0o1777, policy)[0].check == "world_writable"
    assert audit.judge_mode("/dev/null", stat.S_IFCHR | 0o666, policy) == []
    assert audit.judge_mode("/usr/bin/python3", stat.S_IFLNK | 0o777, policy) == []


@needs_gcc
def test_audit_tree_walks_a_root_and_honours_exemptions(tmp_path: Path, policy: audit.Policy) -> None:
    root = tmp_path / "root"
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/lib/grub").mkdir(parents=True)
    shutil.copy(compile_c(tmp_path, "nopie", "-no-pie", "-fno-pie"), root / "usr/bin/nopie")
    shutil.copy(root / "usr/bin/nopie", root / "usr/lib/grub/module")  # exempt by the policy
    (root / "usr/bin/sudo-like").write_text("#!/bin/sh\n")
    (root / "usr/bin/sudo-like").chmod(0o4755)
    (root / "usr/bin/broken").write_bytes(b"\x7fELF" + b"\0" * 10)
    findings, counts = audit.audit_tree(root, "amd64", policy)
    got = {(f.path, f.check) for f in findings if f.check != "stack_protector"}  # gcc's default varies
    assert got == {("/usr/bin/nopie", "pie"), ("/usr/bin/sudo-like", "setuid"), ("/usr/bin/broken", "elf")}
    assert counts["executable"] == 1


def test_a_policy_with_an_unknown_check_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "p.toml"
    bad.write_text('[executables]\npie = "breach"\ncfi = "breach"\n')
    with pytest.raises(audit.AuditError, match="cfi"):
        audit.load_policy(bad)
