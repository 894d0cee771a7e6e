"""Tests for the sans-I/O call state machine (kiosk.protocol.call).

No sockets, no event loop, no clock: every event is fed with its own time.
The transition table below is written out by hand, independently of the
implementation, and covers every (state, event) pair.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kiosk.protocol.call import (
    Answer,
    Busy,
    Call,
    CallConfig,
    CallRecord,
    CallState,
    Cancel,
    DeviceOffline,
    Effect,
    EndReason,
    Event,
    HangUp,
    Ignored,
    IgnoreReason,
    MediaConnected,
    MediaFailed,
    Notice,
    Notify,
    Offered,
    ProcessLost,
    RecordCallEnd,
    Ring,
    RingAck,
    ScreenNotRunning,
    Side,
    TimerFired,
    UnitWiped,
    step,
)
from kiosk.protocol.machine import Transition

pytestmark = pytest.mark.timeout(120)

STAFF, CITIZEN = Side.STAFF, Side.CITIZEN


Timed = tuple[float, Event]  # an event and the time it was seen


def feed(call: Call, timed: Timed) -> Transition[Call, Effect]:
    now, event = timed
    return step(call, event, now)


def run(events: Sequence[Timed], call: Call | None = None) -> Call:
    """Feed events one by one, returning the final call."""
    call = call if call is not None else Call()
    for event in events:
        call = feed(call, event).state
    return call


def outcome(transition: Transition[Call, Effect]) -> str:
    """"applied", or why the event was ignored."""
    ignored = [a.reason for a in transition.actions if isinstance(a, Ignored)]
    assert len(ignored) <= 1  # and, when there, it is the last action
    assert not ignored or transition.actions[-1] == Ignored(ignored[0])
    return ignored[0].value if ignored else "applied"


def effects_as_text(effects: Sequence[Effect]) -> list[tuple[str, ...]]:
    """Effects in a plain form the hand-written table can be compared with."""
    out: list[tuple[str, ...]] = []
    for effect in effects:
        if isinstance(effect, Ignored):
            continue  # see outcome()
        if isinstance(effect, Notify):
            reason = effect.reason.value if effect.reason else ""
            out.append((effect.to.value, effect.notice.value, reason))
        else:
            out.append(("record", effect.record.reason.value))
    return out


# --- the exhaustive table ----------------------------------------------------

# How to reach each state, with events at t = 0, 1, 2, 3, 4.
SETUPS: dict[str, list[Timed]] = {
    "idle": [],
    "ringing": [(0.0, Ring())],
    "ringing_acked": [(0.0, Ring()), (1.0, RingAck())],
    "connecting_unacked": [(0.0, Ring()), (2.0, Answer())],
    "connecting": [(0.0, Ring()), (1.0, RingAck()), (2.0, Answer())],
    "in_call": [(0.0, Ring()), (1.0, RingAck()), (2.0, Answer()), (3.0, MediaConnected())],
    "ended": [(0.0, Ring()), (1.0, RingAck()), (2.0, Answer()), (3.0, MediaConnected()), (4.0, HangUp(STAFF))],
}
SETUP_STATE = {
    "idle": "idle",
    "ringing": "ringing",
    "ringing_acked": "ringing",
    "connecting_unacked": "connecting",
    "connecting": "connecting",
    "in_call": "in_call",
    "ended": "ended",
}

T = 5.0  # before every default deadline (ring 60 s, connect 2 + 30 s)
EVENTS: dict[str, Timed] = {
    "ring": (T, Ring()),
    "ring_ack": (T, RingAck()),
    "offered": (T, Offered()),
    "answer": (T, Answer()),
    "media_connected": (T, MediaConnected()),
    "media_failed": (T, MediaFailed()),
    "hang_up_staff": (T, HangUp(STAFF)),
    "hang_up_citizen": (T, HangUp(CITIZEN)),
    "cancel": (T, Cancel()),
    "unit_wiped": (T, UnitWiped()),
    "device_offline": (T, DeviceOffline()),
    "busy": (T, Busy()),
    "screen_not_running": (T, ScreenNotRunning()),
    "process_lost": (T, ProcessLost()),
    "tick": (T, TimerFired()),
}

S, C = "staff", "citizen"


def ends(reason: str, *to: str) -> tuple[str, str, list[tuple[str, ...]]]:
    return ("ended", "applied", [*((side, "ended", reason) for side in to), ("record", reason)])


def same(state: str, outcome: str) -> tuple[str, str, list[tuple[str, ...]]]:
    return (state, outcome, [])


NO_CALL = same("idle", "no_call")
RINGING_ROW: dict[str, tuple[str, str, list[tuple[str, ...]]]] = {
    "ring": same("ringing", "duplicate"),
    "ring_ack": ("ringing", "applied", [(S, "ringing", "")]),
    # the unit's offer while it rings goes to the caller, every time (the newest counts); no fact changes
    "offered": ("ringing", "applied", [(S, "offer", "")]),
    "answer": ("connecting", "applied", [(S, "answered", "")]),
    "media_connected": same("ringing", "out_of_order"),
    "media_failed": same("ringing", "out_of_order"),
    "hang_up_staff": ends("cancelled_by_caller", C),
    "hang_up_citizen": ends("hung_up_by_citizen", S),
    "cancel": ends("cancelled_by_caller", C),
    "unit_wiped": ends("unit_wiped", S),
    "device_offline": ends("device_offline", S),
    "busy": ends("device_busy", S),
    "screen_not_running": ends("screen_not_running", S),
    # the process running the call died: another one (or this one restarted) ends it
    "process_lost": ends("server_stopped", S, C),
    "tick": same("ringing", "applied"),
}
CONNECTING_ROW: dict[str, tuple[str, str, list[tuple[str, ...]]]] = {
    "ring": same("connecting", "duplicate"),
    "ring_ack": same("connecting", "duplicate"),
    # answered: the offer came in the answer, or the pre-connection is in use
    "offered": same("connecting", "out_of_order"),
    "answer": same("connecting", "duplicate"),
    "media_connected": ("in_call", "applied", [(S, "connected", ""), (C, "connected", "")]),
    "media_failed": ends("media_failed", S, C),
    "hang_up_staff": ends("hung_up_by_staff", C),
    "hang_up_citizen": ends("hung_up_by_citizen", S),
    "cancel": ends("cancelled_by_caller", C),
    "unit_wiped": ends("unit_wiped", S),
    "device_offline": ends("device_offline", S),
    "busy": same("connecting", "out_of_order"),
    "screen_not_running": same("connecting", "out_of_order"),
    "process_lost": ends("server_stopped", S, C),
    "tick": same("connecting", "applied"),
}
TABLE: dict[str, dict[str, tuple[str, str, list[tuple[str, ...]]]]] = {
    "idle": {
        "ring": ("ringing", "applied", [(C, "ring", "")]),
        "ring_ack": NO_CALL,
        "offered": NO_CALL,
        "answer": NO_CALL,
        "media_connected": NO_CALL,
        "media_failed": NO_CALL,
        "hang_up_staff": NO_CALL,
        "hang_up_citizen": NO_CALL,
        "cancel": NO_CALL,
        "unit_wiped": NO_CALL,
        "device_offline": ends("device_offline", S),
        "busy": ends("device_busy", S),
        "screen_not_running": ends("screen_not_running", S),
        "process_lost": NO_CALL,
        "tick": NO_CALL,
    },
    "ringing": RINGING_ROW,
    "ringing_acked": {**RINGING_ROW, "ring_ack": same("ringing", "duplicate")},
    # An ack overtaken by the answer is not believed: the ring time stays unknown.
    "connecting_unacked": {**CONNECTING_ROW, "ring_ack": same("connecting", "out_of_order")},
    "connecting": CONNECTING_ROW,
    "in_call": {
        "ring": same("in_call", "duplicate"),
        "ring_ack": same("in_call", "duplicate"),
        "offered": same("in_call", "out_of_order"),
        "answer": same("in_call", "duplicate"),
        "media_connected": same("in_call", "duplicate"),
        # Media that flowed and was lost is not media that failed to set up.
        "media_failed": ends("connection_lost", S, C),
        "hang_up_staff": ends("hung_up_by_staff", C),
        "hang_up_citizen": ends("hung_up_by_citizen", S),
        # Staff's cancel crossed the media connecting: staff is leaving.
        "cancel": ends("hung_up_by_staff", C),
        "unit_wiped": ends("unit_wiped", S),
        "device_offline": ends("device_offline", S),
        "busy": same("in_call", "out_of_order"),
        "screen_not_running": same("in_call", "out_of_order"),
        "process_lost": ends("connection_lost", S, C),
        "tick": same("in_call", "applied"),
    },
    "ended": {name: same("ended", "already_ended") for name in EVENTS},
}


def test_table_covers_every_state_and_event() -> None:
    assert {SETUP_STATE[name] for name in TABLE} == {s.value for s in CallState}
    event_classes = {type(e) for _, e in EVENTS.values()}
    assert event_classes == set(typing.get_args(Event))
    assert {e.side for _, e in EVENTS.values() if isinstance(e, HangUp)} == set(Side)
    for row in TABLE.values():
        assert row.keys() == EVENTS.keys()


@pytest.mark.parametrize("event_name", list(EVENTS))
@pytest.mark.parametrize("setup_name", list(SETUPS))
def test_every_state_event_pair(setup_name: str, event_name: str) -> None:
    before = run(SETUPS[setup_name])
    assert before.state.value == SETUP_STATE[setup_name]

    after = feed(before, EVENTS[event_name])

    state, expected, effects = TABLE[setup_name][event_name]
    assert (after.state.state.value, outcome(after)) == (state, expected)
    assert effects_as_text(after.actions) == effects
    if expected != "applied":
        assert after.state == before  # an ignored event changes nothing
    if after.state.state is CallState.ENDED and before.state is not CallState.ENDED:
        assert after.state.ended_at == T
        assert after.state.record is not None
        assert after.actions[-1] == RecordCallEnd(after.state.record)


# --- timestamps and the record -----------------------------------------------


def test_full_call_keeps_every_timestamp() -> None:
    call = run(
        [(100.0, Ring()), (100.5, RingAck()), (108.0, Answer()), (108.4, MediaConnected()), (190.0, HangUp(STAFF))]
    )
    assert call.record == CallRecord(
        reason=EndReason.HUNG_UP_BY_STAFF,
        placed_at=100.0,
        rang_at=100.5,
        answered_at=108.0,
        connected_at=108.4,
        ended_at=190.0,
    )
    assert call.record.ring_duration == pytest.approx(7.5)
    assert call.record.talk_duration == pytest.approx(81.6)


def test_record_is_none_until_the_call_ends() -> None:
    assert Call().record is None
    assert run([(0.0, Ring()), (1.0, RingAck()), (2.0, Answer())]).record is None


def test_ring_duration_unknown_when_the_device_never_confirmed_ringing() -> None:
    record = run([(0.0, Ring()), (10.0, Cancel())]).record
    assert record is not None
    assert record.rang_at is None and record.ring_duration is None
    assert record.talk_duration is None


def test_refusal_before_ringing_is_placed_and_ended_at_once() -> None:
    after = feed(Call(), (42.0, DeviceOffline()))
    assert after.state.record == CallRecord(
        reason=EndReason.DEVICE_OFFLINE,
        placed_at=42.0,
        rang_at=None,
        answered_at=None,
        connected_at=None,
        ended_at=42.0,
    )


def test_clock_stepping_back_never_makes_time_run_backwards() -> None:
    # NTP correcting a freshly booted kiosk's clock between two events.
    call = run([(50.0, Ring()), (20.0, RingAck()), (10.0, Answer()), (55.0, MediaConnected()), (0.0, HangUp(STAFF))])
    assert (call.placed_at, call.rang_at, call.answered_at) == (50.0, 50.0, 50.0)
    assert (call.connected_at, call.ended_at) == (55.0, 55.0)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("setup_name", list(SETUPS))
def test_non_finite_time_is_refused_without_change(setup_name: str, bad: float) -> None:
    before = run(SETUPS[setup_name])
    for event in ((bad, Ring()), (bad, Answer()), (bad, HangUp(CITIZEN)), (bad, TimerFired())):
        after = feed(before, event)
        assert after == Transition(before, (Ignored(IgnoreReason.INVALID_TIME),))


# --- timeouts ----------------------------------------------------------------


def test_ring_timeout_ends_at_the_deadline_and_tells_both_sides() -> None:
    call = run([(0.0, Ring()), (2.0, RingAck())])
    assert call.next_deadline == 60.0
    assert feed(call, (59.999, TimerFired())).state.state is CallState.RINGING

    after = feed(call, (60.0, TimerFired()))

    assert outcome(after) == "applied"
    assert after.state.end_reason is EndReason.NOT_ANSWERED
    assert effects_as_text(after.actions) == [
        (S, "ended", "not_answered"),
        (C, "ended", "not_answered"),
        ("record", "not_answered"),
    ]
    assert after.state.record is not None
    assert after.state.record.ring_duration == 58.0
    assert after.state.next_deadline is None


def test_a_late_tick_records_the_deadline_not_the_tick() -> None:
    # The timer fired 15 s late (a loaded server); the citizen still rang 60 s.
    call = run([(0.0, Ring()), (1.0, RingAck()), (75.0, TimerFired())])
    assert call.end_reason is EndReason.NOT_ANSWERED
    assert call.ended_at == 60.0


def test_ring_timeout_is_configurable_per_municipality() -> None:
    call = run([(0.0, Ring()), (1.0, RingAck())], Call(config=CallConfig(ring_timeout=20.0)))
    assert call.next_deadline == 20.0
    assert feed(call, (20.0, TimerFired())).state.end_reason is EndReason.NOT_ANSWERED


def test_a_unit_that_never_confirms_the_ring_did_not_ring_and_is_not_waited_for() -> None:
    call = run([(0.0, Ring())])
    assert call.next_deadline == 15.0  # the ring-ack timeout, not the 60 s ring timeout
    after = feed(call, (15.0, TimerFired()))
    assert after.state.end_reason is EndReason.DID_NOT_RING
    assert effects_as_text(after.actions) == [
        (S, "ended", "did_not_ring"), (C, "ended", "did_not_ring"), ("record", "did_not_ring")]
    assert after.state.record is not None and after.state.record.rang_at is None
    # A ring timeout shorter than the ack timeout: still "did not ring", never "did not answer".
    short = run([(0.0, Ring()), (5.0, TimerFired())], Call(config=CallConfig(ring_timeout=5.0)))
    assert short.end_reason is EndReason.DID_NOT_RING


def test_a_screen_whose_program_is_not_running_ends_the_call_at_once() -> None:
    after = feed(run([(0.0, Ring())]), (0.1, ScreenNotRunning()))
    assert after.state.end_reason is EndReason.SCREEN_NOT_RUNNING
    assert effects_as_text(after.actions) == [(S, "ended", "screen_not_running"), ("record", "screen_not_running")]


def test_media_lost_in_call_is_a_lost_connection_not_a_failed_set_up() -> None:
    in_call = run(SETUPS["in_call"])
    assert feed(in_call, (9.0, MediaFailed())).state.end_reason is EndReason.CONNECTION_LOST
    assert feed(run(SETUPS["connecting"]), (9.0, MediaFailed())).state.end_reason is EndReason.MEDIA_FAILED
    assert EndReason.CONNECTION_LOST.media_failure and EndReason.MEDIA_FAILED.media_failure
    assert not EndReason.NOT_ANSWERED.media_failure


def test_answer_after_the_deadline_finds_the_call_ended() -> None:
    # No tick was fed in time; the deadline still wins over the late answer.
    after = feed(run([(0.0, Ring()), (1.0, RingAck())]), (61.0, Answer()))
    assert outcome(after) == "already_ended"
    assert after.state.end_reason is EndReason.NOT_ANSWERED
    assert ("record", "not_answered") in effects_as_text(after.actions)


def test_connect_timeout_fails_media_that_never_came() -> None:
    call = run([(0.0, Ring()), (5.0, Answer())], Call(config=CallConfig(connect_timeout=10.0)))
    assert call.next_deadline == 15.0
    assert feed(call, (14.9, TimerFired())).state.state is CallState.CONNECTING
    after = feed(call, (15.0, TimerFired()))
    assert after.state.end_reason is EndReason.MEDIA_FAILED
    assert {e.to for e in after.actions if isinstance(e, Notify)} == {STAFF, CITIZEN}


@pytest.mark.parametrize("setup_name", ["idle", "in_call", "ended"])
def test_no_deadline_outside_ringing_and_connecting(setup_name: str) -> None:
    assert run(SETUPS[setup_name]).next_deadline is None


# --- crossing and duplicate messages -----------------------------------------


def test_answer_crossing_cancel_cancel_first() -> None:
    after = feed(run([(0.0, Ring()), (9.0, Cancel())]), (9.0, Answer()))
    assert outcome(after) == "already_ended" and effects_as_text(after.actions) == []
    assert after.state.end_reason is EndReason.CANCELLED_BY_CALLER


def test_answer_crossing_cancel_answer_first() -> None:
    call = run([(0.0, Ring()), (9.0, Answer())])
    after = feed(call, (9.0, Cancel()))
    assert after.state.end_reason is EndReason.CANCELLED_BY_CALLER
    # The device, which thinks it answered, is told the call is gone.
    assert effects_as_text(after.actions)[0] == (C, "ended", "cancelled_by_caller")


def test_both_sides_hang_up_at_once_first_wins() -> None:
    call = run([(0.0, Ring()), (1.0, Answer()), (2.0, MediaConnected())])
    first = feed(call, (30.0, HangUp(CITIZEN)))
    second = feed(first.state, (30.0, HangUp(STAFF)))
    assert first.state.end_reason is EndReason.HUNG_UP_BY_CITIZEN
    assert outcome(second) == "already_ended" and effects_as_text(second.actions) == []
    assert second.state is first.state


def test_repeated_answer_and_both_peers_reporting_media() -> None:
    call = run([(0.0, Ring()), (1.0, Answer())])
    again = feed(call, (1.5, Answer()))
    assert outcome(again) == "duplicate" and again.state.answered_at == 1.0
    connected = feed(call, (2.0, MediaConnected())).state
    other_peer = feed(connected, (2.1, MediaConnected()))
    assert outcome(other_peer) == "duplicate" and other_peer.state.connected_at == 2.0


def test_repeated_ring_ack_keeps_the_first_time() -> None:
    call = run([(0.0, Ring()), (1.0, RingAck()), (3.0, RingAck())])
    assert call.rang_at == 1.0


# --- the same machine on both sides ------------------------------------------


def _server_event(effect: Notify, now: float) -> Timed | None:
    """What the server feeds when the device's machine notifies STAFF."""
    if effect.notice is Notice.RINGING:
        return (now, RingAck())
    if effect.notice is Notice.ANSWERED:
        return (now, Answer())
    if effect.notice is Notice.ENDED and effect.reason is EndReason.HUNG_UP_BY_CITIZEN:
        return (now, HangUp(CITIZEN))
    return None


