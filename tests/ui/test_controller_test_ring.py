"""Support's test ring in the screen's pure machine: it rings as for a call, a touch answers,
its time runs out, a call is never interrupted and a real call beats it."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from kiosk.protocol import messages as m
from kiosk.protocol.call import EndReason
from kiosk.ui import controller as ui

from .test_controller import RING, Driver, idle, in_call


def ring_test(request_id: str = "t1", seconds: float = 60.0) -> m.RingTestRequest:
    return m.RingTestRequest(request_id=request_id, ring_seconds=seconds)


def test_a_touch_answers_the_test_ring_thanks_and_the_screen_returns() -> None:
    d = idle()
    assert d.feed(ring_test(), at=1000.0) == (ui.StartTestRinging("t1"),)
    shown = d.shown()
    assert shown.name == "test-ring" and shown.caller_name is None and shown.call_id is None  # nobody calls
    assert ui.next_deadline(d.state) == 1060.0
    assert d.feed(ui.AnswerPressed(), at=1012.34) == (ui.RingTestOver("t1", "answered", 12.3), ui.StopRinging("t1"))
    assert d.shown().name == "test-ring-answered"
    assert d.feed(ui.AnswerPressed(), at=1013.0) == ()  # a second touch answers nothing more
    assert ui.next_deadline(d.state) == 1012.34 + ui.TEST_THANKS_SECONDS
    assert d.feed(ui.TimePassed(), at=1012.34 + ui.TEST_THANKS_SECONDS) == ()
    assert d.shown().name == "idle" and ui.next_deadline(d.state) is None


def test_an_unanswered_test_ring_stops_at_its_time_and_says_so() -> None:
    d = idle()
    d.feed(ring_test(seconds=5.0), at=1000.0)
    assert d.feed(ui.TimePassed(), at=1004.9) == ()
    assert d.feed(ui.TimePassed(), at=1005.0) == (ui.RingTestOver("t1", "not-answered"), ui.StopRinging("t1"))
    assert d.shown().name == "idle"


def test_an_unassigned_unit_rings_too_and_returns_to_ready() -> None:
    d = Driver()
    d.feed(ui.AgentConnected())
    d.feed(m.AgentStatus(state="enrolled-unassigned", server_online=True))
    assert d.feed(ring_test(), at=1000.0) == (ui.StartTestRinging("t1"),)
    d.feed(ui.AnswerPressed(), at=1003.0)
    d.feed(ui.TimePassed(), at=1003.0 + ui.TEST_THANKS_SECONDS)
    assert d.shown().name == "ready"


def test_a_call_in_progress_refuses_the_test_and_goes_on_undisturbed() -> None:
    for d in (in_call(), idle()):
        if d.state.call is None:
            d.feed(RING)  # ringing is a call too: the citizen sees who calls, not a test
        before = d.state
        assert d.feed(ring_test()) == (ui.RingTestOver("t1", "in-call"),)
        assert d.state == before


def test_a_real_call_beats_a_ringing_test() -> None:
    d = idle()
    d.feed(ring_test(), at=1000.0)
    actions = d.feed(RING, at=1002.0)
    assert actions[0] == ui.RingTestOver("t1", "call-came")
    assert ui.StopRinging("t1") in actions and ui.StartRinging(RING) in actions
    assert d.shown().name == "ringing" and d.state.test_ring is None


def test_the_answer_press_of_a_call_is_not_taken_by_a_test_and_a_stale_id_answers_nothing() -> None:
    d = idle()
    d.feed(ring_test(), at=1000.0)
    assert d.feed(ui.AnswerPressed("some-old-call"), at=1001.0) == ()
    assert d.feed(ui.AnswerPressed("t1"), at=1002.0)[0] == ui.RingTestOver("t1", "answered", 2.0)


def test_a_newer_test_replaces_a_ringing_one_and_a_repeat_changes_nothing() -> None:
    d = idle()
    d.feed(ring_test("t1"), at=1000.0)
    assert d.feed(ring_test("t1"), at=1001.0) == ()
    actions = d.feed(ring_test("t2"), at=1002.0)
    assert actions == (ui.RingTestOver("t1", "not-answered"), ui.StopRinging("t1"), ui.StartTestRinging("t2"))


def test_the_test_closes_the_setup_and_the_hidden_corner_waits() -> None:
    d = idle()
    d.state = ui.initial_state(d.now, settings=ui.Settings(staff_pin="1234"))
    d.feed(ui.AgentConnected())
    d.feed(m.AgentStatus(state="assigned", server_online=True))
    d.feed(ui.CornerHeld())
    assert d.shown().name == "setup-pin"
    d.feed(ring_test())
    assert d.shown().name == "test-ring"
    d.feed(ui.CornerHeld())
    assert d.shown().name == "test-ring"


def test_the_words_of_a_call_that_ended_give_way_to_the_test() -> None:
    d = in_call()
    d.feed(ui.HangUpPressed())
    assert d.shown().name == "ended"
    d.feed(ring_test())
    assert d.shown().name == "test-ring"


def test_losing_the_agent_ends_the_test_quietly() -> None:
    d = idle()
    d.feed(ring_test())
    assert d.feed(ui.AgentLost()) == (ui.StopRinging("t1"),)
    assert d.state.test_ring is None


ENDED = m.CallEnded(call_id=RING.call_id, reason=EndReason.CANCELLED_BY_CALLER)
events = st.one_of(
    st.builds(ring_test, st.sampled_from(["t1", "t2"]), st.sampled_from([3.0, 60.0])),
    st.sampled_from([ui.AnswerPressed(), ui.TimePassed(), RING, ENDED,
                     ui.HangUpPressed(), ui.AgentLost(), ui.AgentConnected()]),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(events, st.sampled_from([0.0, 0.5, 4.0, 61.0])), max_size=30))
def test_each_test_ring_is_told_once_and_its_sound_stops(sequence: list[tuple[ui.Event, float]]) -> None:
    d = idle()
    told: list[str] = []
    sounding: set[str] = set()
    for event, delay in sequence:
        for action in d.feed(event, at=d.now + delay):
            match action:
                case ui.RingTestOver(request_id=request_id, answer=answer, answered_after=after):
                    assert (answer == "answered") == (after is not None)
                    if answer != "in-call":
                        told.append(request_id)
                case ui.StartTestRinging(request_id=request_id) | ui.StartRinging(ring=m.CallRing(call_id=request_id)):
                    assert not sounding, "two rings at once"
                    sounding.add(request_id)
                case ui.StopRinging(call_id=request_id):
                    sounding.discard(request_id)
        test = d.state.test_ring
        assert (test is not None and test.answered_at is None) == bool(sounding & {"t1", "t2"})
    assert len(told) <= sum(isinstance(e, m.RingTestRequest) for e, _ in sequence)
