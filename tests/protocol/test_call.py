"""Tests for the sans-I/O call state machine (kiosk.protocol.call).

No sockets, no event loop, no clock: every event carries its own time.
The transition table below is written out by hand, independently of the
implementation, and covers every (state, event) pair.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Callable, Sequence

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
    MediaConnected,
    MediaFailed,
    Notice,
    Notify,
    Outcome,
    RecordCallEnd,
    Ring,
    RingAck,
    Side,
    Step,
    Tick,
)

pytestmark = pytest.mark.timeout(120)

STAFF, CITIZEN = Side.STAFF, Side.CITIZEN


def run(events: Sequence[Event], call: Call | None = None) -> Call:
    """Feed events one by one, returning the final call."""
    call = call if call is not None else Call()
    for event in events:
        call = call.handle(event).call
    return call


def effects_as_text(effects: Sequence[Effect]) -> list[tuple[str, ...]]:
    """Effects in a plain form the hand-written table can be compared with."""
    out: list[tuple[str, ...]] = []
    for effect in effects:
        if isinstance(effect, Notify):
            reason = effect.reason.value if effect.reason else ""
            out.append((effect.to.value, effect.notice.value, reason))
        else:
            out.append(("record", effect.record.reason.value))
    return out


# --- the exhaustive table ----------------------------------------------------

# How to reach each state, with events at t = 0, 1, 2, 3, 4.
SETUPS: dict[str, list[Event]] = {
    "idle": [],
    "ringing": [Ring(0.0)],
    "ringing_acked": [Ring(0.0), RingAck(1.0)],
    "connecting_unacked": [Ring(0.0), Answer(2.0)],
    "connecting": [Ring(0.0), RingAck(1.0), Answer(2.0)],
    "in_call": [Ring(0.0), RingAck(1.0), Answer(2.0), MediaConnected(3.0)],
    "ended": [Ring(0.0), RingAck(1.0), Answer(2.0), MediaConnected(3.0), HangUp(4.0, STAFF)],
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
EVENTS: dict[str, Event] = {
    "ring": Ring(T),
    "ring_ack": RingAck(T),
    "answer": Answer(T),
    "media_connected": MediaConnected(T),
    "media_failed": MediaFailed(T),
    "hang_up_staff": HangUp(T, STAFF),
    "hang_up_citizen": HangUp(T, CITIZEN),
    "cancel": Cancel(T),
    "device_offline": DeviceOffline(T),
    "busy": Busy(T),
    "tick": Tick(T),
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
    "answer": ("connecting", "applied", [(S, "answered", "")]),
    "media_connected": same("ringing", "out_of_order"),
    "media_failed": same("ringing", "out_of_order"),
    "hang_up_staff": ends("cancelled_by_caller", C),
    "hang_up_citizen": ends("hung_up_by_citizen", S),
    "cancel": ends("cancelled_by_caller", C),
    "device_offline": ends("device_offline", S),
    "busy": ends("device_busy", S),
    "tick": same("ringing", "applied"),
}
CONNECTING_ROW: dict[str, tuple[str, str, list[tuple[str, ...]]]] = {
    "ring": same("connecting", "duplicate"),
    "ring_ack": same("connecting", "duplicate"),
    "answer": same("connecting", "duplicate"),
    "media_connected": ("in_call", "applied", [(S, "connected", ""), (C, "connected", "")]),
    "media_failed": ends("media_failed", S, C),
    "hang_up_staff": ends("hung_up_by_staff", C),
    "hang_up_citizen": ends("hung_up_by_citizen", S),
    "cancel": ends("cancelled_by_caller", C),
    "device_offline": ends("device_offline", S),
    "busy": same("connecting", "out_of_order"),
    "tick": same("connecting", "applied"),
}
TABLE: dict[str, dict[str, tuple[str, str, list[tuple[str, ...]]]]] = {
    "idle": {
        "ring": ("ringing", "applied", [(C, "ring", "")]),
        "ring_ack": NO_CALL,
        "answer": NO_CALL,
        "media_connected": NO_CALL,
        "media_failed": NO_CALL,
        "hang_up_staff": NO_CALL,
        "hang_up_citizen": NO_CALL,
        "cancel": NO_CALL,
        "device_offline": ends("device_offline", S),
        "busy": ends("device_busy", S),
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
        "answer": same("in_call", "duplicate"),
        "media_connected": same("in_call", "duplicate"),
        "media_failed": ends("media_failed", S, C),
        "hang_up_staff": ends("hung_up_by_staff", C),
        "hang_up_citizen": ends("hung_up_by_citizen", S),
        # Staff's cancel crossed the media connecting: staff is leaving.
        "cancel": ends("hung_up_by_staff", C),
        "device_offline": ends("device_offline", S),
        "busy": same("in_call", "out_of_order"),
        "tick": same("in_call", "applied"),
    },
    "ended": {name: same("ended", "already_ended") for name in EVENTS},
}


def test_table_covers_every_state_and_event() -> None:
    assert {SETUP_STATE[name] for name in TABLE} == {s.value for s in CallState}
    event_classes = {type(e) for e in EVENTS.values()}
    assert event_classes == set(typing.get_args(Event))
    assert {e.side for e in EVENTS.values() if isinstance(e, HangUp)} == set(Side)
    for row in TABLE.values():
        assert row.keys() == EVENTS.keys()


@pytest.mark.parametrize("event_name", list(EVENTS))
@pytest.mark.parametrize("setup_name", list(SETUPS))
def test_every_state_event_pair(setup_name: str, event_name: str) -> None:
    before = run(SETUPS[setup_name])
    assert before.state.value == SETUP_STATE[setup_name]

    step = before.handle(EVENTS[event_name])

    state, outcome, effects = TABLE[setup_name][event_name]
    assert (step.call.state.value, step.outcome.value) == (state, outcome)
    assert effects_as_text(step.effects) == effects
    if outcome != "applied":
        assert step.call == before  # an ignored event changes nothing
    if step.call.state is CallState.ENDED and before.state is not CallState.ENDED:
        assert step.call.ended_at == T
        assert step.call.record is not None
        assert step.effects[-1] == RecordCallEnd(step.call.record)


# --- timestamps and the record -----------------------------------------------


def test_full_call_keeps_every_timestamp() -> None:
    call = run(
        [Ring(100.0), RingAck(100.5), Answer(108.0), MediaConnected(108.4), HangUp(190.0, STAFF)]
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
    assert run([Ring(0.0), RingAck(1.0), Answer(2.0)]).record is None


def test_ring_duration_unknown_when_the_device_never_confirmed_ringing() -> None:
    record = run([Ring(0.0), Cancel(10.0)]).record
    assert record is not None
    assert record.rang_at is None and record.ring_duration is None
    assert record.talk_duration is None


def test_refusal_before_ringing_is_placed_and_ended_at_once() -> None:
    step = Call().handle(DeviceOffline(42.0))
    assert step.call.record == CallRecord(
        reason=EndReason.DEVICE_OFFLINE,
        placed_at=42.0,
        rang_at=None,
        answered_at=None,
        connected_at=None,
        ended_at=42.0,
    )


def test_clock_stepping_back_never_makes_time_run_backwards() -> None:
    # NTP correcting a freshly booted kiosk's clock between two events.
    call = run([Ring(50.0), RingAck(20.0), Answer(10.0), MediaConnected(55.0), HangUp(0.0, STAFF)])
    assert (call.placed_at, call.rang_at, call.answered_at) == (50.0, 50.0, 50.0)
    assert (call.connected_at, call.ended_at) == (55.0, 55.0)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("setup_name", list(SETUPS))
def test_non_finite_time_is_refused_without_change(setup_name: str, bad: float) -> None:
    before = run(SETUPS[setup_name])
    for event in (Ring(bad), Answer(bad), HangUp(bad, CITIZEN), Tick(bad)):
        step = before.handle(event)
        assert step == Step(before, (), Outcome.INVALID_TIME)


# --- timeouts ----------------------------------------------------------------


def test_ring_timeout_ends_at_the_deadline_and_tells_both_sides() -> None:
    call = run([Ring(0.0), RingAck(2.0)])
    assert call.next_deadline == 60.0
    assert call.handle(Tick(59.999)).call.state is CallState.RINGING

    step = call.handle(Tick(60.0))

    assert step.outcome is Outcome.APPLIED
    assert step.call.end_reason is EndReason.NOT_ANSWERED
    assert effects_as_text(step.effects) == [
        (S, "ended", "not_answered"),
        (C, "ended", "not_answered"),
        ("record", "not_answered"),
    ]
    assert step.call.record is not None
    assert step.call.record.ring_duration == 58.0
    assert step.call.next_deadline is None


def test_a_late_tick_records_the_deadline_not_the_tick() -> None:
    # The timer fired 15 s late (a loaded server); the citizen still rang 60 s.
    call = run([Ring(0.0), Tick(75.0)])
    assert call.end_reason is EndReason.NOT_ANSWERED
    assert call.ended_at == 60.0


def test_ring_timeout_is_configurable_per_municipality() -> None:
    call = run([Ring(0.0)], Call(config=CallConfig(ring_timeout=20.0)))
    assert call.next_deadline == 20.0
    assert call.handle(Tick(20.0)).call.end_reason is EndReason.NOT_ANSWERED


def test_answer_after_the_deadline_finds_the_call_ended() -> None:
    # No tick was fed in time; the deadline still wins over the late answer.
    step = run([Ring(0.0)]).handle(Answer(61.0))
    assert step.outcome is Outcome.ALREADY_ENDED
    assert step.call.end_reason is EndReason.NOT_ANSWERED
    assert ("record", "not_answered") in effects_as_text(step.effects)


def test_connect_timeout_fails_media_that_never_came() -> None:
    call = run([Ring(0.0), Answer(5.0)], Call(config=CallConfig(connect_timeout=10.0)))
    assert call.next_deadline == 15.0
    assert call.handle(Tick(14.9)).call.state is CallState.CONNECTING
    step = call.handle(Tick(15.0))
    assert step.call.end_reason is EndReason.MEDIA_FAILED
    assert {e.to for e in step.effects if isinstance(e, Notify)} == {STAFF, CITIZEN}


@pytest.mark.parametrize("setup_name", ["idle", "in_call", "ended"])
def test_no_deadline_outside_ringing_and_connecting(setup_name: str) -> None:
    assert run(SETUPS[setup_name]).next_deadline is None


# --- crossing and duplicate messages -----------------------------------------


def test_answer_crossing_cancel_cancel_first() -> None:
    step = run([Ring(0.0), Cancel(9.0)]).handle(Answer(9.0))
    assert step.outcome is Outcome.ALREADY_ENDED and step.effects == ()
    assert step.call.end_reason is EndReason.CANCELLED_BY_CALLER


def test_answer_crossing_cancel_answer_first() -> None:
    call = run([Ring(0.0), Answer(9.0)])
    step = call.handle(Cancel(9.0))
    assert step.call.end_reason is EndReason.CANCELLED_BY_CALLER
    # The device, which thinks it answered, is told the call is gone.
    assert effects_as_text(step.effects)[0] == (C, "ended", "cancelled_by_caller")


def test_both_sides_hang_up_at_once_first_wins() -> None:
    call = run([Ring(0.0), Answer(1.0), MediaConnected(2.0)])
    first = call.handle(HangUp(30.0, CITIZEN))
    second = first.call.handle(HangUp(30.0, STAFF))
    assert first.call.end_reason is EndReason.HUNG_UP_BY_CITIZEN
    assert second.outcome is Outcome.ALREADY_ENDED and second.effects == ()
    assert second.call is first.call


def test_repeated_answer_and_both_peers_reporting_media() -> None:
    call = run([Ring(0.0), Answer(1.0)])
    again = call.handle(Answer(1.5))
    assert again.outcome is Outcome.DUPLICATE and again.call.answered_at == 1.0
    connected = call.handle(MediaConnected(2.0)).call
    other_peer = connected.handle(MediaConnected(2.1))
    assert other_peer.outcome is Outcome.DUPLICATE and other_peer.call.connected_at == 2.0


def test_repeated_ring_ack_keeps_the_first_time() -> None:
    call = run([Ring(0.0), RingAck(1.0), RingAck(3.0)])
    assert call.rang_at == 1.0


# --- the same machine on both sides ------------------------------------------


def _server_event(effect: Notify, now: float) -> Event | None:
    """What the server feeds when the device's machine notifies STAFF."""
    if effect.notice is Notice.RINGING:
        return RingAck(now)
    if effect.notice is Notice.ANSWERED:
        return Answer(now)
    if effect.notice is Notice.ENDED and effect.reason is EndReason.HUNG_UP_BY_CITIZEN:
        return HangUp(now, CITIZEN)
    return None


