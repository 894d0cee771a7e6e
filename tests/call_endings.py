"""What the caregiver's page says when a call ends, read from the one table it uses
(kiosk/server/static/call-endings.json), for tests that check the page's words."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

ENDINGS_FILE = Path(__file__).resolve().parents[1] / "kiosk" / "server" / "static" / "call-endings.json"
LANGUAGES = ("da", "en")


@cache
def endings() -> dict[str, Any]:
    table: dict[str, Any] = json.loads(ENDINGS_FILE.read_text(encoding="utf-8"))
    return table


def ending_text(lang: str, reason: str) -> str:
    """The page's ``#ended-reason`` for ``reason``: the headline, then what to do (as caregiver.js joins them)."""
    table = endings()[lang]
    advice = table["advice"].get(reason)
    headline: str = table["headlines"][reason]
    return f"{headline} {advice}" if advice else headline
