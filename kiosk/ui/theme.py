"""Colours and sizes of the citizen's screen, chosen for old eyes at two metres.

Every colour pair used for text is at least 7:1 (WCAG AAA), checked by
:func:`contrast` in the tests and measured again from screenshots. Nothing is
said by colour alone: every button says what it does in words.
"""

from __future__ import annotations

from typing import Final

RGB = tuple[float, float, float]


def hex_rgb(text: str) -> RGB:
    value = text.lstrip("#")
    return (int(value[0:2], 16) / 255, int(value[2:4], 16) / 255, int(value[4:6], 16) / 255)


def luminance(rgb: RGB) -> float:
    """WCAG 2 relative luminance of an sRGB colour (0..1 channels)."""

    def linear(c: float) -> float:
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (linear(c) for c in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: RGB, b: RGB) -> float:
    light, dark = sorted((luminance(a), luminance(b)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


BACKGROUND: Final = hex_rgb("#0b1a2b")  # deep navy: calm, and white on it is ~17:1
TEXT: Final = hex_rgb("#ffffff")
SOFT_TEXT: Final = hex_rgb("#d6e2ee")  # secondary lines, still > 12:1 on the background
ANSWER: Final = hex_rgb("#0d5c1e")  # dark green, white text ~8:1
HANG_UP: Final = hex_rgb("#a00d0d")  # dark red, white text ~7.4:1
CONTROL: Final = hex_rgb("#233a57")  # the other buttons: navy, white text ~11:1
CONTROL_ON: Final = hex_rgb("#f2c230")  # a control that is "off" (camera/sound off): dark text on amber
DARK_TEXT: Final = hex_rgb("#0b1a2b")
CAMERA_LIVE: Final = hex_rgb("#a00d0d")  # behind "kameraet er tændt": the same red, white text
ASLEEP: Final = hex_rgb("#000000")

#: Text sizes in sp (multiplied by the font-scale setting) and spacing in dp.
CLOCK_SP: Final = 150
TITLE_SP: Final = 56
BODY_SP: Final = 38
BUTTON_SP: Final = 44
SMALL_SP: Final = 28
PAD_DP: Final = 24
CORNER_DP: Final = 72  # the hidden long-press corner for staff
CORNER_HOLD_SECONDS: Final = 3.0