def _device_event(effect: Notify, now: float) -> Event | None:
    """What the device feeds when the server's machine notifies CITIZEN."""
    if effect.notice is Notice.RING:
        return Ring(now)
    if effect.notice is Notice.CONNECTED:
        return MediaConnected(now)
    if effect.notice is Notice.ENDED:
        by_reason: dict[EndReason | None, Callable[[float], Event]] = {
            EndReason.CANCELLED_BY_CALLER: Cancel,
            EndReason.HUNG_UP_BY_STAFF: lambda t: HangUp(t, STAFF),
            EndReason.MEDIA_FAILED: MediaFailed,
            EndReason.NOT_ANSWERED: Tick,  # the device's own deadline has passed too
        }
        return by_reason[effect.reason](now)
    return None


@pytest.mark.parametrize(
    ("script", "reason"),
    [
        # (which machine gets the event, the event)
        (
            [
                ("device", RingAck(0.1)),
                ("device", Answer(4.0)),
                ("server", MediaConnected(4.3)),
                ("device", HangUp(80.0, CITIZEN)),
            ],
            EndReason.HUNG_UP_BY_CITIZEN,
        ),
        ([("device", RingAck(0.1)), ("server", Cancel(12.0))], EndReason.CANCELLED_BY_CALLER),
        ([("device", RingAck(0.1)), ("server", Tick(60.0))], EndReason.NOT_ANSWERED),
    ],
)
def test_server_and_device_reach_the_same_end(
    script: list[tuple[str, Event]], reason: EndReason
) -> None:
    """Route each side's Notify effects to the other machine, as the I/O layers
    would, and check both keep the same record reason."""
    machines = {"server": Call(), "device": Call()}
    pending: list[tuple[str, Event]] = [("server", Ring(0.0)), *script]
    while pending:
        where, event = pending.pop(0)
        step = machines[where].handle(event)
        machines[where] = step.call
        for effect in step.effects:
            if not isinstance(effect, Notify):
                continue
            if where == "server" and effect.to is CITIZEN:
                relayed = _device_event(effect, event.now)
                if relayed is not None:
                    pending.insert(0, ("device", relayed))
            if where == "device" and effect.to is STAFF:
                relayed = _server_event(effect, event.now)
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
        Call().handle("answer")  # type: ignore[arg-type]