def _device_event(effect: Notify, now: float) -> Timed | None:
    """What the device feeds when the server's machine notifies CITIZEN."""
    if effect.notice is Notice.RING:
        return (now, Ring())
    if effect.notice is Notice.CONNECTED:
        return (now, MediaConnected())
    if effect.notice is Notice.ENDED:
        by_reason: dict[EndReason | None, Event] = {
            EndReason.CANCELLED_BY_CALLER: Cancel(),
            EndReason.HUNG_UP_BY_STAFF: HangUp(STAFF),
            EndReason.MEDIA_FAILED: MediaFailed(),
            EndReason.NOT_ANSWERED: TimerFired(),  # the device's own deadline has passed too
        }
        return (now, by_reason[effect.reason])
    return None


@pytest.mark.parametrize(
    ("script", "reason"),
    [
        # (which machine gets the event, the event)
        (
            [
                ("device", (0.1, RingAck())),
                ("device", (4.0, Answer())),
                ("server", (4.3, MediaConnected())),
                ("device", (80.0, HangUp(CITIZEN))),
            ],
            EndReason.HUNG_UP_BY_CITIZEN,
        ),
        ([("device", (0.1, RingAck())), ("server", (12.0, Cancel()))], EndReason.CANCELLED_BY_CALLER),
        ([("device", (0.1, RingAck())), ("server", (60.0, TimerFired()))], EndReason.NOT_ANSWERED),
    ],
)
def test_server_and_device_reach_the_same_end(
    script: list[tuple[str, Timed]], reason: EndReason
) -> None:
    """Route each side's Notify effects to the other machine, as the I/O layers
    would, and check both keep the same record reason."""
    machines = {"server": Call(), "device": Call()}
    pending: list[tuple[str, Timed]] = [("server", (0.0, Ring())), *script]
    while pending:
        where, event = pending.pop(0)
        after = feed(machines[where], event)
        machines[where] = after.state
        for effect in after.actions:
            if not isinstance(effect, Notify):
                continue
            if where == "server" and effect.to is CITIZEN:
                relayed = _device_event(effect, event[0])
                if relayed is not None:
                    pending.insert(0, ("device", relayed))
            if where == "device" and effect.to is STAFF:
                relayed = _server_event(effect, event[0])
                if relayed is not None:
                    pending.insert(0, ("server", relayed))
    assert machines["server"].end_reason is reason
    assert machines["device"].end_reason is reason


