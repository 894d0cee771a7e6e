"""The rules of a test ring's result (kiosk.protocol.messages.RingTestHeard): one definition, which
the agent signs by and the server reads by (a result that breaks them is refused, with the reason)."""

from __future__ import annotations

from typing import Any

import pytest

from kiosk.protocol import messages as m
from kiosk.protocol.errors import ProtocolError


@pytest.mark.parametrize("detail", [
    {"answer": "answered", "answered_after": 4.2, "ring_sound": "played"},
    {"answer": "not-answered", "ring_sound": "failed", "sound_problem": "pacat is not running"},
    {"answer": "call-came", "ring_sound": "no-speaker"},
    {"answer": "in-call"},
])
def test_what_a_screen_may_say(detail: dict[str, Any]) -> None:
    assert m.to_builtins(m.convert(detail, m.RingTestHeard)) == detail


@pytest.mark.parametrize(("detail", "words"), [
    ({"answer": "answered", "ring_sound": "played"}, "answered_after"),
    ({"answer": "not-answered", "answered_after": 3.0, "ring_sound": "played"}, "answered_after"),
    ({"answer": "not-answered"}, "ring_sound"),
    ({"answer": "in-call", "ring_sound": "played"}, "ring_sound"),
    ({"answer": "not-answered", "ring_sound": "played", "sound_problem": "?"}, "sound_problem"),
    ({"answer": "answered", "answered_after": 61.0, "ring_sound": "played"}, "60"),
    ({"answer": "answered", "answered_after": -1.0, "ring_sound": "played"}, ">= 0"),
    ({"answer": "maybe", "ring_sound": "played"}, "answer"),
    ({"answer": "not-answered", "ring_sound": "loud"}, "ring_sound"),
])
def test_what_breaks_the_rules_is_refused_saying_why(detail: dict[str, Any], words: str) -> None:
    with pytest.raises(ProtocolError) as refused:
        m.convert(detail, m.RingTestHeard)
    assert words in refused.value.detail


@pytest.mark.parametrize("seconds", [0.0, 2.9, 60.5, float("nan")])
def test_a_test_ring_rings_between_3_and_60_seconds(seconds: float) -> None:
    with pytest.raises(ProtocolError):
        m.convert({"type": "test-ring", "ring_seconds": seconds}, m.CommandAction)
