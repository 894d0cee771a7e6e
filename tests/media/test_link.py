"""The link watch: good, poor and lost as the people in a call would say it, and its figures."""

from __future__ import annotations

from kiosk.media.keyframes import MAX_HOLE_WAIT, hole_wait_for
from kiosk.media.link import (
    GIVE_UP_AFTER,
    LOST_AFTER,
    MAX_BITRATE_CAP,
    MIN_BITRATE_CAP,
    STEP_DOWN_AT,
    STEP_UP_AFTER,
    STEP_UP_AT,
    Counters,
    LinkState,
    LinkWatch,
    LossBasedCap,
    VideoStep,
    loss_based_cap,
)


def flowing(watch: LinkWatch, start: float, end: float, video: bool = True) -> None:
    """Audio every 20 ms and (if ``video``) video every 66 ms from ``start`` to ``end``."""
    t = start
    while t < end:
        watch.frame("audio", t)
        if video and round(t * 1000) % 60 == 0:
            watch.frame("video", t)
        t = round(t + 0.02, 3)


def test_a_flowing_call_stays_good() -> None:
    watch = LinkWatch()
    flowing(watch, 0.0, 10.0)
    assert [watch.observe(t / 2) for t in range(1, 20)] == [None] * 19
    assert watch.state is LinkState.GOOD and watch.outages == 0


def test_an_outage_is_lost_within_two_seconds_then_poor_then_good_with_its_figures() -> None:
    watch = LinkWatch()
    flowing(watch, 0.0, 5.0)
    assert watch.observe(5.0) is None
    assert watch.observe(5.0 + LOST_AFTER) is LinkState.LOST  # told within 2 s of the silence
    assert not watch.gave_up(10.0)
    flowing(watch, 10.0, 10.5, video=False)  # sound first ...
    flowing(watch, 10.6, 11.0)  # ... then the picture, 0.6 s later
    assert watch.observe(11.0) is LinkState.POOR  # just back: not yet trusted
    flowing(watch, 11.0, 14.0)
    assert watch.observe(13.9) is None
    assert watch.observe(14.0) is LinkState.GOOD
    assert watch.outages == 1
    assert abs(watch.longest_outage_s - 5.02) < 0.03
    assert watch.recovery_s is not None and abs(watch.recovery_s - 0.6) < 0.03


def test_a_frozen_picture_with_sound_flowing_is_poor() -> None:
    watch = LinkWatch()
    flowing(watch, 0.0, 3.0)
    flowing(watch, 3.0, 6.0, video=False)
    assert watch.observe(3.5) is None
    assert watch.observe(4.5) is LinkState.POOR


def test_heavy_loss_is_poor_and_light_loss_is_not() -> None:
    watch = LinkWatch()
    flowing(watch, 0.0, 10.0)
    watch.observe(1.0, Counters(100, 0, 0))
    assert watch.observe(1.5, Counters(200, 5, 0)) is None  # 5 %: rural 4G with NACK copes
    assert watch.observe(2.0, Counters(280, 25, 0)) is LinkState.POOR  # 20 %


def test_a_stalled_watch_does_not_call_its_own_stall_an_outage() -> None:
    """The process stalled for 2 s as the call began (frames queued unread): no "lost" notice."""
    watch = LinkWatch()
    flowing(watch, 0.0, 1.0)
    assert [watch.observe(t) for t in (0.5, 1.0)] == [None, None]
    assert watch.observe(3.0) is None  # the first look after the stall: not lost, not frozen
    flowing(watch, 3.0, 4.0)  # the queued frames are read
    assert [watch.observe(t) for t in (3.5, 4.0)] == [None, None]
    assert watch.state is LinkState.GOOD and watch.outages == 1  # the figures still tell the gap


def test_a_real_outage_right_after_a_stall_is_still_told() -> None:
    watch = LinkWatch()
    flowing(watch, 0.0, 1.0)
    watch.observe(1.0)
    assert watch.observe(3.0) is None  # stalled; nothing queued either
    assert watch.observe(3.5) is None
    assert watch.observe(4.0) is LinkState.POOR  # 1 s without a picture, seen by the watch itself
    assert watch.observe(4.5) is LinkState.LOST  # 1.5 s of silence
    assert not watch.gave_up(4.5) and watch.gave_up(3.0 + GIVE_UP_AFTER)


