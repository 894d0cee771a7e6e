"""Staff photos for the citizen's ringing screen: what staff give, made small, safe and uniform.

Whatever image a person uploads (PNG, JPEG or WebP from a phone, at most
:data:`MAX_UPLOAD_BYTES`) is checked before it is decoded (its stated size first: no
decompression bombs), turned upright, made at most
:data:`~kiosk.protocol.messages.CALLER_PHOTO_SIDE` pixels on its long side and stored as a
PNG of at most :data:`~kiosk.protocol.messages.MAX_CALLER_PHOTO_BYTES`, which is what
travels with each call. The unit checks it again before it shows it.
"""

from __future__ import annotations

import io
from typing import Final

from PIL import Image, ImageOps

from kiosk.protocol import messages as m
from kiosk.protocol import png

MAX_UPLOAD_BYTES: Final = 5 * 1024 * 1024
MAX_UPLOAD_SIDE: Final = 8000
FORMATS: Final = ["PNG", "JPEG", "WEBP"]


class PhotoError(ValueError):
    """Not a usable photo; ``str`` says why, for the person who gave it."""


def normalize(data: bytes) -> bytes:
    """The photo as the unit gets it: a small PNG, or :class:`PhotoError`."""
    if len(data) > MAX_UPLOAD_BYTES:
        raise PhotoError(f"the photo is {len(data)} bytes; at most {MAX_UPLOAD_BYTES} are taken")
    try:
        with Image.open(io.BytesIO(data), formats=FORMATS) as image:
            if max(image.size) > MAX_UPLOAD_SIDE:  # read from the header: nothing unpacked yet
                raise PhotoError(f"the photo is {image.width}x{image.height} pixels; at most "
                                 f"{MAX_UPLOAD_SIDE} on a side are taken")
            image.draft("RGB", (m.CALLER_PHOTO_SIDE * 2, m.CALLER_PHOTO_SIDE * 2))  # JPEG: decode small
            upright = ImageOps.exif_transpose(image).convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        if isinstance(exc, PhotoError):
            raise
        raise PhotoError(f"not a PNG, JPEG or WebP photo that can be read: {exc}") from None
    upright.thumbnail((m.CALLER_PHOTO_SIDE, m.CALLER_PHOTO_SIDE), Image.Resampling.LANCZOS)
    # 256 colours are plenty for a face at this size, and keep the PNG small.
    small = upright.quantize(colors=256, dither=Image.Dither.FLOYDSTEINBERG)
    out = io.BytesIO()
    small.save(out, format="PNG", optimize=True)
    made = out.getvalue()
    png.check(made, m.MAX_CALLER_PHOTO_BYTES, m.CALLER_PHOTO_SIDE)  # what the unit will insist on
    return made
