"""The screen's settings: ``ui.json`` in the agent's state directory, and the unit's serial number.

``ui.json`` is optional (every key too); the agent writes it from the server's
``set-config``; its one definition is :mod:`kiosk.protocol.screen_settings`. A bad
file is reported and the defaults are used: a unit with a broken file still rings.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Final

import msgspec

from kiosk.protocol import screen_settings
from kiosk.protocol.errors import ProtocolError
from kiosk.ui.buttons import ButtonMap
from kiosk.ui.controller import Settings

log = logging.getLogger("kiosk.ui")

SERIAL_SOURCES: Final = (
    Path("/sys/firmware/devicetree/base/serial-number"),  # Raspberry Pi and other device-tree boards
    Path("/sys/class/dmi/id/product_serial"),  # PCs
    Path("/etc/machine-id"),  # anything else: stable per installation
)


def serial_number(sources: tuple[Path, ...] = SERIAL_SOURCES) -> str:
    for source in sources:
        try:
            text = source.read_text(errors="replace").strip("\x00\n ")
        except OSError:
            continue
        if text and text.lower() not in ("none", "to be filled by o.e.m.", "default string"):
            return text[:32]
    return "?"


def button_map(settings: Settings) -> ButtonMap:
    """The physical buttons: the configured keys, or the defaults for what is not configured."""
    defaults = ButtonMap()
    try:
        configured = ButtonMap.from_names(settings.answer_keys, settings.hang_up_keys)
    except ValueError as exc:  # a name this kernel does not know: the big button still answers
        log.warning("the configured keys cannot be used (%s); using the default keys", exc)
        return defaults
    return ButtonMap(configured.answer or defaults.answer, configured.hang_up or defaults.hang_up)


def load_settings(state_dir: Path, serial: str | None = None) -> Settings:
    """The screen's settings from the agent's ui.json (the defaults where it has none or a bad one)."""
    serial = serial if serial is not None else serial_number()
    path = state_dir / screen_settings.UI_FILE
    try:
        read = screen_settings.decode(path.read_bytes())
    except FileNotFoundError:
        read = screen_settings.ScreenSettings()
    except (OSError, ProtocolError) as exc:
        log.warning("%s cannot be used (%s); using the default settings", path, exc)
        read = screen_settings.ScreenSettings()
    return Settings(serial=serial, **msgspec.structs.asdict(read))


def settings_stamp(state_dir: Path) -> tuple[int, int, int] | None:
    """When ui.json last changed (its mtime and size), so the screen re-reads it only then."""
    try:
        info = (state_dir / screen_settings.UI_FILE).stat()
    except OSError:
        return None
    return info.st_ino, info.st_mtime_ns, info.st_size  # the agent replaces it whole: a new inode


class SettingsWatch:
    """ui.json, read again only when it changed: the agent pushes its status after each
    set-config and after a wipe (which removes the file), and the screen asks here then."""

    def __init__(self, state_dir: Path, serial: str | None = None) -> None:
        self.state_dir = state_dir
        self.serial = serial if serial is not None else serial_number()
        self.stamp = settings_stamp(state_dir)

    def load(self) -> Settings:
        self.stamp = settings_stamp(self.state_dir)
        return load_settings(self.state_dir, self.serial)

    def changed(self) -> Settings | None:
        """The settings if ui.json changed since they were last read, else None."""
        if settings_stamp(self.state_dir) == self.stamp:
            return None
        return self.load()