def test_lost_for_good_gives_up() -> None:
    watch = LinkWatch()
    flowing(watch, 0.0, 2.0)
    assert not watch.gave_up(2.0 + GIVE_UP_AFTER - 0.1)
    assert watch.gave_up(2.0 + GIVE_UP_AFTER)


def test_nothing_is_judged_before_media_flows() -> None:
    watch = LinkWatch()
    assert watch.observe(100.0) is None and not watch.gave_up(100.0)


def test_the_lowest_bitrate_is_measured_after_the_start_over_whole_windows() -> None:
    watch = LinkWatch()
    flowing(watch, 0.0, 10.0)
    sent = 0
    for tick in range(1, 21):  # 1 Mbit/s, then 400 kbit/s from t = 6 s
        t = tick / 2
        sent += (1_000_000 if t <= 6 else 400_000) // 16
        watch.observe(t, Counters(0, 0, sent))
    assert watch.record()["lowest_bitrate_sent_bps"] == 400_000


def test_loss_recovery_waits_two_and_a_half_round_trips_within_bounds() -> None:
    assert hole_wait_for(None, 0.3) == 1.0  # not measured yet: a slow link is assumed (0.4 s)
    assert hole_wait_for(0.05, 0.3) == 0.3  # a fast link keeps the floor
    assert hole_wait_for(0.3, 0.3) == 0.75  # rural 4G: time for the copy, and for a repeated NACK's
    assert hole_wait_for(5.0, 0.3) == MAX_HOLE_WAIT
    assert hole_wait_for(float("nan"), 0.3) == 1.0


def test_reported_loss_cuts_the_video_cap_and_a_clean_link_lets_it_grow() -> None:
    assert loss_based_cap(1_000_000, 0.30) == 850_000  # 30 % lost: cut by half of it
    assert loss_based_cap(1_000_000, 0.05) == 1_000_000  # rural 4G's 5 %: NACK copes, keep it
    assert loss_based_cap(1_000_000, 0.0) == 1_080_000
    assert loss_based_cap(1_000_000, None) == 1_000_000  # no report yet
    assert loss_based_cap(MIN_BITRATE_CAP, 0.9) == MIN_BITRATE_CAP
    assert loss_based_cap(MAX_BITRATE_CAP, 0.0) == MAX_BITRATE_CAP


def test_the_cap_follows_each_report_once_and_ignores_one_that_spans_an_outage() -> None:
    cap = LossBasedCap(1_000_000)
    assert cap.report(None, None) == 1_000_000  # no report yet
    assert cap.report(100.0, 0.30) == 850_000
    # The peer looks every 0.5 s and reports come every 0.5-1.5 s: a report seen is not applied
    # again (it was, three times over, before: a 30 % report cut the cap to 61 %).
    assert cap.report(100.0, 0.30) == 850_000
    assert cap.report(101.0, 0.0) == 918_000
    # A 5 s outage: no report for 6 s, then one saying nearly everything was lost. The link
    # was gone, not full; the key frame that ends the outage must not be made small for it.
    assert cap.report(107.0, 0.95) == 918_000
    assert cap.report(108.0, 0.30) == 780_300  # the next report is judged as ever


def test_the_video_steps_down_on_a_narrow_link_and_up_only_once_it_stayed_wide() -> None:
    step = VideoStep()
    assert step.observe(0.0, None) is None and step.observe(0.5, 1_000_000) is None  # wide: as it is
    assert step.observe(1.0, STEP_DOWN_AT) is True  # a 500 kbit/s link ends here
    assert step.observe(1.5, 250_000) is None  # already down
    assert step.observe(2.0, 500_000) is None  # between the two: no flapping
    # REMB says "wide" for a moment: not enough.
    assert step.observe(3.0, 1_000_000) is None and step.observe(3.0 + STEP_UP_AFTER / 2, 1_000_000) is None
    assert step.observe(4.0 + STEP_UP_AFTER / 2, 300_000) is None  # narrow again: the wait starts over
    assert step.observe(5.0 + STEP_UP_AFTER / 2, STEP_UP_AT) is None
    assert step.observe(5.0 + STEP_UP_AFTER * 1.5, STEP_UP_AT) is False  # wide for long enough: up
    assert not step.stepped_down
