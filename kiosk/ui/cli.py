"""``kiosk-ui``: the citizen's screen, full screen (Kivy), or headless for tests and ``make demo``.

    kiosk-ui --state DIR [--size WIDTHxHEIGHT] [--language da|en] [--demo-media]
             [--auto-answer-after [SECONDS]] [--hang-up-after SECONDS] [--screenshots DIR]
    kiosk-ui --state DIR --headless [--auto-answer-after [SECONDS]]
             [--hang-up-after SECONDS] [--demo-media]

With a screen, it opens a full-screen window (SDL2: X11 or Wayland, whichever
the session has) and shows what the same controller decides; ``--size`` gives
the screen's size where no window manager makes the window full screen (Xvfb).
Settings come from ``DIR/ui.json`` (see :mod:`kiosk.ui.settings`).

Headless, it connects to the agent's socket in ``DIR``, rings when a call
comes, answers by itself only if ``--auto-answer-after`` is given (at once
if given without a value; never without it, so an unanswered call can be
tested too), hangs up by itself ``--hang-up-after`` seconds after media
connected, and prints every screen change as one JSON line on stdout, e.g.
``{"screen": "ringing", "call_id": "…", "caller": "Anne", "role":
"caregiver"}``. Those lines never carry the citizen's name or any SDP;
neither do the logs on stderr. SIGTERM or Ctrl-C ends a call in
progress, reports its quality and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import msgspec

import kiosk
from kiosk.protocol.agent_socket import socket_path
from kiosk.ui import controller as ui
from kiosk.ui import memory
from kiosk.ui.agent_client import AgentClient
from kiosk.ui.buttons import InputWatcher
from kiosk.ui.call_peer import MediaOpener, VideoSink, open_device_media
from kiosk.ui.controller import Screen
from kiosk.ui.i18n import LANGUAGES
from kiosk.ui.recorder import ScreenRecorder
from kiosk.ui.screen_capture import capture_window_png
from kiosk.ui.session import Effects, UiSession, local_wall_clock
from kiosk.ui.settings import SettingsWatch, button_map
from kiosk.ui.sound import Speaker

log = logging.getLogger("kiosk.ui")



def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a size is WIDTHxHEIGHT, like 1280x800; got {text!r}") from None
    if not (320 <= width <= 8192 and 240 <= height <= 8192):
        raise argparse.ArgumentTypeError(f"screen size out of range: {text}")
    return width, height


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 <= value < 86400:
        raise argparse.ArgumentTypeError(f"seconds must be between 0 and 86400, got {text}")
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kiosk-ui", description="Skærmbesøg kiosk: the citizen's screen")
    p.add_argument("--version", action="version", version=kiosk.__version__)
    p.add_argument("--state", type=Path, required=True, metavar="DIR",
                   help="the agent's state directory (its socket is DIR/agent.sock)")
    p.add_argument("--headless", action="store_true",
                   help="no screen: print each screen change as a JSON line on stdout")
    p.add_argument("--auto-answer-after", type=_seconds, metavar="SECONDS", nargs="?", const=0.0,
                   help="answer a ringing call after SECONDS (given alone: at once); without it, never answer")
    p.add_argument("--hang-up-after", type=_seconds, metavar="SECONDS",
                   help="hang up SECONDS after the call connected")
    p.add_argument("--size", type=_size, metavar="WIDTHxHEIGHT",
                   help="the window's size where no window manager makes it full screen (Xvfb)")
    p.add_argument("--language", choices=LANGUAGES, help="the screen's language (default: ui.json's, else da)")
    p.add_argument("--demo-media", action="store_true",
                   help="send a test pattern and tone when the unit has no camera/microphone")
    p.add_argument("--screenshots", type=Path, metavar="DIR",
                   help="write a PNG of each new screen into DIR (demonstrations only: it holds what the screen shows)")
    p.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    return p


def _logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    quiet_libraries(level)


def quiet_libraries(level: str = "INFO") -> None:
    """aiortc and aioice log whole SDPs and candidate addresses at DEBUG; never let them through."""
    for noisy in ("aiortc", "aioice", "libav"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))


class Autopilot:
    """Plays the citizen's presses by the clock (tests and ``make demo``): answer a ring
    after ``auto_answer_after`` seconds, hang up ``hang_up_after`` seconds into a call."""

    def __init__(self, auto_answer_after: float | None, hang_up_after: float | None) -> None:
        self.auto_answer_after = auto_answer_after
        self.hang_up_after = hang_up_after
        self.session: UiSession | None = None
        self._timers: list[asyncio.TimerHandle] = []

    def show(self, screen: Screen) -> None:
        session = self.session
        if session is None or screen.call_id is None:
            return
        loop = asyncio.get_running_loop()
        call_id = screen.call_id
        if screen.name == "ringing" and self.auto_answer_after is not None:
            self._timers.append(loop.call_later(self.auto_answer_after, session.press_answer, call_id))
        elif screen.name == "in-call" and self.hang_up_after is not None:
            self._timers.append(loop.call_later(self.hang_up_after, session.press_hang_up, call_id))

    def cancel(self) -> None:
        for timer in self._timers:
            timer.cancel()


class HeadlessScreen(Autopilot):
    """Prints screens as JSON lines (never personal data), and plays the presses."""

    def show(self, screen: Screen) -> None:
        print(json.dumps(screen.log_record(), ensure_ascii=False), flush=True)
        super().show(screen)


async def run_headless(state: Path, headless: HeadlessScreen, *, demo_media: bool,
                       on_screen: Callable[[Screen], None] | None = None,
                       on_video_frame: VideoSink | None = None) -> int:
    """The headless screen until SIGINT or SIGTERM. ``on_screen`` replaces printing the
    screens (the call benchmark's probe screen adds its clock readings that way)."""
    watch = SettingsWatch(state)
    session = UiSession(
        AgentClient(socket_path(state)),
        lambda: open_device_media(demo=demo_media),
        on_screen=on_screen or headless.show,
        on_video_frame=on_video_frame,
        settings=watch.load(),
        settings_changed=watch.changed,
    )
    headless.session = session
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, session.stop)
    try:
        await session.run()
    finally:
        headless.cancel()
    log.info("stopped")
    return 0


