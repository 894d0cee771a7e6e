"""The image recipe (``image/recipe.toml``): one description for both architectures."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

Arch = Literal["amd64", "arm64"]
ARCHES: tuple[Arch, ...] = get_args(Arch)
REPO = Path(__file__).resolve().parents[2]
IMAGE_DIR = REPO / "image"


class RecipeError(ValueError):
    pass


@dataclass(frozen=True)
class Layout:
    config_mib: int
    boot_mib: int
    data_mib: int
    root_headroom_percent: int
    boot_tries: int


@dataclass(frozen=True)
class Recipe:
    name: str
    suite: str
    mirror: str
    components: tuple[str, ...]
    packages: tuple[str, ...]
    python_from_debian: frozenset[str]
    python_not_on_unit: frozenset[str]
    commands: tuple[str, ...]
    locales: tuple[str, ...]
    initramfs_modules: tuple[str, ...]
    trim_exclude: tuple[str, ...]
    trim_include: tuple[str, ...]
    layout: Layout
    arch: Arch

    @property
    def wheels_left_out(self) -> frozenset[str]:
        """The project's dependencies installed from no wheel: Debian's, and those the unit never runs."""
        return self.python_from_debian | self.python_not_on_unit


def _strings(table: dict[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = table.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RecipeError(f"{where}.{key} must be a list of strings")
    return tuple(value)


def load(arch: Arch, path: Path = IMAGE_DIR / "recipe.toml") -> Recipe:
    if arch not in ARCHES:
        raise RecipeError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHES)}")
    try:
        data = tomllib.loads(path.read_text())
        image, packages, initramfs, trim, layout = (
            data["image"], data["packages"], data["initramfs"], data["trim"], data["layout"])
        return Recipe(
            name=str(image["name"]), suite=str(image["suite"]), mirror=str(image["mirror"]),
            components=_strings(image, "components", "image") or ("main",),
            packages=_strings(packages, "common", "packages") + _strings(packages, arch, "packages"),
            python_from_debian=frozenset(_strings(data["python"], "from_debian", "python")),
            python_not_on_unit=frozenset(_strings(data["python"], "not_on_unit", "python")),
            commands=_strings(data["python"], "commands", "python"),
            locales=_strings(data["python"], "locales", "python"),
            initramfs_modules=_strings(initramfs, "modules", "initramfs") + _strings(initramfs, arch, "initramfs"),
            trim_exclude=_strings(trim, "exclude", "trim") + _strings(trim, arch, "trim"),
            trim_include=_strings(trim, "include", "trim"),
            layout=Layout(config_mib=int(layout["config"]), boot_mib=int(layout["boot"]),
                          data_mib=int(layout["data"]),
                          root_headroom_percent=int(layout["root_headroom_percent"]),
                          boot_tries=int(layout["boot_tries"])),
            arch=arch,
        )
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise RecipeError(f"cannot read the recipe {path}: {exc}") from None
    except KeyError as exc:
        raise RecipeError(f"the recipe {path} lacks {exc}") from None
