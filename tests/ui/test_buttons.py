"""Physical buttons through evdev: what a key means, which devices are read, and a real device.

The real-device test makes a virtual USB button and keyboard with ``uinput``
(python-evdev's ``UInput``); machines without ``/dev/uinput`` (containers
without the module) skip it, saying so.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest
from evdev import ecodes

from kiosk.ui import controller as ui
from kiosk.ui.buttons import ButtonMap, InputWatcher, event_for, has_keys

BUTTONS = ButtonMap()


def test_a_press_of_a_configured_key_answers_or_hangs_up_and_nothing_else_does() -> None:
    assert event_for(BUTTONS, ecodes.EV_KEY, ecodes.KEY_ENTER, 1) == ui.AnswerPressed()
    assert event_for(BUTTONS, ecodes.EV_KEY, ecodes.BTN_0, 1) == ui.AnswerPressed()
    assert event_for(BUTTONS, ecodes.EV_KEY, ecodes.KEY_END, 1) == ui.HangUpPressed()
    assert event_for(BUTTONS, ecodes.EV_KEY, ecodes.KEY_ENTER, 0) is None  # the release
    assert event_for(BUTTONS, ecodes.EV_KEY, ecodes.KEY_ENTER, 2) is None  # auto-repeat: one press, one answer
    for shortcut in (ecodes.KEY_ESC, ecodes.KEY_F4, ecodes.KEY_LEFTALT, ecodes.KEY_F1, ecodes.KEY_LEFTMETA):
        assert event_for(BUTTONS, ecodes.EV_KEY, shortcut, 1) is None
    assert event_for(BUTTONS, ecodes.EV_REL, ecodes.REL_X, 1) is None


def test_buttons_are_configured_by_name_and_a_wrong_name_is_a_clear_error() -> None:
    custom = ButtonMap.from_names(["KEY_F5"], ["KEY_F6"])
    assert event_for(custom, ecodes.EV_KEY, ecodes.KEY_F5, 1) == ui.AnswerPressed()
    assert event_for(custom, ecodes.EV_KEY, ecodes.KEY_ENTER, 1) is None
    with pytest.raises(ValueError, match="no such key: 'KEY_BIGRED'"):
        ButtonMap.from_names(["KEY_BIGRED"], [])
    with pytest.raises(ValueError, match="no such key"):
        ButtonMap.from_names(["EV_KEY"], [])


class Capabilities:
    """Only what :func:`has_keys` reads of a device: its capability table, as evdev gives it."""

    def __init__(self, table: dict[int, list[Any]]) -> None:
        self.table = table

    def capabilities(self) -> dict[int, list[Any]]:
        return self.table


def test_keyboards_and_buttons_are_read_touchscreens_and_mice_are_not() -> None:
    assert has_keys(Capabilities({ecodes.EV_KEY: [ecodes.KEY_A, ecodes.KEY_ENTER]}))
    assert has_keys(Capabilities({ecodes.EV_KEY: [ecodes.BTN_0]}))
    touch: dict[int, list[Any]] = {ecodes.EV_KEY: [ecodes.BTN_TOUCH], ecodes.EV_ABS: [(ecodes.ABS_MT_POSITION_X, None)]}
    assert not has_keys(Capabilities(touch))
    assert not has_keys(Capabilities({ecodes.EV_KEY: [ecodes.BTN_LEFT], ecodes.EV_REL: [ecodes.REL_X]}))
    assert not has_keys(Capabilities({ecodes.EV_SW: [0]}))


def test_no_devices_to_read_is_not_an_error() -> None:
    watcher = InputWatcher(lambda _event: None, paths=lambda: ["/nonexistent/event0"])
    watcher.scan()
    assert watcher.devices == {}


@pytest.mark.skipif(not os.path.exists("/dev/uinput"),
                    reason="no /dev/uinput on this machine (the uinput module is not available here)")
async def test_a_real_usb_button_answers_and_a_grabbed_keyboard_does_nothing() -> None:
    from evdev import UInput

    posted: list[ui.Event] = []
    button = UInput({ecodes.EV_KEY: [ecodes.BTN_0, ecodes.BTN_1]}, name="kiosk test big button")
    keyboard = UInput({ecodes.EV_KEY: [ecodes.KEY_LEFTALT, ecodes.KEY_F4, ecodes.KEY_ESC, ecodes.KEY_A]},
                      name="kiosk test keyboard")
    watcher = InputWatcher(posted.append,
                           paths=lambda: [os.fsdecode(button.device.path), os.fsdecode(keyboard.device.path)])
    task = asyncio.ensure_future(watcher.run())
    try:
        await asyncio.sleep(0.3)
        assert len(watcher.devices) == 2
        for device, keys in ((keyboard, [ecodes.KEY_LEFTALT, ecodes.KEY_F4, ecodes.KEY_ESC]),
                             (button, [ecodes.BTN_0])):
            for key in keys:
                device.write(ecodes.EV_KEY, key, 1)
            for key in reversed(keys):
                device.write(ecodes.EV_KEY, key, 0)
            device.syn()
        await asyncio.sleep(0.3)
        assert posted == [ui.AnswerPressed()]
        with pytest.raises(OSError):  # grabbed: nobody else gets its keys
            from evdev import InputDevice
            InputDevice(keyboard.device.path).grab()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        button.close()
        keyboard.close()
