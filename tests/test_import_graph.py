"""Who may import whom inside ``kiosk/``, so the layering cannot silently break.

    protocol  -> nothing of ours          media     -> nothing of ours
    provision -> protocol                 server    -> protocol
    ui        -> protocol, media          caregiver -> protocol, media
    image     -> protocol

Whatever two subpackages share lives in the lower one. Every import counts:
at the top of a module, inside a function (a lazy import is still a
dependency), under ``TYPE_CHECKING``, absolute or relative. The package's own
root modules (``kiosk/__init__.py``: the version; ``kiosk/cli_util.py``: the
command lines' helpers) may be imported by all and import no subpackage.
Imports are read with :mod:`ast`, never executed, in a fresh interpreter
(:func:`violations`): CPython 3.11.7's parser can fail with "AST constructor
recursion depth mismatch" in a process where a RecursionError happened before
(deep hypothesis examples in other tests), which says nothing about our imports.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "kiosk"

ALLOWED: dict[str, frozenset[str]] = {
    "protocol": frozenset(),
    "media": frozenset(),
    "provision": frozenset({"protocol"}),
    "server": frozenset({"protocol"}),
    "ui": frozenset({"protocol", "media"}),
    "caregiver": frozenset({"protocol", "media"}),
    "image": frozenset({"protocol"}),
}


@dataclass(frozen=True)
class Violation:
    path: str  # relative to the directory holding the package
    line: int
    importer: str  # subpackage, or "" for a root module
    imported: str  # the module named in the import

    def __str__(self) -> str:
        who = f"kiosk.{self.importer}" if self.importer else "a root module of kiosk"
        return f"{self.path}:{self.line}: {who} imports {self.imported}"


def module_name(package_dir: Path, path: Path) -> str:
    parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(tree: ast.AST, module: str, is_package: bool) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) for every import in ``tree``; for ``from X import a``
    both ``X`` and ``X.a`` (``a`` may be a submodule)."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            yield node.lineno, base
            for alias in node.names:
                yield node.lineno, f"{base}.{alias.name}"


def subpackage(module: str, package_dir: Path) -> str | None:
    """The subpackage of ours that ``module`` is in; "" for a root module; None if not ours."""
    parts = module.split(".")
    if parts[0] != package_dir.name:
        return None
    if len(parts) > 1 and (parts[1] in ALLOWED or (package_dir / parts[1]).is_dir()):
        return parts[1]
    return ""


def find_violations(package_dir: Path) -> list[Violation | str]:
    """Every import that breaks :data:`ALLOWED` under ``package_dir``, and every
    subpackage the rules do not know (it must be added to them, deliberately)."""
    found: list[Violation | str] = []
    for path in sorted(package_dir.rglob("*.py")):
        rel = path.relative_to(package_dir)
        importer = rel.parts[0] if len(rel.parts) > 1 else ""
        if importer and importer not in ALLOWED:
            found.append(f"{path}: subpackage kiosk.{importer} has no import rule; add it to ALLOWED")
            continue
        allowed = ALLOWED.get(importer, frozenset())
        module = module_name(package_dir, path)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for line, imported in imported_modules(tree, module, path.name == "__init__.py"):
            target = subpackage(imported, package_dir)
            if target is None or target == importer:
                continue  # not ours, or its own subpackage
            if target == "" or target in allowed:
                continue  # a root module (the version, the CLI helpers) is for everyone
            violation = Violation(str(path.relative_to(package_dir.parent)), line, importer, imported)
            if not any(isinstance(v, Violation) and (v.path, v.line) == (violation.path, line) for v in found):
                found.append(violation)  # one per import statement: ``from X import a`` names X first
    return found


def violations(package_dir: Path) -> list[Violation | str]:
    """:func:`find_violations`, run in a fresh interpreter (see the module's docstring)."""
    result = subprocess.run([sys.executable, __file__, str(package_dir)], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, f"the import check itself failed:\n{result.stderr}"
    return [Violation(**found) if isinstance(found, dict) else found for found in json.loads(result.stdout)]


def main(package_dir: str) -> None:
    """Print :func:`find_violations` as JSON: a violation as an object, a missing rule as a string."""
    found = find_violations(Path(package_dir))
    print(json.dumps([vars(v) if isinstance(v, Violation) else v for v in found]))


# --------------------------------------------------------------------------- the real tree


def test_kiosk_keeps_its_import_rule() -> None:
    broken = violations(PACKAGE)
    assert not broken, "imports that break the layering:\n" + "\n".join(map(str, broken))


def test_the_rule_covers_every_subpackage_there_is() -> None:
    present = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert present <= set(ALLOWED), present - set(ALLOWED)
    assert {"protocol", "media", "provision", "server", "ui", "caregiver"} <= present


# --------------------------------------------------------------------------- the checker itself


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "kiosk" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "kiosk"


CLEAN = {
    "__init__.py": "__version__ = '0'\n",
    "cli_util.py": "import json\n",
    "protocol/__init__.py": "",
    "protocol/messages.py": "from kiosk.protocol.errors import ProtocolError\nfrom . import errors\n",
    "protocol/errors.py": "class ProtocolError(Exception): ...\n",
    "media/__init__.py": "from .peer import CallPeer\n",
    "media/peer.py": "import aiortc\nclass CallPeer: ...\n",
    "server/__init__.py": "",
    "server/calls.py": "import kiosk\nfrom kiosk.cli_util import fail\nfrom kiosk.protocol import messages\n",
    "ui/__init__.py": "",
    "ui/call_peer.py": "from kiosk.media.peer import CallPeer\nfrom ..protocol import messages\n",
    "caregiver/__init__.py": "from kiosk import media, protocol\n",
}


def test_a_clean_tree_has_no_violations(tmp_path: Path) -> None:
    assert violations(write(tmp_path, CLEAN)) == []


@pytest.mark.parametrize(
    ("name", "text", "importer", "imported"),
    [
        ("server/call_client.py", "from kiosk.ui.call_peer import DeviceCall\n", "server", "kiosk.ui.call_peer"),
        ("server/x.py", "def lazy():\n    import kiosk.media.peer\n", "server", "kiosk.media.peer"),
        ("server/y.py", "from ..media import peer\n", "server", "kiosk.media"),
        ("server/z.py", "from kiosk import media\n", "server", "kiosk.media"),
        ("ui/cli.py", "from kiosk.provision.state import StateDir\n", "ui", "kiosk.provision.state"),
        ("protocol/bad.py", "import kiosk.media\n", "protocol", "kiosk.media"),
        ("media/bad.py", "from kiosk.protocol import messages as m\n", "media", "kiosk.protocol"),
        ("caregiver/bad.py", "from kiosk.server import turn\n", "caregiver", "kiosk.server"),
        ("provision/bad.py", "if TYPE_CHECKING:\n    from kiosk.ui import session\n", "provision", "kiosk.ui"),
        ("cli_util.py", "from kiosk.server import app\n", "", "kiosk.server"),
    ],
)
def test_a_forbidden_import_is_found(tmp_path: Path, name: str, text: str, importer: str, imported: str) -> None:
    found = violations(write(tmp_path, {**CLEAN, name: text}))
    assert found, f"{name}: {text!r} was not caught"
    assert all(isinstance(v, Violation) and v.path == f"kiosk/{name}" and v.importer == importer for v in found)
    assert imported in {v.imported for v in found if isinstance(v, Violation)}


def test_a_subpackage_without_a_rule_fails(tmp_path: Path) -> None:
    found = violations(write(tmp_path, {**CLEAN, "console/__init__.py": "from kiosk.protocol import messages\n"}))
    assert len(found) == 1 and "kiosk.console has no import rule" in str(found[0])


def test_imports_of_other_packages_and_our_own_subpackage_are_free(tmp_path: Path) -> None:
    tree = write(tmp_path, {**CLEAN, "media/more.py": "import kiosker\nimport av\nfrom . import peer\n"
                                                      "from kiosk.media.peer import CallPeer\n"})
    assert violations(tree) == []


if __name__ == "__main__":
    main(sys.argv[1])