# --- bad construction --------------------------------------------------------


@pytest.mark.parametrize("bad", [0, -1.0, math.nan, math.inf, True, "60"])
@pytest.mark.parametrize("field", ["ring_timeout", "connect_timeout"])
def test_config_refuses_nonsense_timeouts(field: str, bad: object) -> None:
    with pytest.raises(ValueError, match=field):
        CallConfig(**{field: bad})  # type: ignore[arg-type]


def test_inconsistent_values_are_refused() -> None:
    with pytest.raises(ValueError):
        Call(state=CallState.ENDED)
    with pytest.raises(ValueError):
        Call(end_reason=EndReason.NOT_ANSWERED)
    with pytest.raises(ValueError):
        Notify(STAFF, Notice.ENDED)
    with pytest.raises(ValueError):
        Notify(STAFF, Notice.RINGING, EndReason.NOT_ANSWERED)


def test_a_non_event_is_a_programming_error() -> None:
    with pytest.raises(TypeError, match="not a call event"):
        step(Call(), "answer", 0.0)  # type: ignore[arg-type]


def test_side_other() -> None:
    assert STAFF.other is CITIZEN and CITIZEN.other is STAFF


# --- properties over random event orders -------------------------------------

ORDER = list(CallState)
STAMPS = ("placed_at", "rang_at", "answered_at", "connected_at", "ended_at")

