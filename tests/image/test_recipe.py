"""The recipe's promises about the unit's Python: what it leaves out, nothing the unit runs imports."""

from __future__ import annotations

import ast
import re
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

from kiosk.image import recipe

KIOSK = Path(__file__).resolve().parents[2] / "kiosk"
#: What runs on a unit: the agent, the screen and what they import (tests/test_import_graph.py).
ON_THE_UNIT = ("protocol", "provision", "ui", "media")


def imported_top_level_names(package: Path) -> set[str]:
    names: set[str] = set()
    for source in package.rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text(), str(source))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("arch", recipe.ARCHES)
def test_no_wheel_left_off_the_unit_is_imported_by_what_runs_there(arch: recipe.Arch) -> None:
    r = recipe.load(arch)
    assert {"sqlalchemy", "argon2-cffi", "pyelftools"} <= r.python_not_on_unit
    assert r.wheels_left_out == r.python_from_debian | r.python_not_on_unit
    modules_of = {dist.lower(): module for module, dists in packages_distributions().items() for dist in dists}
    left_out_modules = {modules_of[dist] for dist in r.python_not_on_unit}
    assert left_out_modules == {"sqlalchemy", "argon2", "elftools", "alembic", "mako", "psycopg", "jinja2", "fpdf",
                                "fontTools", "defusedxml", "authlib", "httpx2", "httpcore2", "joserfc", "truststore",
                                "zxingcpp", "nats"}
    used = set().union(*(imported_top_level_names(KIOSK / part) for part in ON_THE_UNIT))
    assert not used & left_out_modules, f"the unit imports {used & left_out_modules}, left out of its image"


def test_a_recipe_with_a_malformed_list_is_refused(tmp_path: Path) -> None:
    text = re.sub(r"not_on_unit = \[.*?\]", 'not_on_unit = "sqlalchemy"',
                  (recipe.IMAGE_DIR / "recipe.toml").read_text(), count=1, flags=re.S)
    (tmp_path / "recipe.toml").write_text(text)
    with pytest.raises(recipe.RecipeError, match=r"python\.not_on_unit must be a list of strings"):
        recipe.load("amd64", tmp_path / "recipe.toml")
