"""A picture of the screen as the citizen sees it, for support's look (after the citizen's yes).

The picture is read from the real window's framebuffer after the screen has been drawn
again (so the consent question the citizen just answered is gone from it), and encoded
as a PNG in memory: it is never written to disk and never logged. A screen too detailed
for :data:`~kiosk.protocol.messages.MAX_SCREENSHOT_PNG_BYTES` is sent at half the size
(and half again), never cut off.
"""

from __future__ import annotations

import asyncio
import io
from typing import Any, Final

from PIL import Image

from kiosk.protocol import messages as m

#: Below this width the picture would no longer show what support needs to see.
MIN_WIDTH: Final = 160
#: How long a redraw may take on a loaded unit before the picture is given up.
REDRAW_TIMEOUT: Final = 10.0


class CaptureError(Exception):
    """The picture could not be taken; ``str`` says why, for support."""


def fit_png(image: Image.Image, limit: int = m.MAX_SCREENSHOT_PNG_BYTES) -> bytes:
    """``image`` as a PNG of at most ``limit`` bytes: whole if it fits, else halved until it does
    (a screen wider or higher than :data:`~kiosk.protocol.messages.MAX_SCREENSHOT_SIDE` is halved first)."""
    while max(image.size) > m.MAX_SCREENSHOT_SIDE:
        image = image.reduce(2)
    while True:
        out = io.BytesIO()
        image.save(out, format="PNG", optimize=False, compress_level=9)
        if out.tell() <= limit:
            return out.getvalue()
        if image.width // 2 < MIN_WIDTH:
            raise CaptureError(f"the screen is too detailed for a picture of at most {limit} bytes")
        image = image.reduce(2)


async def redrawn(window: Any, timeout: float | None = REDRAW_TIMEOUT) -> None:
    """Ask for a redraw of the whole window and wait until it has been swapped to the screen."""
    done = asyncio.Event()

    def flipped(*_args: Any) -> None:
        done.set()

    window.bind(on_flip=flipped)
    try:
        window.canvas.ask_update()
        await asyncio.wait_for(done.wait(), timeout)
    finally:
        window.unbind(on_flip=flipped)


async def capture_window_png() -> bytes:
    """The Kivy window as it shows now, as a PNG (see :func:`fit_png`). Runs on Kivy's thread (the loop's)."""
    from kivy.core.window import Window
    from kivy.graphics.opengl import GL_RGBA, GL_UNSIGNED_BYTE, glReadPixels

    try:
        # Two swaps: a label draws its text on the frame after its text is set.
        for _ in range(2):
            await redrawn(Window)
    except TimeoutError:
        raise CaptureError(f"the screen was not redrawn within {REDRAW_TIMEOUT:.0f} s") from None
    width, height = (int(side) for side in Window.size)
    pixels = glReadPixels(0, 0, width, height, GL_RGBA, GL_UNSIGNED_BYTE)
    if len(pixels) != width * height * 4:
        raise CaptureError(f"the framebuffer gave {len(pixels)} bytes for {width}x{height} pixels")
    # OpenGL's rows run bottom to top; the alpha channel says nothing on a screen.
    image = Image.frombytes("RGBA", (width, height), pixels).transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    return await asyncio.to_thread(fit_png, image.convert("RGB"))
