"""The one definition of the screen's settings: what passes, what is refused and why."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kiosk.protocol import screen_settings as ss
from kiosk.protocol.errors import ProtocolError

DEFAULTS = ss.ScreenSettings()


def test_changes_merge_into_what_the_unit_has() -> None:
    first = ss.merged(DEFAULTS, {"volume": 3, "staff_pin": "0246"})
    second = ss.merged(first, {"language": "en", "font_scale": 1})  # an int scale is a float scale
    assert second == ss.ScreenSettings(volume=3, staff_pin="0246", language="en", font_scale=1.0)
    assert json.loads(ss.encode(second)) == {"volume": 3, "staff_pin": "0246", "language": "en"}  # what differs
    assert ss.merged(second, {"staff_pin": None}).staff_pin is None  # the setup closed again


@pytest.mark.parametrize(("changes", "words"), [
    ({"volume": 11}, "$.volume"),
    ({"volume": True}, "$.volume"),
    ({"volume": "4"}, "$.volume"),
    ({"font_scale": 3.0}, "$.font_scale"),
    ({"night_start_hour": 24}, "$.night_start_hour"),
    ({"reminder_minutes": -1}, "$.reminder_minutes"),
    ({"staff_pin": "12"}, "$.staff_pin"),
    ({"staff_pin": 1234}, "$.staff_pin"),
    ({"language": "sv"}, "$.language"),
    ({"answer_keys": ["ENTER"]}, "$.answer_keys"),
    ({"brightness": 50}, "unknown setting 'brightness'"),
])
def test_a_bad_change_is_refused_naming_the_setting(changes: dict[str, Any], words: str) -> None:
    with pytest.raises(ProtocolError) as refused:
        ss.merged(DEFAULTS, changes)
    assert refused.value.reason == "invalid" and words in refused.value.detail


def test_typed_text_is_read_as_each_settings_type() -> None:
    assert ss.from_text({"volume": "4", "staff_pin": "0246", "font_scale": "1.5", "answer_keys": "KEY_F5, BTN_0"}) \
        == {"volume": 4, "staff_pin": "0246", "font_scale": 1.5, "answer_keys": ["KEY_F5", "BTN_0"]}
    for bad in ({"volume": "loud"}, {"colour": "red"}, {"night_end_hour": "25"}):
        with pytest.raises(ProtocolError):
            ss.from_text(bad)


def test_ui_json_that_is_not_an_object_or_not_json_is_refused() -> None:
    assert ss.decode(b"{}") == DEFAULTS
    for bad, reason in ((b"[1]", "invalid"), (b"{", "malformed"), (b'{"volume": 99}', "invalid")):
        with pytest.raises(ProtocolError) as refused:
            ss.decode(bad)
        assert refused.value.reason == reason


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
                           max_leaves=8)
names = st.sampled_from([*ss.ScreenSettings.__struct_fields__, "colour", ""])


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(names, json_values, max_size=6) | json_values)
def test_the_parser_gives_settings_in_range_or_a_protocol_error(raw: Any) -> None:
    try:
        parsed = ss.decode(json.dumps(raw).encode())
    except ProtocolError:
        return
    assert isinstance(parsed, ss.ScreenSettings)
    assert 0 <= parsed.volume <= ss.VOLUME_STEPS and 0.75 <= parsed.font_scale <= 2.0
    assert parsed.staff_pin is None or (parsed.staff_pin.isdigit() and 4 <= len(parsed.staff_pin) <= 12)
    assert ss.decode(ss.encode(parsed)) == parsed  # what the agent writes, the screen reads back the same
    assert msgspec.structs.asdict(parsed).keys() == set(ss.ScreenSettings.__struct_fields__)
