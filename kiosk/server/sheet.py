"""The printable sheet of a batch of provisioning files: one QR code and label per unit.

Each QR code holds the unit's whole provisioning file, so the flashing station can scan it
instead of copying files; the label says which unit of the batch it is and until when its
token works. The sheet holds secrets (unused tokens) until the units have enrolled.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import zxingcpp
from PIL import Image

if TYPE_CHECKING:
    from fpdf import FPDF

COLUMNS, ROWS = 2, 4  # labels on an A4 page
MAX_UNITS = 200  # labels on one sheet (a few ms a unit to make)
MARGIN_MM, QR_MM = 12.0, 48.0

LABELS = {
    "da": {"title": "Klargøringsark", "unit": "Enhed {n} af {total}", "expires": "Token udløber {when}",
           "secret": "Hemmeligt indtil enhederne er tilmeldt. Makuleres bagefter."},
    "en": {"title": "Provisioning sheet", "unit": "Unit {n} of {total}", "expires": "Token expires {when}",
           "secret": "Secret until the units have enrolled. Shred afterwards."},
}


def qr_image(content: str) -> Image.Image:
    """A QR code of ``content`` at error correction M, one pixel per module, with its quiet zone.

    ZXing's writer (C++): segno, which the screen uses for its one code, takes ~50 ms a code
    to choose the mask, which made a sheet of 200 units take 10 s."""
    image = zxingcpp.create_barcode(content, zxingcpp.BarcodeFormat.QRCode, ec_level="M").to_image()
    pixels = memoryview(image)  # type: ignore[arg-type]  # it has the buffer protocol; its stubs don't say so
    height, width = pixels.shape or (0, 0)
    return Image.frombytes("L", (width, height), pixels.tobytes()).convert("1")


def _draw_qr(pdf: FPDF, content: str, x: float, y: float) -> None:
    # a bilevel image the PDF scales without smoothing (/Interpolate is off by default)
    pdf.image(qr_image(content), x, y, QR_MM, QR_MM)


def render(files: list[tuple[str, str]], municipality: str, expires_at: float, language: str = "da") -> bytes:
    """A PDF with one QR code (the file's content) and label per provisioning file."""
    from fpdf import FPDF  # here: importing it takes a third of the CLI's start, which never makes a sheet

    words = LABELS.get(language, LABELS["da"])
    expires = time.strftime("%Y-%m-%d %H:%M", time.localtime(expires_at))
    pdf = FPDF(format="A4")
    pdf.set_auto_page_break(False)
    pdf.set_title(f"{words['title']} - {municipality}")
    cell_w = (210 - 2 * MARGIN_MM) / COLUMNS
    cell_h = (297 - 2 * MARGIN_MM - 12) / ROWS
    for i, (name, content) in enumerate(files):
        slot = i % (COLUMNS * ROWS)
        if slot == 0:
            pdf.add_page()
            pdf.set_font("Helvetica", "B", 13)
            pdf.set_xy(MARGIN_MM, MARGIN_MM - 4)
            pdf.cell(0, 6, f"{words['title']} - {municipality}")
            pdf.set_font("Helvetica", "", 8)
            pdf.set_xy(MARGIN_MM, MARGIN_MM + 2)
            pdf.cell(0, 4, words["secret"])
        x = MARGIN_MM + (slot % COLUMNS) * cell_w
        y = MARGIN_MM + 10 + (slot // COLUMNS) * cell_h
        pdf.rect(x, y, cell_w - 2, cell_h - 2)
        _draw_qr(pdf, content, x + 2, y + 2)
        pdf.set_xy(x + QR_MM + 4, y + 6)
        pdf.set_font("Helvetica", "B", 11)
        pdf.multi_cell(cell_w - QR_MM - 8, 5, words["unit"].format(n=i + 1, total=len(files)))
        pdf.set_font("Helvetica", "", 8)
        pdf.set_x(x + QR_MM + 4)
        pdf.multi_cell(cell_w - QR_MM - 8, 4, f"{name}\n{words['expires'].format(when=expires)}")
    return bytes(pdf.output())