async def run_screen(args: argparse.Namespace, *,
                     started: Callable[[Any, UiSession], Awaitable[None]] | None = None,
                     wall_clock: Callable[[], float] | None = None,
                     open_media: MediaOpener | None = None,
                     serial: str | None = None,
                     clock: Callable[[], float] | None = None) -> int:
    """The full-screen app and the session on one loop, until SIGTERM (or ``started`` returns).

    ``started(app, session)`` runs beside them (tests drive the screen with it);
    ``wall_clock`` replaces ``time.time``, ``clock`` the session's monotonic clock (time travel
    in tests) and ``serial`` the hardware's (fixed in screenshot tests)."""
    from kiosk.ui.app import configure, make_app

    configure(args.size)
    quiet_libraries(args.log_level)  # again: Kivy's logger took over the root logger
    state: Path = args.state
    watch = SettingsWatch(state, serial)
    settings = watch.load()
    if args.language:
        settings = msgspec.structs.replace(settings, language=args.language)

    def context(post: Callable[[ui.Event], None]) -> Any:
        from kiosk.ui.screens import Context
        from kiosk.ui.video import VideoView
        from kiosk.ui.widgets import Sizes

        return Context(post, language=settings.language, sizes=Sizes(settings.font_scale), video=VideoView(),
                       self_view=VideoView(), version=kiosk.__version__, wall_clock=wall_clock or time.time)

    app = make_app(context)

    def shower(view: str) -> Callable[[Any], None]:
        def show(frame: Any) -> None:
            target = getattr(getattr(app, "ctx", None), view, None)
            if target is not None:
                target.show(frame)

        return show

    def awake() -> bool:  # told to the server with each heartbeat: "was the screen on?"
        shown = app.shown
        return shown is None or not shown.asleep

    autopilot = Autopilot(args.auto_answer_after, args.hang_up_after)

    def show(screen: Screen) -> None:
        log.info("screen %s", json.dumps(screen.log_record(), ensure_ascii=False))  # nothing personal in it
        wanted = session.state.settings
        if (wanted.language, wanted.font_scale) != (app.ctx.language, app.ctx.sizes.font_scale):
            from kiosk.ui.widgets import Sizes  # staff changed them: the words and sizes follow at once

            app.ctx = replace(app.ctx, language=wanted.language, sizes=Sizes(wanted.font_scale))
        app.show(screen)
        autopilot.show(screen)

    speaker = Speaker(settings.volume, settings.language)
    session = UiSession(AgentClient(socket_path(state), screen_awake=awake),
                        open_media or (lambda: open_device_media(demo=args.demo_media)),
                        on_screen=show, on_video_frame=shower("video"), on_self_frame=shower("self_view"),
                        audio_sink=speaker.new_sink, effects=speaker.effects(Effects()), settings=settings,
                        read_wall_clock=(lambda: local_wall_clock(wall_clock())) if wall_clock else local_wall_clock,
                        clock=clock or time.monotonic, capture=capture_window_png, settings_changed=watch.changed)
    app.post_event = session.post
    autopilot.session = session
    if args.screenshots is not None and started is None:
        started = ScreenRecorder(args.screenshots).run
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, session.stop)
    screen_task = asyncio.ensure_future(app.async_run(async_lib="asyncio"))
    session_task = asyncio.ensure_future(session.run())
    buttons = asyncio.ensure_future(InputWatcher(session.post, button_map(settings)).run())  # keyboards grabbed
    driver = asyncio.ensure_future(started(app, session)) if started is not None else None
    waiting: set[asyncio.Future[Any]] = {screen_task, session_task} | ({driver} if driver else set())
    done, _pending = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    autopilot.cancel()
    session.stop()
    await session_task
    buttons.cancel()
    await asyncio.gather(buttons, return_exceptions=True)
    app.stop()
    await screen_task
    if driver is not None and driver in done:
        driver.result()  # a driver's failure is the run's
    log.info("stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    memory.limit_arenas()  # before any thread: asyncio's, PipeWire's, a call's
    args = _parser().parse_args(argv)
    _logging(args.log_level)
    if args.headless:
        headless = HeadlessScreen(args.auto_answer_after, args.hang_up_after)
        return asyncio.run(run_headless(args.state, headless, demo_media=args.demo_media))
    return asyncio.run(run_screen(args))


if __name__ == "__main__":
    sys.exit(main())
