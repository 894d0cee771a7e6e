"""Update decisions: versions only grow, quiet moments to reboot, waves, a new slot's verdict."""

from __future__ import annotations

import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kiosk.protocol import update as u
from kiosk.protocol.command_lifecycle import CommandState

NOW = 1_800_000_000.0
MIN = 60.0


def test_versions_order_by_release_then_build_stamp() -> None:
    assert u.version_key("0.1.0+20261129.1015") < u.version_key("0.1.0+20261129.1016")
    assert u.version_key("0.1.9+20991231.2359") < u.version_key("0.2.0+20200101.0000")
    assert u.version_key("0.1.0+20261129.1015-debug") == u.version_key("0.1.0+20261129.1015")


@pytest.mark.parametrize("bad", ["", "0.1.0", "0.1.0+2026.1", "v0.1.0+20261129.1015", "0.1.0+20261129.1015\n"])
def test_a_version_not_made_by_the_build_is_refused(bad: str) -> None:
    with pytest.raises(u.VersionError):
        u.version_key(bad)


days = st.dates(min_value=datetime.date(2000, 1, 1)).map(lambda d: d.strftime("%Y%m%d"))
stamps = st.tuples(st.integers(0, 99), st.integers(0, 99), st.integers(0, 99), days,
                   st.integers(0, 23), st.integers(0, 59))


@settings(deadline=None)  # no time limit per example: the machine is shared and loaded
@given(stamps, stamps)
def test_raucs_version_orders_like_ours(a: tuple[int, int, int, str, int, int],
                                        b: tuple[int, int, int, str, int, int]) -> None:
    va, vb = (f"{x[0]}.{x[1]}.{x[2]}+{x[3]}.{x[4]:02d}{x[5]:02d}" for x in (a, b))
    ra, rb = (tuple(int(p) for p in u.rauc_version(v).split(".")) for v in (va, vb))
    assert (u.version_key(va) < u.version_key(vb)) == (ra < rb)


def test_no_reboot_during_a_call() -> None:
    decision = u.reboot_decision(NOW, in_call=True, visits=[])
    assert isinstance(decision, u.WaitUntil) and decision.at > NOW and "call" in decision.why


def test_no_reboot_within_15_minutes_of_a_visit_nor_while_it_may_be_on() -> None:
    for visit_in in (1 * MIN, 14 * MIN, 15 * MIN, 19 * MIN, -5 * MIN, -14 * MIN):
        decision = u.reboot_decision(NOW, False, [NOW + visit_in])
        assert isinstance(decision, u.WaitUntil), visit_in
        assert decision.at >= NOW + visit_in + 15 * MIN
    assert u.reboot_decision(NOW, False, [NOW + 21 * MIN, NOW - 16 * MIN]) == u.RebootNow()
    assert u.reboot_decision(NOW, False, []) == u.RebootNow()


@settings(deadline=None)  # no time limit per example: the machine is shared and loaded
@given(st.lists(st.floats(-86400, 86400), max_size=20), st.booleans())
def test_a_reboot_is_never_allowed_near_a_visit(offsets: list[float], in_call: bool) -> None:
    decision = u.reboot_decision(NOW, in_call, [NOW + o for o in offsets])
    if isinstance(decision, u.RebootNow):
        assert not in_call
        assert all(o > 15 * MIN + u.REBOOT_ALLOWANCE_SECONDS or o <= -15 * MIN for o in offsets)


def test_waves_parse_and_split() -> None:
    shares = u.parse_waves("1%,10%,50%,100%")
    assert shares == (0.01, 0.1, 0.5, 1.0)
    units = [f"u{i}" for i in range(20)]
    waves = u.split_waves(units, shares)
    assert [len(w) for w in waves] == [1, 1, 8, 10]
    assert [x for w in waves for x in w] == units
    assert u.split_waves(["a", "b"], shares) == [["a"], ["b"]]  # tiny fleets: no empty waves
    assert u.split_waves([], shares) == []


@pytest.mark.parametrize("bad", ["", "10", "10%,5%,100%", "0%,100%", "50%", "10%,abc%,100%", "50%,150%"])
def test_bad_waves_are_refused_with_a_reason(bad: str) -> None:
    with pytest.raises(u.WaveError):
        u.parse_waves(bad)


def test_a_wave_halts_once_too_many_failed_even_before_the_rest_finished() -> None:
    assert u.wave_verdict(["good", "good", "good"], 0.25) == "passed"
    assert u.wave_verdict(["good", "downloading", "pending"], 0.25) == "running"
    assert u.wave_verdict(["rolled-back", "downloading", "pending"], 0.25) == "halt"
    assert u.wave_verdict(["good", "good", "good", "failed"], 0.25) == "passed"  # exactly the share
    assert u.wave_verdict(["good", "good", "failed", "failed"], 0.25) == "halt"


def test_after_a_boot_the_update_is_on_trial_in_the_new_slot_or_rolled_back_in_the_old() -> None:
    assert u.after_boot("installed", "b", "b") == ("booted", "")
    stage, why = u.after_boot("installed", "b", "a")
    assert stage == "rolled-back" and "slot b" in why
    assert u.after_boot("booted", "b", "a")[0] == "rolled-back"  # marked bad, the old slot runs
    assert u.after_boot("booted", "b", "b") == ("booted", "")     # a power cut mid-trial: still on trial
    assert u.after_boot("good", "b", "b") == ("good", "")
    assert u.after_boot("failed", None, "a") == ("failed", "")
    # the agent restarted without a reboot: the update still waits for its reboot, or its trial
    assert u.after_boot("installed", "b", "a", rebooted=False) == ("installed", "")
    assert u.after_boot("booted", "b", "b", rebooted=False) == ("booted", "")


def test_health_needs_the_server_and_the_screen_before_the_deadline() -> None:
    assert u.health_verdict(True, True, 0) == "good"
    assert u.health_verdict(True, False, 10, deadline=60) == "wait"
    assert u.health_verdict(False, True, 60, deadline=60) == "bad"


def test_an_update_that_expired_before_the_unit_installed_anything_fails_it() -> None:
    for stage in ("pending", "downloading"):
        settled, why = u.settled_stage(stage, CommandState.EXPIRED)
        assert settled == "failed" and "expired" in why, stage
    assert u.wave_verdict([u.settled_stage("pending", CommandState.EXPIRED)[0], "good"], 0.1) == "halt"


@pytest.mark.parametrize("state", [None, *CommandState])
@pytest.mark.parametrize("stage", u.STAGES)
def test_only_an_expired_command_changes_a_stage_and_only_one_still_waiting(
        stage: u.Stage, state: CommandState | None) -> None:
    settled, why = u.settled_stage(stage, state)
    changed = state == CommandState.EXPIRED and stage in ("pending", "downloading")
    assert (settled, bool(why)) == (("failed", True) if changed else (stage, False))