def test_side_other() -> None:
    assert STAFF.other is CITIZEN and CITIZEN.other is STAFF


# --- properties over random event orders -------------------------------------

ORDER = list(CallState)
STAMPS = ("placed_at", "rang_at", "answered_at", "connected_at", "ended_at")

finite_times = st.floats(min_value=-10.0, max_value=200.0, allow_nan=False)
any_times = st.one_of(
    finite_times, finite_times, finite_times, st.sampled_from([math.nan, math.inf, -math.inf])
)


def events_at(times: st.SearchStrategy[float]) -> st.SearchStrategy[Event]:
    return st.one_of(
        st.builds(Ring, times),
        st.builds(RingAck, times),
        st.builds(Answer, times),
        st.builds(MediaConnected, times),
        st.builds(MediaFailed, times),
        st.builds(HangUp, times, st.sampled_from(Side)),
        st.builds(Cancel, times),
        st.builds(DeviceOffline, times),
        st.builds(Busy, times),
        st.builds(Tick, times),
    )


configs = st.builds(
    CallConfig,
    ring_timeout=st.floats(min_value=0.001, max_value=120.0),
    connect_timeout=st.floats(min_value=0.001, max_value=120.0),
)


@st.composite
def ordered_events(draw: st.DrawFn) -> list[Event]:
    """Realistic runs: times move forward, events arrive in any order."""
    kinds = draw(st.lists(events_at(st.just(0.0)), max_size=25))
    gaps = draw(st.lists(st.floats(0.0, 40.0), min_size=len(kinds), max_size=len(kinds)))
    now, out = 0.0, []
    for kind, gap in zip(kinds, gaps, strict=True):
        now += gap
        out.append(dataclasses.replace(kind, now=now))
    return out


