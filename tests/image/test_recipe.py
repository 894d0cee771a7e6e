"""The recipe's promises about the unit's Python: what it leaves out, nothing the unit runs imports."""

from __future__ import annotations

import ast
import datetime
import re
import shutil
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

from kiosk.image import recipe, wheels
from kiosk.ui.i18n import LANGUAGES

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


def test_each_architecture_leaves_out_its_own_paths_and_the_common_ones() -> None:
    amd64, arm64 = recipe.load("amd64"), recipe.load("arm64")
    assert set(amd64.trim_exclude) < set(arm64.trim_exclude)
    # the other boards' device trees go; the Pi's (the firmware's, on the config partition) stay
    assert "/usr/lib/linux-image-*/*" in set(arm64.trim_exclude) - set(amd64.trim_exclude)
    assert "/usr/lib/linux-image-*/broadcom/*" in arm64.trim_include


def test_the_kivy_widgets_left_without_their_libraries_are_not_used() -> None:
    """The image leaves out Pygments and docutils (Kivy's CodeInput and RstDocument need them)."""
    customize = (recipe.IMAGE_DIR / "customize.sh").read_text()
    assert 'rm -rf "$root/usr/lib/python3/dist-packages/pygments" "$root/usr/lib/python3/dist-packages/docutils"' \
        in customize
    used = set().union(*(imported_top_level_names(KIOSK / part) for part in ON_THE_UNIT))
    assert not used & {"pygments", "docutils"}
    sources = "\n".join(p.read_text() for part in ON_THE_UNIT for p in (KIOSK / part).rglob("*.py"))
    assert not re.search(r"\b(CodeInput|RstDocument|kivy\.uix\.(codeinput|rst)|kivy\.extras\.highlight)\b", sources)


@pytest.mark.parametrize("arch", recipe.ARCHES)
def test_the_screen_keeps_the_locale_data_of_every_language_it_speaks(arch: recipe.Arch, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import babel
    from babel import localedata
    from babel.dates import format_date

    kept = recipe.load(arch).locales
    assert set(LANGUAGES) <= set(kept)
    site = tmp_path / "site"
    shutil.copytree(Path(babel.__file__).parent, site / "babel")
    before = len(list((site / "babel" / "locale-data").glob("*.dat")))
    removed = wheels.prune_locale_data(site, kept)
    left = sorted(p.stem for p in (site / "babel" / "locale-data").glob("*.dat"))
    assert removed > 900 and len(left) + removed == before
    assert "root" in left and all(name.split("_")[0] in kept for name in left if name != "root")
    # the screen's dates, in every language, from what is left
    monkeypatch.setattr(localedata, "_dirname", str(site / "babel" / "locale-data"))
    monkeypatch.setattr(localedata, "_cache", {})
    assert format_date(datetime.date(2026, 11, 29), "EEEE d. MMMM", locale="da") == "søndag 29. november"
    assert format_date(datetime.date(2026, 11, 29), "EEEE d MMMM", locale="en") == "Sunday 29 November"
    with pytest.raises(babel.UnknownLocaleError):
        format_date(datetime.date(2026, 11, 29), locale="de")
