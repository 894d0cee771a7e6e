"""Staff photos made small, upright and safe on the way in; anything else refused with a reason."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image, ImageDraw

from kiosk.protocol import messages as m
from kiosk.protocol import png
from kiosk.server import photos


def portrait(width: int = 900, height: int = 1200) -> Image.Image:
    """A face-like picture: warm skin on blue, dark eyes in its upper half."""
    image = Image.new("RGB", (width, height), (40, 90, 160))
    draw = ImageDraw.Draw(image)
    draw.ellipse((width * 0.2, height * 0.15, width * 0.8, height * 0.75), fill=(230, 180, 150))
    for x in (0.38, 0.62):
        draw.ellipse((width * (x - 0.04), height * 0.35, width * (x + 0.04), height * 0.41), fill=(30, 30, 30))
    return image


def encoded(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **kwargs)
    return out.getvalue()


def test_a_phone_photo_becomes_a_small_upright_png_the_unit_accepts() -> None:
    upright = portrait()
    # A phone stores it sideways and says so in its EXIF orientation (6: turn it right).
    sideways = upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    made = photos.normalize(encoded(sideways, "JPEG", quality=92, exif=exif))
    width, height = png.check(made, m.MAX_CALLER_PHOTO_BYTES, m.CALLER_PHOTO_SIDE)
    assert (width, height) == (180, 240)  # upright, the long side at most CALLER_PHOTO_SIDE
    shown = Image.open(io.BytesIO(made)).convert("RGB")
    eye, forehead = shown.getpixel((round(width * 0.38), round(height * 0.38))), shown.getpixel((width // 2, 60))
    assert sum(eye) < 200 < sum(forehead), "the photo is not upright"  # type: ignore[arg-type]
    assert photos.normalize(encoded(upright, "PNG")) and photos.normalize(encoded(upright, "WEBP"))


@pytest.mark.parametrize(("data", "words"), [
    (b"%PDF-1.4 not a photo", "not a PNG, JPEG or WebP"),
    (encoded(portrait(), "GIF"), "not a PNG, JPEG or WebP"),
    (encoded(portrait(), "JPEG")[:400], "not a PNG, JPEG or WebP"),  # cut off
    (b"\0" * (photos.MAX_UPLOAD_BYTES + 1), "at most"),
])
def test_what_is_not_a_usable_photo_is_refused_with_a_reason(data: bytes, words: str) -> None:
    with pytest.raises(photos.PhotoError, match=words):
        photos.normalize(data)


def test_a_small_file_claiming_a_huge_picture_is_refused_unread() -> None:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    bomb = png.SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", 50000, 50000, 8, 2, 0, 0, 0)) \
        + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b"")
    with pytest.raises(photos.PhotoError, match=r"50000x50000|decompression bomb"):
        photos.normalize(bomb)