def check_run(config: CallConfig, events: Sequence[Event]) -> Call:
    call = Call(config=config)
    records: list[CallRecord] = []
    ended_notices: list[Notify] = []
    for event in events:
        before = call
        step = call.handle(event)  # never raises: that is the first invariant
        call = step.call

        # Ended is absorbing.
        if before.state is CallState.ENDED:
            assert call is before and step.effects == ()
            assert step.outcome in (Outcome.ALREADY_ENDED, Outcome.INVALID_TIME)
        if step.outcome is Outcome.INVALID_TIME:
            assert call is before and step.effects == ()
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
        if step.outcome is not Outcome.APPLIED:
            for effect in step.effects:
                reason = effect.reason if isinstance(effect, Notify) else effect.record.reason
                assert reason in (EndReason.NOT_ANSWERED, EndReason.MEDIA_FAILED)
        for effect in step.effects:
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
def test_random_events_in_random_time_order(config: CallConfig, events: list[Event]) -> None:
    check_run(config, events)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configs, ordered_events())
def test_random_events_in_time_order(config: CallConfig, events: list[Event]) -> None:
    check_run(config, events)


@settings(max_examples=200, deadline=None)
@given(configs, ordered_events())
def test_every_running_deadline_ends_the_call(config: CallConfig, events: list[Event]) -> None:
    call = check_run(config, events)
    deadline = call.next_deadline
    if deadline is None:
        assert call.state in (CallState.IDLE, CallState.IN_CALL, CallState.ENDED)
        return
    ended = call.handle(Tick(deadline)).call
    expected = EndReason.NOT_ANSWERED if call.state is CallState.RINGING else EndReason.MEDIA_FAILED
    assert ended.end_reason is expected
    assert ended.ended_at == deadline
