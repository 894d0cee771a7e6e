"""The few widgets every screen is built from: big text, big buttons, the hidden staff corner.

Sizes are in sp (text, times the font-scale setting) and dp (spacing); colours
come from :mod:`kiosk.ui.theme`. A button acts on release inside it, like any
touch screen, and the whole of its area counts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kivy.clock import Clock
from kivy.graphics import Color, Rectangle, RoundedRectangle
from kivy.metrics import dp, sp
from kivy.uix.button import Button
from kivy.uix.label import Label
from kivy.uix.widget import Widget

from kiosk.ui import theme
from kiosk.ui.theme import RGB


class Sizes:
    """sp for text, scaled by the citizen's font-scale setting."""

    def __init__(self, font_scale: float = 1.0) -> None:
        self.font_scale = min(2.0, max(0.75, font_scale))

    def text(self, size: float) -> float:
        return float(sp(size * self.font_scale))


class Text(Label):  # type: ignore[misc]
    """Wrapped, centred text that grows its widget to fit."""

    def __init__(self, text: str, size_sp: float, sizes: Sizes, color: RGB = theme.TEXT, bold: bool = False,
                 halign: str = "center", **kwargs: Any) -> None:
        kwargs.setdefault("size_hint_y", None)  # by default as tall as its wrapped text
        super().__init__(text=text, font_size=sizes.text(size_sp), color=(*color, 1), bold=bold,
                         halign=halign, valign="middle", **kwargs)
        self.bind(width=self._wrap, texture_size=self._grow)

    def _wrap(self, *_args: Any) -> None:
        self.text_size = (self.width, None)

    def _grow(self, *_args: Any) -> None:
        if self.size_hint_y is None:
            self.height = self.texture_size[1] + dp(8)


class BigButton(Button):  # type: ignore[misc]
    """A large, flat, rounded button with words on it; ``on_press`` runs on release inside it."""

    def __init__(self, text: str, on_press: Callable[[], None], sizes: Sizes, fill: RGB = theme.CONTROL,
                 text_color: RGB = theme.TEXT, size_sp: float = theme.BUTTON_SP, **kwargs: Any) -> None:
        super().__init__(text=text, font_size=sizes.text(size_sp), color=(*text_color, 1), bold=True,
                         halign="center", valign="middle", background_normal="", background_down="",
                         background_color=(0, 0, 0, 0), **kwargs)
        self._action = on_press
        with self.canvas.before:
            self._fill = Color(*fill, 1)
            self._shape = RoundedRectangle(radius=[dp(18)])
        self.bind(pos=self._layout, size=self._layout)

    def _layout(self, *_args: Any) -> None:
        self._shape.pos, self._shape.size = self.pos, self.size
        self.text_size = (self.width - dp(24), self.height - dp(12))

    def on_release(self) -> None:
        self._action()


class Background(Widget):  # type: ignore[misc]
    """A plain colour behind a screen."""

    def __init__(self, color: RGB, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        with self.canvas.before:
            Color(*color, 1)
            self._rect = Rectangle()
        self.bind(pos=self._layout, size=self._layout)

    def _layout(self, *_args: Any) -> None:
        self._rect.pos, self._rect.size = self.pos, self.size


class Badge(Label):  # type: ignore[misc]
    """A short always-visible notice on a coloured plate ("Kameraet er tændt")."""

    def __init__(self, text: str, sizes: Sizes, fill: RGB, text_color: RGB = theme.TEXT, **kwargs: Any) -> None:
        super().__init__(text=text, font_size=sizes.text(theme.SMALL_SP + 4), bold=True, color=(*text_color, 1),
                         padding=(dp(20), dp(10)), **kwargs)
        with self.canvas.before:
            Color(*fill, 1)
            self._shape = RoundedRectangle(radius=[dp(12)])
        self.bind(pos=self._layout, size=self._layout, texture_size=self._fit)

    def _fit(self, *_args: Any) -> None:
        self.size = self.texture_size

    def _layout(self, *_args: Any) -> None:
        self._shape.pos, self._shape.size = self.pos, self.size


class HiddenCorner(Widget):  # type: ignore[misc]
    """An invisible square that calls ``on_held`` after a long press (staff only; a tap does nothing)."""

    def __init__(self, on_held: Callable[[], None], hold_seconds: float = theme.CORNER_HOLD_SECONDS,
                 **kwargs: Any) -> None:
        super().__init__(size_hint=(None, None), size=(dp(theme.CORNER_DP), dp(theme.CORNER_DP)), **kwargs)
        self._on_held = on_held
        self._hold_seconds = hold_seconds
        self._timer: Any = None

    def on_touch_down(self, touch: Any) -> bool:
        if not self.collide_point(*touch.pos):
            return False
        self._cancel()
        self._timer = Clock.schedule_once(lambda _dt: self._on_held(), self._hold_seconds)
        touch.grab(self)
        return True

    def on_touch_up(self, touch: Any) -> bool:
        if touch.grab_current is self:
            touch.ungrab(self)
            self._cancel()
            return True
        return False

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class TouchArea(Widget):  # type: ignore[misc]
    """Invisible, as large as its parent: any touch on it calls ``on_touch``."""

    def __init__(self, on_touch: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._on_touch = on_touch

    def on_touch_down(self, touch: Any) -> bool:
        if not self.collide_point(*touch.pos):
            return False
        self._on_touch()
        return True
