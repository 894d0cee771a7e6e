"""The full-screen Kivy app: draws each screen the session reports, turns presses into events.

Kivy runs on the same asyncio loop as the session (``App.async_run``), so the
agent socket, the call peers and the drawing share one thread, the main one:
decoded video frames reach :class:`~kiosk.ui.video.VideoView` there, with no
hand-over between threads. :func:`configure` sets the kiosk's Kivy settings
before the window exists; nothing in it depends on X11 or Wayland (SDL2 picks
the video driver: X11 under Xvfb in tests, Wayland under ``cage`` on a unit).
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("kiosk.ui")


def configure(size: tuple[int, int] | None, kivy_home: Path | None = None) -> None:
    """Kiosk settings, before Kivy opens its window: full screen, no cursor, no exit
    on Escape, no screensaver, and only the window's own touch input (one source:
    two would give doubled touches)."""
    os.environ.setdefault("KIVY_NO_ARGS", "1")
    os.environ.setdefault("KIVY_LOG_MODE", "PYTHON")  # our log handler only: one line per message, no colours
    # Kivy writes its config.ini under KIVY_HOME; one of our own (every setting that
    # matters is set below, each start) keeps ~/.kivy (with a catch-all touch entry) out.
    home = kivy_home or Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()) / f"kiosk-kivy-{os.getuid()}"
    os.environ.setdefault("KIVY_HOME", str(home))
    from kivy.config import Config

    Config.set("kivy", "log_level", "info")  # never debug: libraries log SDPs and addresses there
    Config.set("kivy", "exit_on_escape", "0")
    Config.set("kivy", "pause_on_minimize", "0")
    Config.set("graphics", "show_cursor", "0")
    Config.set("graphics", "allow_screensaver", "0")
    Config.set("graphics", "borderless", "1")
    Config.set("graphics", "resizable", "0")
    Config.set("graphics", "maxfps", "30")
    if size is not None:
        # Without a window manager (Xvfb), "auto" full screen keeps the config's size:
        # the given screen size is drawn whole.
        Config.set("graphics", "fullscreen", "0")
        Config.set("graphics", "width", str(size[0]))
        Config.set("graphics", "height", str(size[1]))
        Config.set("graphics", "position", "custom")
        Config.set("graphics", "left", "0")
        Config.set("graphics", "top", "0")
    else:
        Config.set("graphics", "fullscreen", "auto")
    for provider in list(Config.options("input")) if Config.has_section("input") else []:
        Config.remove_option("input", provider)  # no mouse, no probesysfs: SDL2's touch is the one source


def make_app(ctx_factory: Callable[[Callable[[Any], None]], Any]) -> Any:
    """The App class is made after :func:`configure` (importing Kivy's window opens it)."""
    from kivy.app import App
    from kivy.core.window import Window

    from kiosk.ui import controller as ui
    from kiosk.ui.screens import Context, build

    class KioskApp(App):  # type: ignore[misc]
        title = "Skærmbesøg"

        def __init__(self) -> None:
            super().__init__()
            self.ctx: Context = ctx_factory(self.post)
            self.post_event: Callable[[ui.Event], None] = lambda _event: None
            self.shown: ui.Screen | None = None
            self.screens_drawn = 0

        def build(self) -> Any:
            from kivy.uix.floatlayout import FloatLayout

            Window.bind(on_request_close=lambda *_args, **_kw: True)  # the window is never closed
            Window.bind(on_keyboard=self._keyboard)
            self.root_layer = FloatLayout()
            if self.shown is not None:
                self.show(self.shown)
            return self.root_layer

        def post(self, event: ui.Event) -> None:
            self.post_event(event)

        def show(self, shown: ui.Screen) -> None:
            """Draw ``shown`` (rebuilt whole: a screen change is rare and must be right)."""
            self.shown = shown
            layer = getattr(self, "root_layer", None)
            if layer is None:
                return  # before build(): drawn when the window exists
            layer.clear_widgets()
            layer.add_widget(build(shown, self.ctx))
            self.screens_drawn += 1

        def _keyboard(self, _window: Any, key: int, *_args: Any) -> bool:
            return key == 27  # Escape (and Android's back) do nothing

    return KioskApp()