finite_times = st.floats(min_value=-10.0, max_value=200.0, allow_nan=False)
any_times = st.one_of(
    finite_times, finite_times, finite_times, st.sampled_from([math.nan, math.inf, -math.inf])
)


events: st.SearchStrategy[Event] = st.one_of(
    st.sampled_from(
        [Ring(), RingAck(), Offered(), Answer(), MediaConnected(), MediaFailed(), Cancel(), DeviceOffline(), Busy(),
         TimerFired()]
    ),
    st.builds(HangUp, st.sampled_from(Side)),
)


def events_at(times: st.SearchStrategy[float]) -> st.SearchStrategy[Timed]:
    return st.tuples(times, events)


configs = st.builds(
    CallConfig,
    ring_timeout=st.floats(min_value=0.001, max_value=120.0),
    connect_timeout=st.floats(min_value=0.001, max_value=120.0),
)


@st.composite
def ordered_events(draw: st.DrawFn) -> list[Timed]:
    """Realistic runs: times move forward, events arrive in any order."""
    kinds = draw(st.lists(events, max_size=25))
    gaps = draw(st.lists(st.floats(0.0, 40.0), min_size=len(kinds), max_size=len(kinds)))
    now, out = 0.0, list[Timed]()
    for kind, gap in zip(kinds, gaps, strict=True):
        now += gap
        out.append((now, kind))
    return out


