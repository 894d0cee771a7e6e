"""A private virtual X screen (Xvfb) for the real Kivy window where no display exists.

The tests, the screen benchmark and ``make demo`` on a machine without a desktop all
start theirs here. A unit never does: its screen runs under the ``cage`` compositor.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["XvfbError", "kivy_env", "start_xvfb", "xvfb"]


class XvfbError(RuntimeError):
    """No virtual screen could be started; ``str`` says what to do."""


def start_xvfb(width: int = 1280, height: int = 800) -> tuple[str, subprocess.Popen[bytes]]:
    """A fresh Xvfb of ``width`` x ``height``: its DISPLAY (a free number Xvfb picks itself,
    so several run side by side) and its process, which the caller stops. No TCP."""
    if shutil.which("Xvfb") is None:
        raise XvfbError("Xvfb is missing: `make setup` installs it (Debian package xvfb)")
    read, write = os.pipe()
    proc = subprocess.Popen(["Xvfb", "-displayfd", str(write), "-screen", "0", f"{width}x{height}x24",
                             "-nolisten", "tcp", "-noreset"], pass_fds=(write,), stderr=subprocess.DEVNULL)
    os.close(write)
    with os.fdopen(read) as numbers:
        number = numbers.readline().strip()  # written once the screen is ready
    if not number:
        proc.kill()
        proc.wait()
        raise XvfbError("the virtual screen (Xvfb) did not start")
    return f":{number}", proc


@contextmanager
def xvfb(width: int = 1280, height: int = 800) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """:func:`start_xvfb` for the length of a ``with`` block."""
    display, proc = start_xvfb(width, height)
    try:
        yield display, proc
    finally:
        proc.terminate()
        proc.wait(10)


def kivy_env(display: str, home: Path) -> dict[str, str]:
    """The environment of a Kivy process on ``display``: its own KIVY_HOME, no argv parsing, no sound card."""
    home.mkdir(parents=True, exist_ok=True)
    return {**os.environ, "DISPLAY": display, "KIVY_HOME": str(home), "KIVY_NO_ARGS": "1", "SDL_AUDIODRIVER": "dummy"}
