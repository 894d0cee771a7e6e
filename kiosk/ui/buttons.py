"""Physical input through evdev: a big USB "answer" button or a key answers, another hangs up;
keyboards are grabbed, so no shortcut leaves the kiosk.

:func:`event_for` maps one key event to a controller event (pure). :class:`InputWatcher`
opens every input device with keys (never a touchscreen: that is the window's one
touch source), grabs it (``EVIOCGRAB``: its events reach only us, so Alt+F4,
Ctrl+Alt+F1-F12 and Escape never reach the compositor or the console), reads it,
and looks for new devices every few seconds (a button plugged in later works).
Which keys do what comes from the settings; the defaults suit common big-button
devices (they send Enter, Space or a joystick button).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import evdev
from evdev import ecodes

from kiosk.ui import controller as ui

log = logging.getLogger("kiosk.ui.buttons")

RESCAN_SECONDS: Final = 5.0
KEY_DOWN: Final = 1


@dataclass(frozen=True)
class ButtonMap:
    answer: frozenset[int] = field(default_factory=lambda: frozenset(
        {ecodes.KEY_ENTER, ecodes.KEY_KPENTER, ecodes.KEY_SPACE, ecodes.BTN_0, ecodes.BTN_TRIGGER, ecodes.KEY_F13}))
    hang_up: frozenset[int] = field(default_factory=lambda: frozenset(
        {ecodes.KEY_END, ecodes.BTN_1, ecodes.BTN_THUMB, ecodes.KEY_F14}))

    @classmethod
    def from_names(cls, answer: Iterable[str], hang_up: Iterable[str]) -> ButtonMap:
        """From key names ("KEY_ENTER", "BTN_0"); an unknown name is a clear error."""
        def codes(names: Iterable[str]) -> frozenset[int]:
            found = set()
            for name in names:
                code = ecodes.ecodes.get(name)
                if not isinstance(code, int) or not name.startswith(("KEY_", "BTN_")):
                    raise ValueError(f"no such key: {name!r} (names are like KEY_ENTER or BTN_0)")
                found.add(code)
            return frozenset(found)

        return cls(codes(answer), codes(hang_up))


def event_for(buttons: ButtonMap, event_type: int, code: int, value: int) -> ui.Event | None:
    """The controller event for one input event: a press (not the release or auto-repeat) of a
    configured key. Everything else is swallowed."""
    if event_type != ecodes.EV_KEY or value != KEY_DOWN:
        return None
    if code in buttons.answer:
        return ui.AnswerPressed()
    if code in buttons.hang_up:
        return ui.HangUpPressed()
    return None


def has_keys(device: Any) -> bool:
    """A keyboard or button device, and not a touchscreen or pointer (those stay the window's)."""
    capabilities = device.capabilities()
    keys = capabilities.get(ecodes.EV_KEY, [])
    touch = ecodes.ABS_MT_POSITION_X in [code for code, *_ in capabilities.get(ecodes.EV_ABS, [])]
    pointer = ecodes.BTN_TOUCH in keys or ecodes.BTN_LEFT in keys
    return bool(keys) and not touch and not pointer


class InputWatcher:
    """Reads every key device it may, grabbed, and posts what the configured buttons mean."""

    def __init__(self, post: Callable[[ui.Event], None], buttons: ButtonMap | None = None,
                 paths: Callable[[], list[str]] = evdev.list_devices, grab: bool = True) -> None:
        self.post = post
        self.buttons = buttons or ButtonMap()
        self._paths = paths
        self._grab = grab
        self.devices: dict[str, Any] = {}
        self._readers: dict[str, asyncio.Task[None]] = {}

    async def run(self) -> None:
        try:
            while True:
                self.scan()
                await asyncio.sleep(RESCAN_SECONDS)
        finally:
            for task in self._readers.values():
                task.cancel()
            await asyncio.gather(*self._readers.values(), return_exceptions=True)
            for device in self.devices.values():
                with contextlib.suppress(OSError):
                    device.close()

    def scan(self) -> None:
        for path in self._paths():
            if path in self._readers and not self._readers[path].done():
                continue
            try:
                device = evdev.InputDevice(path)
            except OSError as exc:  # no permission, or gone again
                log.debug("input %s not opened: %s", Path(path).name, exc)
                continue
            if not has_keys(device):
                device.close()
                continue
            if self._grab:
                try:
                    device.grab()
                except OSError as exc:
                    log.warning("input %s could not be grabbed (%s): its shortcuts may reach the system",
                                device.name, exc)
            log.info("reading buttons of %s", device.name)
            self.devices[path] = device
            self._readers[path] = asyncio.ensure_future(self._read(path, device))

    async def _read(self, path: str, device: Any) -> None:
        try:
            async for event in device.async_read_loop():
                meaning = event_for(self.buttons, event.type, event.code, event.value)
                if meaning is not None:
                    self.post(meaning)
        except OSError:
            log.info("input %s went away", device.name)
        finally:
            self.devices.pop(path, None)
            with contextlib.suppress(OSError):
                device.close()