def check_run(config: CallConfig, timed_events: Sequence[Timed]) -> Call:
    call = Call(config=config)
    records: list[CallRecord] = []
    ended_notices: list[Notify] = []
    for event in timed_events:
        before = call
        after = feed(call, event)  # never raises: that is the first invariant
        call = after.state

        # Ended is absorbing.
        if before.state is CallState.ENDED:
            assert call is before and effects_as_text(after.actions) == []
            assert outcome(after) in ("already_ended", "invalid_time")
        if outcome(after) == "invalid_time":
            assert call is before and effects_as_text(after.actions) == []
        # Only forward.
        assert ORDER.index(call.state) >= ORDER.index(before.state)
        # An end reason exactly when ended.
        assert (call.state is CallState.ENDED) == (call.end_reason is not None)
        # Timestamps, once written, stay; present ones never decrease.
        for name in STAMPS:
            if getattr(before, name) is not None:
                assert getattr(call, name) == getattr(before, name)
        present = [getattr(call, name) for name in STAMPS if getattr(call, name) is not None]
        assert present == sorted(present)
        assert all(math.isfinite(t) for t in present)
        # The state's own timestamp is there.
        needed = {
            CallState.RINGING: "placed_at",
            CallState.CONNECTING: "answered_at",
            CallState.IN_CALL: "connected_at",
            CallState.ENDED: "ended_at",
        }.get(call.state)
        assert needed is None or getattr(call, needed) is not None
        # An ignored event only ever carries the effects of a passed deadline.
        if outcome(after) != "applied":
            for effect in after.actions[:-1]:
                assert not isinstance(effect, Ignored)
                reason = effect.reason if isinstance(effect, Notify) else effect.record.reason
                assert reason in (EndReason.NOT_ANSWERED, EndReason.DID_NOT_RING, EndReason.MEDIA_FAILED)
        for effect in after.actions:
            if isinstance(effect, Ignored):
                continue
            if isinstance(effect, RecordCallEnd):
                assert effect.record == call.record
                records.append(effect.record)
            elif effect.notice is Notice.ENDED:
                assert effect.reason is call.end_reason
                ended_notices.append(effect)

    # Exactly one record, and one end notice per side at most.
    assert len(records) == (1 if call.state is CallState.ENDED else 0)
    sides = [n.to for n in ended_notices]
    assert len(sides) == len(set(sides))
    if records:
        record = records[0]
        assert record.ring_duration is None or record.ring_duration >= 0
        assert record.talk_duration is None or record.talk_duration >= 0
    return call


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configs, st.lists(events_at(any_times), max_size=30))
def test_random_events_in_random_time_order(config: CallConfig, timed_events: list[Timed]) -> None:
    check_run(config, timed_events)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configs, ordered_events())
def test_random_events_in_time_order(config: CallConfig, timed_events: list[Timed]) -> None:
    check_run(config, timed_events)


@settings(max_examples=200, deadline=None)
@given(configs, ordered_events())
def test_every_running_deadline_ends_the_call(config: CallConfig, timed_events: list[Timed]) -> None:
    call = check_run(config, timed_events)
    deadline = call.next_deadline
    if deadline is None:
        assert call.state in (CallState.IDLE, CallState.IN_CALL, CallState.ENDED)
        return
    ended = feed(call, (deadline, TimerFired())).state
    if call.state is CallState.RINGING:
        expected = EndReason.NOT_ANSWERED if call.rang_at is not None else EndReason.DID_NOT_RING
    else:
        expected = EndReason.MEDIA_FAILED
    assert ended.end_reason is expected
    assert ended.ended_at == deadline
