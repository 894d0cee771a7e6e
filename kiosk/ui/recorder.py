"""Pictures of the screens as the citizen sees them, for ``make demo`` without a display.

``kiosk-ui --screenshots DIR`` writes one PNG each time the screen changes
(``01-ready.png``, ``02-ringing.png``, …). It is for demonstrations and development
only: a picture holds whatever the screen shows, so a unit never runs with it.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from kiosk.ui.screen_capture import redrawn

#: How often the recorder looks for a new screen: a screen change is rare and a
#: picture taken 0.1 s late shows the same thing.
POLL_SECONDS = 0.1


class ScreenRecorder:
    def __init__(self, out: Path) -> None:
        self.out = out
        self.count = 0

    async def run(self, app: Any, _session: Any) -> None:
        """Until cancelled: a picture of every new screen, after it was fully drawn."""
        from kivy.core.window import Window

        self.out.mkdir(parents=True, exist_ok=True)
        last: tuple[str, str | None] | None = None
        while True:
            await asyncio.sleep(POLL_SECONDS)
            shown = app.shown
            if shown is None or (shown.name, shown.call_id) == last:
                continue
            last = (shown.name, shown.call_id)
            if shown.name == "in-call":  # the picture is of the call: wait (bounded) for its video
                await _video_shown(app, shown.call_id)
            # Two swaps after the screen was built: a label draws its text on the frame
            # after the text is set, however slow the machine is.
            for _ in range(2):
                await redrawn(Window, timeout=None)
            self.count += 1
            path = self.out / f"{self.count:02d}-{shown.name}.png"
            written = Window.screenshot(name=str(path))
            if written:
                os.replace(written, path)  # Kivy adds a counter to the name


#: How long an in-call picture waits for the caller's video before it is taken anyway.
VIDEO_WAIT_SECONDS = 10.0


async def _video_shown(app: Any, call_id: str | None) -> None:
    for _ in range(int(VIDEO_WAIT_SECONDS / POLL_SECONDS)):
        video = getattr(getattr(app, "ctx", None), "video", None)
        shown = app.shown
        if video is None or shown is None or shown.call_id != call_id or video.frames_shown >= 10:
            return
        await asyncio.sleep(POLL_SECONDS)
