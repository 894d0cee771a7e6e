"""The printable sheet of a batch of provisioning files: one QR code and label per unit.

Each QR code holds the unit's whole provisioning file, so the flashing station can scan it
instead of copying files; the label says which unit of the batch it is and until when its
token works. The sheet holds secrets (unused tokens) until the units have enrolled.
"""

from __future__ import annotations

import io
import time

import segno
from fpdf import FPDF

COLUMNS, ROWS = 2, 4  # labels on an A4 page
MARGIN_MM, QR_MM = 12.0, 48.0

LABELS = {
    "da": {"title": "Klargøringsark", "unit": "Enhed {n} af {total}", "expires": "Token udløber {when}",
           "secret": "Hemmeligt indtil enhederne er tilmeldt. Makuleres bagefter."},
    "en": {"title": "Provisioning sheet", "unit": "Unit {n} of {total}", "expires": "Token expires {when}",
           "secret": "Secret until the units have enrolled. Shred afterwards."},
}


def render(files: list[tuple[str, str]], municipality: str, expires_at: float, language: str = "da") -> bytes:
    """A PDF with one QR code (the file's content) and label per provisioning file."""
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
        png = io.BytesIO()
        segno.make(content, error="m", micro=False).save(png, kind="png", scale=4, border=2)
        png.seek(0)
        pdf.image(png, x=x + 2, y=y + 2, w=QR_MM, h=QR_MM)
        pdf.set_xy(x + QR_MM + 4, y + 6)
        pdf.set_font("Helvetica", "B", 11)
        pdf.multi_cell(cell_w - QR_MM - 8, 5, words["unit"].format(n=i + 1, total=len(files)))
        pdf.set_font("Helvetica", "", 8)
        pdf.set_x(x + QR_MM + 4)
        pdf.multi_cell(cell_w - QR_MM - 8, 4, f"{name}\n{words['expires'].format(when=expires)}")
    return bytes(pdf.output())
