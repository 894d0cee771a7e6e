"""The quiet screens and the citizen's controls, decided by the pure controller."""

from __future__ import annotations

from kiosk.protocol import messages as m
from kiosk.ui import controller as ui

from .test_controller import RING, Driver, in_call

# 2026-11-30 09:00 in Copenhagen (UTC+1): the wall clock the tests read.
MORNING = 1796025600.0
CET = 3600.0


def assigned(visits: list[m.PlannedVisit] | None = None, state: str = "assigned", online: bool = True,
             settings: ui.Settings | None = None) -> Driver:
    d = Driver()
    d.state = ui.initial_state(d.now, settings=settings or ui.Settings(serial="KSK-0042", staff_pin="2468"))
    d.feed(ui.AgentConnected())
    d.feed(m.AgentStatus(state=state, server_online=online, visits=visits or []))  # type: ignore[arg-type]
    return d


def visit(hours_from_morning: float, name: str = "Anne", role: str = "sygeplejerske") -> m.PlannedVisit:
    return m.PlannedVisit(at=MORNING + hours_from_morning * 3600, staff_name=name, staff_role=role)


def test_each_device_state_has_its_screen() -> None:
    assert assigned(state="unprovisioned").shown() == ui.Screen("not-ready", device_state="unprovisioned",
                                                               serial="KSK-0042")
    assert assigned(state="awaiting-approval").shown().name == "awaiting-approval"
    assert assigned(state="enrolled-unassigned").shown().name == "ready"
    assert assigned(state="assigned").shown().name == "idle"
    assert assigned(state="assigned", online=False).shown().name == "offline"


def test_idle_lists_today_and_tomorrow_not_the_past_nor_later() -> None:
    d = assigned([visit(26.5, "Bo", "hjemmehjælper"), visit(1.5), visit(-2), visit(50)])
    assert d.shown().visits == ()  # the clock is not known yet: no day words that could be wrong
    d.feed(ui.WallClock(MORNING, CET))
    assert d.shown().visits == (
        ui.VisitLine("today", 10, 30, "Anne", "sygeplejerske"),
        ui.VisitLine("tomorrow", 11, 30, "Bo", "hjemmehjælper"),
    )
    assert "Anne" not in str(d.shown().log_record())


def test_a_reminder_five_minutes_before_chimes_once_and_the_ring_comes_first() -> None:
    d = assigned([visit(1)])
    assert d.feed(ui.WallClock(MORNING + 3600 - 301, CET)) == ()
    assert d.shown().name == "idle"
    assert d.feed(ui.WallClock(MORNING + 3600 - 290, CET)) == (ui.Chime(),)
    assert d.shown() == ui.Screen("reminder", caller_name="Anne", caller_role="sygeplejerske",
                                  minutes_to_visit=5, device_state="assigned")
    assert d.feed(ui.WallClock(MORNING + 3600 - 200, CET)) == ()  # chimes once
    d.feed(RING)
    assert d.shown().name == "ringing"
    d.feed(ui.WallClock(MORNING + 3600 + 301, CET))
    d.feed(ui.HangUpPressed())
    d.feed(ui.TimePassed(), at=d.now + ui.ENDED_SCREEN_SECONDS)
    assert d.shown().name == "idle"  # the reminder is over after its visit


def test_night_hours_sleep_the_idle_screen_but_a_ring_wakes_it() -> None:
    d = assigned()
    d.feed(ui.WallClock(MORNING - 3 * 3600, CET))  # 06:00 local
    assert d.shown().asleep
    d.feed(ui.WallClock(MORNING - 2 * 3600, CET))  # 07:00
    assert not d.shown().asleep
    d.feed(ui.WallClock(MORNING + 13 * 3600, CET))  # 22:00
    assert d.shown().asleep
    d.feed(ui.WakeTouched())  # a touch in the night shows the time and the visits for a minute
    assert not d.shown().asleep
    d.feed(ui.WallClock(MORNING + 13 * 3600 + ui.WOKEN_SECONDS, CET))
    assert d.shown().asleep
    d.feed(RING)
    assert d.shown().name == "ringing" and not d.shown().asleep


def test_camera_sound_and_volume_in_a_call() -> None:
    d = in_call()
    assert d.feed(ui.CameraToggled()) == (ui.SetCamera("c1", False),)
    assert d.feed(ui.MicrophoneToggled()) == (ui.SetMicrophone("c1", False),)
    shown = d.shown()
    assert (shown.camera_on, shown.microphone_on) == (False, False)
    assert shown.log_record()["camera"] is False
    assert d.feed(ui.CameraToggled()) == (ui.SetCamera("c1", True),)
    level = d.state.settings.volume
    assert d.feed(ui.VolumeStep(+1)) == (ui.SetVolume(level + 1),)
    for _ in range(20):
        d.feed(ui.VolumeStep(-1))
    assert d.state.settings.volume == 0 and d.feed(ui.VolumeStep(-1)) == ()


def test_consent_yes_no_and_silence() -> None:
    d = assigned()
    d.feed(m.ScreenshotRequest(request_id="r1", ask_consent=True))
    assert d.shown().name == "consent"
    assert d.feed(ui.ConsentAnswered(yes=True)) == (ui.ConsentGiven("r1", "yes"),)
    assert d.shown().name == "idle"
    d.feed(m.ScreenshotRequest(request_id="r2", ask_consent=True), at=100.0)
    assert ui.next_deadline(d.state) == 100.0 + ui.CONSENT_SECONDS
    assert d.feed(ui.TimePassed(), at=100.0 + ui.CONSENT_SECONDS - 1) == ()
    assert d.feed(ui.TimePassed(), at=100.0 + ui.CONSENT_SECONDS) == (ui.ConsentGiven("r2", "no-answer"),)
    assert d.feed(ui.ConsentAnswered(yes=True)) == ()  # too late: already a no
    d.feed(m.ScreenshotRequest(request_id="r3", ask_consent=True))
    assert d.feed(ui.ConsentAnswered(yes=False)) == (ui.ConsentGiven("r3", "no"),)


def test_a_look_at_an_unassigned_unit_asks_nobody() -> None:
    d = assigned(state="enrolled-unassigned")
    assert d.feed(m.ScreenshotRequest(request_id="r9", ask_consent=False)) == (ui.ConsentGiven("r9", "unassigned"),)
    assert d.shown().name == "ready" and ui.next_deadline(d.state) is None  # no question, no waiting


def test_setup_needs_the_pin_and_closes_by_itself() -> None:
    d = assigned()
    d.feed(ui.CornerHeld(), at=10.0)
    assert d.shown() == ui.Screen("setup-pin")
    d.feed(ui.PinEntered("1111"))
    assert d.shown() == ui.Screen("setup-pin", wrong_pins=1)
    d.feed(ui.PinEntered("2468"))
    assert d.shown().name == "setup" and d.shown().setup_page == "menu" and d.shown().serial == "KSK-0042"
    d.feed(ui.SetupPage("network"), at=20.0)
    assert d.shown().setup_page == "network"
    d.feed(ui.TimePassed(), at=20.0 + ui.SETUP_SECONDS)
    assert d.shown().name == "idle"


def test_no_pin_from_the_server_means_no_setup_and_a_ring_closes_it() -> None:
    d = assigned(settings=ui.Settings())
    d.feed(ui.CornerHeld())
    assert d.shown().name == "idle"
    d = assigned()
    d.feed(ui.CornerHeld())
    d.feed(RING)
    d.feed(ui.HangUpPressed())
    d.feed(ui.TimePassed(), at=d.now + ui.ENDED_SCREEN_SECONDS)
    assert d.shown().name == "idle"
