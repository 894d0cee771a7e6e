"""A picture of the screen fits the cap: whole when it can, halved when it must, never cut off."""

from __future__ import annotations

import io
import random

import pytest
from PIL import Image

from kiosk.protocol import messages as m
from kiosk.protocol.screenshot import check_png
from kiosk.ui.screen_capture import CaptureError, fit_png


def test_a_calm_screen_is_sent_whole() -> None:
    screen = Image.new("RGB", (1280, 800), (250, 250, 245))
    data = fit_png(screen)
    assert check_png(data) == (1280, 800)


def test_a_detailed_screen_is_halved_until_it_fits() -> None:
    rng = random.Random(3)
    screen = Image.frombytes("RGB", (1280, 800), rng.randbytes(1280 * 800 * 3))
    data = fit_png(screen)
    width, height = check_png(data)
    assert len(data) <= m.MAX_SCREENSHOT_PNG_BYTES
    assert (width, height) in ((320, 200), (160, 100)) and width * 800 == height * 1280  # same proportions
    assert Image.open(io.BytesIO(data)).size == (width, height)


def test_a_screen_larger_than_the_largest_side_is_halved() -> None:
    assert check_png(fit_png(Image.new("RGB", (3840, 2160)))) == (1920, 1080)


def test_a_screen_that_fits_at_no_size_is_an_error_not_a_cut_picture() -> None:
    screen = Image.frombytes("RGB", (640, 400), random.Random(5).randbytes(640 * 400 * 3))
    with pytest.raises(CaptureError, match="too detailed"):
        fit_png(screen, limit=1000)
