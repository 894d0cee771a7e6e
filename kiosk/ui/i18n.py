"""The screen's words in the citizen's language: gettext catalogs, Danish by default.

The source strings are English; ``kiosk/ui/locale/<lang>/LC_MESSAGES/kiosk.po``
translates them. Setup compiles each ``.po`` into its ``.mo`` (``python -m
kiosk.ui.i18n``, with Babel); a tree without the compiled file still shows the
right words, compiled in memory from the ``.po``. Dates and weekday names come
from Babel's CLDR data, so "mandag 30. november" is the locale's own.
"""

from __future__ import annotations

import datetime
import gettext
import io
import logging
import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Final

from babel.dates import format_date
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

log = logging.getLogger("kiosk.ui")

LOCALE_DIR: Final = Path(__file__).parent / "locale"
DOMAIN: Final = "kiosk"
LANGUAGES: Final = ("da", "en")
DEFAULT_LANGUAGE: Final = "da"

Translate = Callable[[str], str]

#: Roles the server may send as words of its own; shown and spoken in the citizen's language.
ROLE_WORDS: Final = ("caregiver", "nurse", "support")


@cache
def catalog(language: str) -> gettext.NullTranslations:
    """The catalog for ``language`` (English, the source language, needs none)."""
    if language not in LANGUAGES:
        log.warning("no catalog for language %r; using %s", language, DEFAULT_LANGUAGE)
        language = DEFAULT_LANGUAGE
    if language == "en":
        return gettext.NullTranslations()
    folder = LOCALE_DIR / language / "LC_MESSAGES"
    compiled = folder / f"{DOMAIN}.mo"
    if compiled.exists():
        with compiled.open("rb") as mo:
            return gettext.GNUTranslations(mo)
    return gettext.GNUTranslations(io.BytesIO(_compile(folder / f"{DOMAIN}.po")))


def translator(language: str) -> Translate:
    return catalog(language).gettext


def role_words(role: str, language: str) -> str:
    """The caller's role in the citizen's language ("caregiver" -> "hjemmeplejen"); other roles as given."""
    return translator(language)(role) if role in ROLE_WORDS else role


def long_date(day: datetime.date, language: str) -> str:
    """ "mandag 30. november" / "Monday 30 November"."""
    pattern = "EEEE d. MMMM" if language == "da" else "EEEE d MMMM"
    return format_date(day, pattern, locale=language if language in LANGUAGES else DEFAULT_LANGUAGE)


def _compile(po_path: Path) -> bytes:
    with po_path.open("rb") as po:
        messages = read_po(po)
    out = io.BytesIO()
    write_mo(out, messages)
    return out.getvalue()


def compile_all() -> list[Path]:
    """Write every ``.mo`` next to its ``.po`` (run by setup; the ``.mo`` files stay out of git)."""
    written = []
    for po_path in sorted(LOCALE_DIR.glob(f"*/LC_MESSAGES/{DOMAIN}.po")):
        mo_path = po_path.with_suffix(".mo")
        mo_path.write_bytes(_compile(po_path))
        written.append(mo_path)
    return written


if __name__ == "__main__":
    for path in compile_all():
        print(f"compiled {path}", file=sys.stderr)
