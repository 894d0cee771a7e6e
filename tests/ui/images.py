"""Measuring screenshots: golden-image comparison, a colour's share of the screen, text contrast."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from PIL import Image, ImageChops

from kiosk.ui.theme import RGB, contrast

Box = tuple[int, int, int, int]  # left, top, right, bottom (PIL's, top-down)


def load(path: Path) -> Image.Image:
    return Image.open(path).convert("RGB")


def differing_share(actual: Image.Image, golden: Image.Image, mask: tuple[Box, ...] = (),
                    threshold: int = 48) -> float:
    """The share of pixels that differ by more than ``threshold`` in some channel, outside ``mask``."""
    assert actual.size == golden.size, f"size {actual.size} != golden {golden.size}"
    diff = ImageChops.difference(actual, golden)
    for box in mask:
        diff.paste((0, 0, 0), box)
    channels = diff.split()
    worst = ImageChops.lighter(ImageChops.lighter(channels[0], channels[1]), channels[2])
    over = worst.point(lambda v: 255 if v > threshold else 0)
    histogram = over.histogram()
    return histogram[255] / (actual.width * actual.height)


def colour_box(image: Image.Image, colour: tuple[int, int, int], tolerance: int = 6) -> Box | None:
    """The bounding box of the pixels of ``colour`` (a flat fill, like a button's)."""
    bands = [image.getchannel(i).point(lambda v, c=c: 255 if abs(v - c) <= tolerance else 0)
             for i, c in enumerate(colour)]
    both = ImageChops.multiply(ImageChops.multiply(bands[0], bands[1]), bands[2])
    return both.getbbox()


def label_contrast(image: Image.Image, box: Box) -> tuple[float, RGB, RGB]:
    """Contrast between the fill of ``box`` (its commonest colour) and its text (the commonest
    colour of the pixels farthest from the fill): measured, not taken from the theme."""
    region = image.crop(box)
    counts = Counter(region.getdata())
    fill = counts.most_common(1)[0][0]
    fill_rgb = tuple(c / 255 for c in fill)
    scored = sorted(((contrast(tuple(c / 255 for c in colour), fill_rgb), n, colour)
                     for colour, n in counts.items() if n >= 20), reverse=True)
    best, _n, text = scored[0]
    return best, fill_rgb, tuple(c / 255 for c in text)


def mean_luma(image: Image.Image, box: Box) -> float:
    gray = image.crop(box).convert("L")
    histogram = gray.histogram()
    return sum(i * n for i, n in enumerate(histogram)) / max(1, sum(histogram))
