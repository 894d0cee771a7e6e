"""The screen's words, settings and Wi-Fi list: catalogs complete, bad settings refused clearly."""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_file
from babel.messages.pofile import read_po
from evdev import ecodes

from kiosk.ui import i18n
from kiosk.ui.buttons import ButtonMap
from kiosk.ui.controller import Settings
from kiosk.ui.network import WifiNetwork, parse_scan, split_terse
from kiosk.ui.settings import button_map, load_settings, serial_number

UI = Path(i18n.__file__).parent


def source_strings() -> set[str]:
    found = set(i18n.ROLE_WORDS)
    for module in ("screens.py", "network.py"):
        for _line, message, _comments, _context in extract_from_file("python", UI / module, keywords={"_": None}):
            found.add(singular(message))
    return found


def test_every_word_on_screen_has_its_danish_translation_with_the_same_placeholders() -> None:
    with (i18n.LOCALE_DIR / "da" / "LC_MESSAGES" / "kiosk.po").open("rb") as po:
        catalog = read_po(po)
    translated = {singular(message.id): singular(message.string)
                  for message in catalog if message.id and message.string}
    missing = source_strings() - translated.keys()
    assert not missing, f"no Danish for: {sorted(missing)}"
    for source, danish in translated.items():
        assert sorted(_placeholders(source)) == sorted(_placeholders(danish)), source


def singular(text: str | tuple[str, ...] | list[str]) -> str:
    """A catalog entry's text, or its singular form where it has plurals."""
    return text if isinstance(text, str) else text[0]


def _placeholders(text: str) -> list[str]:
    import string

    return [name for _lit, name, _spec, _conv in string.Formatter().parse(text) if name]


def test_danish_is_the_default_english_is_available_and_dates_are_the_locales_own() -> None:
    da, en = i18n.translator("da"), i18n.translator("en")
    assert da("Press here to answer") == "Tryk her for at svare"
    assert en("Press here to answer") == "Press here to answer"
    assert i18n.translator("sv")("Hang up") == "Læg på"  # an unknown language falls back to Danish
    day = datetime.date(2026, 11, 30)
    assert i18n.long_date(day, "da") == "mandag 30. november"
    assert i18n.long_date(day, "en") == "Monday 30 November"


def test_setup_compiles_the_catalogs_and_the_compiled_one_is_used(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "kiosk.ui.i18n"], capture_output=True, text=True, check=True)
    mo = i18n.LOCALE_DIR / "da" / "LC_MESSAGES" / "kiosk.mo"
    assert "compiled" in done.stderr and mo.stat().st_size > 1000
    i18n.catalog.cache_clear()
    assert i18n.translator("da")("The call has ended") == "Samtalen er slut"


def test_settings_from_ui_json_and_a_bad_file_falls_back_to_the_defaults(tmp_path: Path,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    assert load_settings(tmp_path, "S1").serial == "S1"  # no file: the defaults
    (tmp_path / "ui.json").write_text(json.dumps({"language": "en", "font_scale": 1.5, "staff_pin": "4711",
                                                  "night_start_hour": 23}))
    loaded = load_settings(tmp_path, "S1")
    assert (loaded.language, loaded.font_scale, loaded.staff_pin, loaded.night_start_hour) == ("en", 1.5, "4711", 23)
    for bad in ({"font_scale": 9}, {"staff_pin": "12"}, {"volume": True}, {"colour": "red"}, [1, 2]):
        (tmp_path / "ui.json").write_text(json.dumps(bad))
        assert load_settings(tmp_path, "S1").staff_pin is None
    (tmp_path / "ui.json").write_text("{not json")
    assert load_settings(tmp_path, "S1").language == "da"
    assert "using the default settings" in caplog.text
    assert "unknown setting 'colour'" in caplog.text and "font_scale" in caplog.text


def test_configured_answer_keys_replace_the_defaults_and_hang_up_keeps_its_own(
        caplog: pytest.LogCaptureFixture) -> None:
    buttons = button_map(Settings(answer_keys=("KEY_F5", "BTN_2")))
    assert buttons.answer == {ecodes.KEY_F5, ecodes.BTN_2}
    assert buttons.hang_up == ButtonMap().hang_up
    assert button_map(Settings(answer_keys=("KEY_BIGRED",))) == ButtonMap()  # unknown here: the defaults
    assert "KEY_BIGRED" in caplog.text


def test_the_serial_number_comes_from_the_first_source_that_has_one(tmp_path: Path) -> None:
    empty, dmi = tmp_path / "empty", tmp_path / "dmi"
    empty.write_text("\n")
    dmi.write_text("PF3XK2L9\n")
    assert serial_number((tmp_path / "missing", empty, dmi)) == "PF3XK2L9"
    assert serial_number((tmp_path / "missing",)) == "?"


def test_nmcli_terse_output_is_read_with_its_escapes() -> None:
    assert split_terse(r"*:Cafe\:Gæst:70:WPA2") == ["*", "Cafe:Gæst", "70", "WPA2"]
    output = "\n".join([
        r" :Plejecenter Øst:55:WPA2",
        r" :Plejecenter Øst:81:WPA2",  # the same network from another access point
        r"*:Hjemme:64:WPA1 WPA2",
        r" ::90:WPA2",  # hidden: no name to show
        r" :Bibliotek:40:",
        "garbage",
    ])
    assert parse_scan(output) == [
        WifiNetwork("Hjemme", 64, True, True),
        WifiNetwork("Plejecenter Øst", 81, True, False),
        WifiNetwork("Bibliotek", 40, False, False),
    ]
