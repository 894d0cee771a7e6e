"""The screen's settings: ``ui.json`` in the agent's state directory, and the unit's serial number.

``ui.json`` is optional (every key too); the agent writes it from the server's
``set-config`` (language, font scale, night hours, reminder lead, staff PIN,
volume). A bad file is reported and the defaults are used: a unit with a typo
in its settings still rings.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any, Final

from kiosk.ui.buttons import ButtonMap
from kiosk.ui.controller import Settings
from kiosk.ui.i18n import LANGUAGES

log = logging.getLogger("kiosk.ui")

SERIAL_SOURCES: Final = (
    Path("/sys/firmware/devicetree/base/serial-number"),  # Raspberry Pi and other device-tree boards
    Path("/sys/class/dmi/id/product_serial"),  # PCs
    Path("/etc/machine-id"),  # anything else: stable per installation
)


class SettingsError(ValueError):
    pass


def serial_number(sources: tuple[Path, ...] = SERIAL_SOURCES) -> str:
    for source in sources:
        try:
            text = source.read_text(errors="replace").strip("\x00\n ")
        except OSError:
            continue
        if text and text.lower() not in ("none", "to be filled by o.e.m.", "default string"):
            return text[:32]
    return "?"


def parse_settings(raw: dict[str, Any], serial: str) -> Settings:
    """Settings from the JSON object ``raw``; :class:`SettingsError` naming the bad key."""
    defaults = Settings(serial=serial)
    values: dict[str, Any] = {}
    checks: dict[str, tuple[type, Any]] = {
        "language": (str, lambda v: v in LANGUAGES),
        "font_scale": (float, lambda v: 0.75 <= v <= 2.0),
        "night_start_hour": (int, lambda v: 0 <= v <= 23),
        "night_end_hour": (int, lambda v: 0 <= v <= 23),
        "reminder_minutes": (int, lambda v: 0 <= v <= 120),
        "staff_pin": (str, lambda v: v.isdigit() and 4 <= len(v) <= 12),
        "volume": (int, lambda v: 0 <= v <= 10),
        "answer_keys": (list, _key_names),
        "hang_up_keys": (list, _key_names),
    }
    for key, value in raw.items():
        if key not in checks:
            raise SettingsError(f"unknown setting {key!r}")
        kind, valid = checks[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or isinstance(value, bool) or not valid(value):
            raise SettingsError(f"setting {key!r} has a value out of range: {value!r}")
        values[key] = tuple(value) if isinstance(value, list) else value
    return replace(defaults, **values)


def _key_names(names: list[Any]) -> bool:
    try:
        ButtonMap.from_names([str(n) for n in names], [])
    except ValueError:
        return False
    return all(isinstance(n, str) for n in names)


def button_map(settings: Settings) -> ButtonMap:
    """The physical buttons: the configured keys, or the defaults for what is not configured."""
    defaults = ButtonMap()
    configured = ButtonMap.from_names(settings.answer_keys, settings.hang_up_keys)
    return ButtonMap(configured.answer or defaults.answer, configured.hang_up or defaults.hang_up)


def load_settings(state_dir: Path, serial: str | None = None) -> Settings:
    serial = serial if serial is not None else serial_number()
    path = state_dir / "ui.json"
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return Settings(serial=serial)
    except (OSError, ValueError) as exc:
        log.warning("%s cannot be read (%s); using the default settings", path, exc)
        return Settings(serial=serial)
    try:
        if not isinstance(raw, dict):
            raise SettingsError("not a JSON object")
        return parse_settings(raw, serial)
    except SettingsError as exc:
        log.warning("%s: %s; using the default settings", path, exc)
        return Settings(serial=serial)
