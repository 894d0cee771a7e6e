"""A virtual X screen (Xvfb) for the real Kivy window, one per test session."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

SCREEN = (1280, 800)


@pytest.fixture(scope="session")
def xvfb_display() -> Iterator[str]:
    """The DISPLAY of a fresh Xvfb (no TCP, its own number), stopped at the end."""
    if shutil.which("Xvfb") is None:
        pytest.fail("Xvfb is missing: run `make setup` (scripts/setup.sh installs xvfb)")
    read, write = os.pipe()
    proc = subprocess.Popen(["Xvfb", "-displayfd", str(write), "-screen", "0", f"{SCREEN[0]}x{SCREEN[1]}x24",
                             "-nolisten", "tcp", "-noreset"], pass_fds=(write,), stderr=subprocess.DEVNULL)
    os.close(write)
    with os.fdopen(read) as numbers:
        number = numbers.readline().strip()
    if not number:
        proc.kill()
        pytest.fail("Xvfb did not start")
    try:
        yield f":{number}"
    finally:
        proc.terminate()
        proc.wait(10)


def kivy_env(display: str, home: Path) -> dict[str, str]:
    """The environment of a Kivy process under ``display``: its own KIVY_HOME, no argv parsing."""
    home.mkdir(parents=True, exist_ok=True)
    return {**os.environ, "DISPLAY": display, "KIVY_HOME": str(home), "KIVY_NO_ARGS": "1",
            "SDL_AUDIODRIVER": "dummy", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
