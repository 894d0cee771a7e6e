"""An on-screen keyboard with æ, ø and å (Kivy ships no Danish layout: ``keyboard_da.json``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

from kivy.metrics import dp
from kivy.uix.boxlayout import BoxLayout
from kivy.uix.textinput import TextInput
from kivy.uix.vkeyboard import VKeyboard

LAYOUT: Final = Path(__file__).with_name("keyboard_da.json")


class OnScreenKeyboard(BoxLayout):  # type: ignore[misc]
    """A text field (hidden characters for passwords) and the keyboard that types into it."""

    def __init__(self, secret: bool = True, **kwargs: Any) -> None:
        super().__init__(orientation="vertical", spacing=dp(8), **kwargs)
        self.field = TextInput(password=secret, multiline=False, font_size=dp(34), size_hint_y=None,
                               height=dp(64), keyboard_mode="managed")
        self.keys = VKeyboard(layout=str(LAYOUT), size_hint_y=1)
        self.keys.bind(on_key_up=self._key)
        self.add_widget(self.field)
        self.add_widget(self.keys)

    @property
    def text(self) -> str:
        return str(self.field.text)

    def type(self, internal: str | None, special: str | None = None) -> None:
        """What one key does (also the test's way to type)."""
        if special == "backspace":
            self.field.text = self.field.text[:-1]
        elif internal and special not in ("enter", "shift", "capslock"):
            self.field.text += internal

    def _key(self, _keyboard: Any, keycode: Any, internal: str | None, _modifiers: Any) -> None:
        special = keycode if isinstance(keycode, str) and len(keycode) > 1 else None
        self.type(internal, special)
