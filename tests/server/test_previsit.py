"""The pre-visit check's judgement: what stands in the way of a visit, most fundamental first."""

from __future__ import annotations

from kiosk.server.previsit import UnitFacts, reasons

READY = UnitFacts(assigned=True, online=True, ui_alive=True, last_seen=1.0,
                  checks={"camera": "OK", "microphone": "OK", "ui": "OK"})


def test_a_ready_screen_gives_no_reason() -> None:
    assert reasons(READY) == ()
    assert reasons(UnitFacts(True, True, True, 1.0, None)) == (), "no fresh diagnostics yet is not a fault"


def test_no_screen_and_offline_say_all_there_is_to_say() -> None:
    assert reasons(UnitFacts(False, False, None, None, None)) == ("no-screen",)
    assert reasons(UnitFacts(True, False, None, 1.0, {"camera": "FAIL"})) == ("offline",)


def test_each_missing_part_is_named() -> None:
    broken = UnitFacts(True, True, False, 1.0, {"camera": "FAIL", "microphone": "FAIL", "ui": "OK"})
    assert reasons(broken) == ("screen-app-down", "no-camera", "no-microphone")
    assert reasons(UnitFacts(True, True, True, 1.0, {"ui": "FAIL", "camera": "WARN"})) == ("screen-app-down",)
