"""A virtual X screen (Xvfb) for the real Kivy window, one per test session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kiosk.ui import virtual_display

SCREEN = (1280, 800)


@pytest.fixture(scope="session")
def xvfb_display() -> Iterator[str]:
    """The DISPLAY of a fresh Xvfb (no TCP, its own number), stopped at the end."""
    try:
        with virtual_display.xvfb(*SCREEN) as (display, _proc):
            yield display
    except virtual_display.XvfbError as exc:
        pytest.fail(str(exc))


def kivy_env(display: str, home: Path) -> dict[str, str]:
    """The environment of a Kivy process under ``display``, importing this worktree's code."""
    return {**virtual_display.kivy_env(display, home), "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
