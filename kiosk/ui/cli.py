"""``kiosk-ui``: the citizen's screen. Headless for now (tests, ``make demo``); Kivy later.

    kiosk-ui --state DIR --headless [--auto-answer-after [SECONDS]]
             [--hang-up-after SECONDS] [--demo-media]

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
from collections.abc import Callable
from pathlib import Path

import kiosk
from kiosk.protocol.agent_socket import socket_path
from kiosk.ui.agent_client import AgentClient
from kiosk.ui.call_peer import VideoSink, open_device_media
from kiosk.ui.controller import Screen
from kiosk.ui.session import UiSession

log = logging.getLogger("kiosk.ui")

NO_KIVY_YET = (
    "kiosk-ui: the full-screen Kivy interface arrives in a later issue. "
    "Run `kiosk-ui --state DIR --headless` for the headless device UI."
)


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
    p.add_argument("--demo-media", action="store_true",
                   help="send a test pattern and tone when the unit has no camera/microphone")
    p.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    return p


def _logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    # aiortc and aioice log whole SDPs and candidate addresses at DEBUG; never let them through.
    for noisy in ("aiortc", "aioice", "libav"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))


class HeadlessScreen:
    """Prints screens as JSON lines and plays the citizen's presses by the clock."""

    def __init__(self, auto_answer_after: float | None, hang_up_after: float | None) -> None:
        self.auto_answer_after = auto_answer_after
        self.hang_up_after = hang_up_after
        self.session: UiSession | None = None
        self._timers: list[asyncio.TimerHandle] = []

    def show(self, screen: Screen) -> None:
        print(json.dumps(screen.log_record(), ensure_ascii=False), flush=True)
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


async def run_headless(state: Path, headless: HeadlessScreen, *, demo_media: bool,
                       on_screen: Callable[[Screen], None] | None = None,
                       on_video_frame: VideoSink | None = None) -> int:
    """The headless screen until SIGINT or SIGTERM. ``on_screen`` replaces printing the
    screens (the call benchmark's probe screen adds its clock readings that way)."""
    session = UiSession(
        AgentClient(socket_path(state)),
        lambda: open_device_media(demo=demo_media),
        on_screen=on_screen or headless.show,
        on_video_frame=on_video_frame,
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


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not args.headless:
        print(NO_KIVY_YET, file=sys.stderr)
        return 2
    _logging(args.log_level)
    headless = HeadlessScreen(args.auto_answer_after, args.hang_up_after)
    return asyncio.run(run_headless(args.state, headless, demo_media=args.demo_media))


if __name__ == "__main__":
    sys.exit(main())
