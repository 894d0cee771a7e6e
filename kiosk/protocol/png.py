"""A PNG from another party, checked before anyone shows or keeps it: a picture of the
screen from a unit, a caller's photo on its way to the citizen's screen."""

from __future__ import annotations

import io
import struct
from typing import Final

from PIL import Image

from kiosk.protocol.errors import ProtocolError

__all__ = ["SIGNATURE", "check"]

SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"


def check(data: bytes, max_bytes: int, max_side: int) -> tuple[int, int]:
    """The width and height of the PNG ``data``; :class:`ProtocolError` saying what is wrong.

    The size in its header is checked before anything is unpacked, so a small file that
    claims a huge picture (a decompression bomb) is refused without unpacking it."""
    if len(data) > max_bytes:
        raise ProtocolError("oversized", f"picture of {len(data)} bytes exceeds {max_bytes}")
    if not data.startswith(SIGNATURE) or data[12:16] != b"IHDR" or len(data) < 33:
        raise ProtocolError("invalid", "the picture is not a PNG")
    width, height = struct.unpack(">II", data[16:24])
    if not (0 < width <= max_side and 0 < height <= max_side):
        raise ProtocolError("invalid", f"picture of {width}x{height} pixels: each side must be 1-{max_side}")
    try:
        with Image.open(io.BytesIO(data), formats=["PNG"]) as image:
            image.load()  # every chunk's checksum and the whole pixel stream
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ProtocolError("invalid", f"the picture does not decode: {exc}") from None
    return width, height
