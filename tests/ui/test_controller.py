"""The UI controller, without sockets or peers: (state, event) -> (state, actions)."""

from __future__ import annotations

import json
import math
import typing

from hypothesis import given, settings
from hypothesis import strategies as st

from kiosk.protocol import machine
from kiosk.protocol import messages as m
from kiosk.protocol.call import EndReason
from kiosk.ui import controller as ui
from kiosk.ui.controller import (
    AcceptAnswer,
    AgentConnected,
    AgentLost,
    AnswerPressed,
    ClosePeer,
    HangUpPressed,
    MediaDown,
    MediaUp,
    OfferReady,
    QualityReady,
    Send,
    StartPeer,
    TimePassed,
    UiState,
)

from .fake_agent import CITIZEN, status

RING = m.CallRing(call_id="c1", caller_name="Anne", caller_role="caregiver", ice_servers=[], ring_timeout=60)


class Driver:
    """Feeds events at a given time and keeps the last actions."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self.state = ui.initial_state(now)
        self.actions: tuple[ui.Action, ...] = ()

    def feed(self, event: ui.Event, at: float | None = None) -> tuple[ui.Action, ...]:
        if at is not None:
            self.now = at
        transition = ui.step(self.state, event, self.now)
        self.state, self.actions = transition.state, transition.actions
        return self.actions

    def shown(self) -> ui.Screen:
        return ui.screen(self.state)


def idle() -> Driver:
    d = Driver()
    d.feed(AgentConnected())
    d.feed(status())
    return d


def in_call() -> Driver:
    d = idle()
    d.feed(RING)
    d.feed(AnswerPressed())
    d.feed(OfferReady(m.CallAnswer(call_id="c1", sdp="offer")))
    d.feed(m.CallAccept(call_id="c1", sdp="answer"))
    d.feed(MediaUp("c1"))
    return d


# --- starting, idle, offline ---------------------------------------------------


def test_starting_then_idle_once_the_agent_says_its_status() -> None:
    d = Driver()
    assert d.shown().name == "starting"
    d.feed(AgentConnected())
    assert d.shown().name == "starting"  # connected, no status yet
    d.feed(status())
    assert d.shown() == ui.Screen("idle", device_state="assigned", citizen_name=CITIZEN,
                                 contact_staff=("Anne Sygeplejerske",))


def test_no_agent_is_offline_after_a_grace_period_not_at_once() -> None:
    d = Driver(now=0.0)
    assert ui.next_deadline(d.state) == ui.STARTING_SECONDS
    d.feed(TimePassed(), at=1.0)
    assert d.shown().name == "starting"
    d.feed(TimePassed(), at=ui.STARTING_SECONDS)
    assert d.shown() == ui.Screen("offline", offline="agent")
    assert ui.next_deadline(d.state) is None


def test_server_offline_and_agent_lost_are_offline_screens() -> None:
    d = idle()
    d.feed(status(server_online=False))
    assert d.shown() == ui.Screen("offline", offline="server", device_state="assigned")
    d.feed(AgentLost())
    assert d.shown() == ui.Screen("offline", offline="agent")
    d.feed(AgentConnected())
    d.feed(status())
    assert d.shown().name == "idle"


def test_log_record_has_no_citizen_data() -> None:
    d = idle()
    assert d.shown().log_record() == {"screen": "idle", "device_state": "assigned"}
    d.feed(RING)
    assert d.shown().log_record() == {"screen": "ringing", "call_id": "c1", "caller": "Anne", "role": "caregiver"}
    assert CITIZEN not in json.dumps(d.shown().log_record())


# --- a call ----------------------------------------------------------------------


def test_a_call_from_ring_to_citizen_hang_up() -> None:
    d = idle()
    assert d.feed(RING) == (Send(m.CallRinging(call_id="c1", screen_awake=True)), ui.StartRinging(RING))
    assert d.shown().name == "ringing"
    assert d.feed(AnswerPressed()) == (StartPeer(RING), ui.StopRinging("c1"))  # no offer went out ringing
    assert d.shown().name == "connecting"
    offer = m.CallAnswer(call_id="c1", sdp="offer")
    assert d.feed(OfferReady(offer)) == (Send(offer),)
    assert d.feed(m.CallAccept(call_id="c1", sdp="answer")) == (AcceptAnswer("c1", "answer"),)
    assert d.feed(MediaUp("c1")) == (Send(m.CallConnected(call_id="c1")),)
    assert d.shown().name == "in-call"
    assert d.feed(MediaUp("c1")) == ()  # ICE recovering reports connected again
    assert d.feed(HangUpPressed()) == (Send(m.CallHangUp(call_id="c1", reason="hung-up")), ClosePeer("c1"))
    assert d.shown() == ui.Screen("ended", call_id="c1", caller_name="Anne", caller_role="caregiver",
                                 end_reason="hung_up_by_citizen")
    report = m.CallQualityReport(call_id="c1", quality={"frames_decoded": 40})
    assert d.feed(QualityReady(report)) == (Send(report),)


def test_a_pre_connected_call_offers_while_ringing_and_answers_without_sdp() -> None:
    d = idle()
    d.feed(RING)
    ring_offer = m.CallOffer(call_id="c1", sdp="offer")
    assert d.feed(OfferReady(ring_offer)) == (Send(ring_offer),)
    assert d.feed(OfferReady(ring_offer)) == ()  # sent once
    assert d.feed(m.CallAccept(call_id="c1", sdp="answer")) == (AcceptAnswer("c1", "answer"),)
    assert d.shown().name == "ringing"
    assert d.feed(MediaDown("c1")) == ()  # the ring's connection failing ends nothing: the answer offers anew
    assert d.shown().name == "ringing"
    assert d.feed(AnswerPressed()) == (StartPeer(RING, preconnected=True), ui.StopRinging("c1"))
    answered = m.CallAnswer(call_id="c1")
    assert d.feed(OfferReady(answered)) == (Send(answered),)
    assert d.feed(MediaUp("c1")) == (Send(m.CallConnected(call_id="c1")),)
    assert d.shown().name == "in-call"


def test_a_pre_connection_given_up_at_the_answer_takes_the_callers_answer_to_the_fresh_offer() -> None:
    d = idle()
    d.feed(RING)
    d.feed(OfferReady(m.CallOffer(call_id="c1", sdp="offer")))
    d.feed(m.CallAccept(call_id="c1", sdp="answer"))
    d.feed(AnswerPressed())
    fresh = m.CallAnswer(call_id="c1", sdp="fresh offer")
    assert d.feed(OfferReady(fresh)) == (Send(fresh),)
    assert d.feed(m.CallAccept(call_id="c1", sdp="fresh answer")) == (AcceptAnswer("c1", "fresh answer"),)


def test_a_ring_offer_that_comes_after_the_answer_is_not_sent_and_not_used() -> None:
    d = idle()
    d.feed(RING)
    assert d.feed(AnswerPressed()) == (StartPeer(RING, preconnected=False), ui.StopRinging("c1"))
    assert d.feed(OfferReady(m.CallOffer(call_id="c1", sdp="offer"))) == ()


def test_an_unanswered_pre_connected_ring_closes_its_peer() -> None:
    d = idle()
    d.feed(RING)
    d.feed(OfferReady(m.CallOffer(call_id="c1", sdp="offer")))
    d.feed(m.CallAccept(call_id="c1", sdp="answer"))
    cancelled = m.CallEnded(call_id="c1", reason=EndReason.CANCELLED_BY_CALLER)
    assert d.feed(cancelled) == (ClosePeer("c1"), ui.StopRinging("c1"))


def test_staff_hang_up_closes_the_peer_and_sends_nothing() -> None:
    d = in_call()
    assert d.feed(m.CallEnded(call_id="c1", reason=EndReason.HUNG_UP_BY_STAFF)) == (ClosePeer("c1"),)
    assert d.shown().end_reason == "hung_up_by_staff"
    assert d.feed(HangUpPressed()) == ()  # a press that crossed it


def test_the_ended_screen_gives_way_to_idle() -> None:
    d = in_call()
    d.feed(HangUpPressed(), at=2000.0)
    assert ui.next_deadline(d.state) == 2000.0 + ui.ENDED_SCREEN_SECONDS
    d.feed(TimePassed(), at=2000.0 + ui.ENDED_SCREEN_SECONDS - 0.1)
    assert d.shown().name == "ended"
    d.feed(TimePassed(), at=2000.0 + ui.ENDED_SCREEN_SECONDS)
    assert d.shown().name == "idle"
    assert d.feed(RING) == ()  # the same call again: over is over
    second = m.CallRing(call_id="c2", caller_name="Bo", caller_role="nurse", ice_servers=[])
    assert d.feed(second) == (Send(m.CallRinging(call_id="c2", screen_awake=True)), ui.StartRinging(second))


def test_ring_times_out_on_the_device_without_a_message() -> None:
    d = idle()
    d.feed(m.CallRing(call_id="c1", caller_name="Anne", caller_role="caregiver", ice_servers=[],
                      ring_timeout=45), at=100.0)
    assert ui.next_deadline(d.state) == 145.0
    assert d.feed(TimePassed(), at=145.0) == (ui.StopRinging("c1"),)  # the server reaches the same verdict
    assert d.shown().end_reason == "not_answered"
    assert d.feed(AnswerPressed(), at=146.0) == ()


def test_answer_after_the_ring_deadline_does_not_start_media() -> None:
    d = idle()
    d.feed(m.CallRing(call_id="c1", caller_name="A", caller_role="r", ice_servers=[], ring_timeout=10), at=0.0)
    assert d.feed(AnswerPressed(), at=11.0) == (ui.StopRinging("c1"),)  # the tick was late; the deadline counts
    assert d.shown().end_reason == "not_answered"


def test_connecting_too_long_is_media_failed() -> None:
    d = idle()
    d.feed(RING, at=0.0)
    d.feed(AnswerPressed(), at=1.0)
    deadline = ui.next_deadline(d.state)
    assert deadline is not None
    assert d.feed(TimePassed(), at=deadline) == (Send(m.CallHangUp(call_id="c1", reason="media-failed")),
                                           ClosePeer("c1"))
    assert d.shown().end_reason == "media_failed"


def test_media_failure_before_and_after_connecting() -> None:
    d = idle()
    d.feed(RING)
    assert d.feed(MediaDown("c1")) == ()  # nothing to fail while ringing
    d.feed(AnswerPressed())
    assert d.feed(MediaDown("c1", "no camera")) == (Send(m.CallHangUp(call_id="c1", reason="media-failed")),
                                                   ClosePeer("c1"))
    d = in_call()
    assert d.feed(MediaDown("c1")) == (Send(m.CallHangUp(call_id="c1", reason="media-failed")), ClosePeer("c1"))


def test_agent_lost_ends_a_ringing_call_but_not_one_in_progress() -> None:
    d = idle()
    d.feed(RING)
    assert d.feed(AgentLost()) == (ui.StopRinging("c1"),)
    assert d.shown().end_reason == "device_offline"
    d = idle()
    d.feed(RING)
    d.feed(AnswerPressed())
    assert d.feed(AgentLost()) == (ClosePeer("c1"),)
    d = in_call()
    assert d.feed(AgentLost()) == ()
    assert d.shown().name == "in-call"  # media is peer to peer; the agent comes back


def test_stale_and_foreign_messages_change_nothing() -> None:
    d = in_call()
    before = d.state
    for event in (
        m.CallRing(call_id="other", caller_name="X", caller_role="y", ice_servers=[]),  # busy
        m.CallAccept(call_id="c1", sdp="again"),
        m.CallAccept(call_id="other", sdp="x"),
        m.CallEnded(call_id="other", reason=EndReason.HUNG_UP_BY_STAFF),
        OfferReady(m.CallAnswer(call_id="c1", sdp="late")),
        AnswerPressed(),
        AnswerPressed("other"),
        HangUpPressed("other"),
        MediaUp("other"),
        MediaDown("other"),
        m.Rejected(reason="invalid", detail="x"),
    ):
        assert d.feed(event) == (), event
        assert d.state == before, event


def test_accept_before_our_offer_is_ignored() -> None:
    d = idle()
    d.feed(RING)
    d.feed(AnswerPressed())
    assert d.feed(m.CallAccept(call_id="c1", sdp="too early")) == ()


def test_a_nonsense_ring_timeout_falls_back_to_the_default() -> None:
    d = idle()
    d.feed(m.CallRing(call_id="c1", caller_name="A", caller_role="r", ice_servers=[], ring_timeout=-1), at=0.0)
    assert ui.next_deadline(d.state) == 60.0


def test_time_that_is_not_a_number_changes_nothing() -> None:
    d = idle()
    assert ui.step(d.state, RING, math.nan) == machine.Transition(d.state)


# --- properties over random message orders ---------------------------------------------

CALL_IDS = ("a", "b", "c")
REASONS = ("hung_up_by_staff", "not_answered", "media_failed", "cancelled_by_caller", "device_offline", "?")

events = st.one_of(
    st.builds(lambda cid, timeout: m.CallRing(call_id=cid, caller_name="Anne", caller_role="caregiver",
                                              ice_servers=[], ring_timeout=timeout),
              st.sampled_from(CALL_IDS), st.sampled_from([0.5, 5.0, 60.0, -3.0])),
    st.builds(lambda cid: m.CallAccept(call_id=cid, sdp="answer"), st.sampled_from(CALL_IDS)),
    st.builds(lambda cid, reason: m.CallEnded(call_id=cid, reason=reason),
              st.sampled_from(CALL_IDS), st.sampled_from(REASONS)),
    st.builds(lambda online: status(server_online=online), st.booleans()),
    st.just(m.Rejected(reason="invalid", detail="")),
    st.just(AgentConnected()),
    st.just(AgentLost()),
    st.builds(AnswerPressed, st.none() | st.sampled_from(CALL_IDS)),
    st.builds(HangUpPressed, st.none() | st.sampled_from(CALL_IDS)),
    st.builds(lambda cid: OfferReady(m.CallAnswer(call_id=cid, sdp="offer")), st.sampled_from(CALL_IDS)),
    st.builds(lambda cid: OfferReady(m.CallAnswer(call_id=cid)), st.sampled_from(CALL_IDS)),
    st.builds(lambda cid: OfferReady(m.CallOffer(call_id=cid, sdp="offer")), st.sampled_from(CALL_IDS)),
    st.builds(MediaUp, st.sampled_from(CALL_IDS)),
    st.builds(MediaDown, st.sampled_from(CALL_IDS)),
    st.builds(lambda cid: QualityReady(m.CallQualityReport(call_id=cid, quality={})), st.sampled_from(CALL_IDS)),
    st.just(TimePassed()),
    st.builds(ui.WallClock, st.sampled_from([0.0, 1e9, 1e9 + 3600 * 23, math.inf]), st.just(3600.0)),
    st.sampled_from([ui.CameraToggled(), ui.MicrophoneToggled(), ui.CornerHeld(), ui.SetupClosed()]),
    st.builds(ui.VolumeStep, st.sampled_from([-1, 1])),
    st.builds(m.ScreenshotRequest, st.sampled_from(["r1", "r2"]), st.booleans()),
    st.builds(m.RingTestRequest, st.sampled_from(["t1", "t2"]), st.sampled_from([3.0, 60.0])),
    st.builds(ui.ConsentAnswered, st.booleans()),
    st.builds(ui.PinEntered, st.sampled_from(["1234", "0000"])),
    st.just(ui.WakeTouched()),
)
# Time mostly moves forward, sometimes jumps, sometimes steps back (a clock set by NTP).
delays = st.sampled_from([0.0, 0.0, 0.1, 0.1, 1.0, 7.0, 61.0, -2.0])


def call_flow(call_id: str, end: str) -> list[ui.Event]:
    """One call's events in their normal order, ending one of several ways."""
    endings: dict[str, ui.Event] = {
        "citizen": HangUpPressed(call_id),
        "staff": m.CallEnded(call_id=call_id, reason=EndReason.HUNG_UP_BY_STAFF),
        "media": MediaDown(call_id),
    }
    return [
        m.CallRing(call_id=call_id, caller_name="Anne", caller_role="caregiver", ice_servers=[]),
        AnswerPressed(call_id),
        OfferReady(m.CallAnswer(call_id=call_id, sdp="offer")),
        m.CallAccept(call_id=call_id, sdp="answer"),
        MediaUp(call_id),
        endings[end],
        QualityReady(m.CallQualityReport(call_id=call_id, quality={})),
    ]


@st.composite
def steps(draw: st.DrawFn) -> list[tuple[ui.Event, float]]:
    """Random events, with whole calls woven in (in their order) so calls get far."""
    sequence = draw(st.lists(st.tuples(events, delays), max_size=40))
    for call_id in draw(st.lists(st.sampled_from(CALL_IDS), max_size=3)):
        flow = call_flow(call_id, draw(st.sampled_from(["citizen", "staff", "media"])))
        flow = flow[: draw(st.integers(1, len(flow)))]
        places = sorted(draw(st.lists(st.integers(0, len(sequence)), min_size=len(flow), max_size=len(flow))))
        for shift, (place, event) in enumerate(zip(places, flow, strict=True)):
            sequence.insert(place + shift, (event, draw(delays)))
    return sequence


@settings(max_examples=200, deadline=None)
@given(steps())
def test_any_order_of_events_never_raises_and_ended_is_final(sequence: list[tuple[ui.Event, float]]) -> None:
    now = 0.0
    state: UiState = ui.initial_state(now, settings=ui.Settings(staff_pin="1234"))
    ended: set[str] = set()
    rang: dict[str, int] = {}
    started: set[str] = set()
    ringing_now: str | None = None
    for event, dt in sequence:
        now += dt
        transition = ui.step(state, event, now)  # never raises
        state = transition.state
        shown = ui.screen(state)
        assert shown.name in typing.get_args(ui.ScreenName)
        if shown.call_id in ended:
            assert shown.name == "ended", (shown, sequence)  # ended is final
        for action in transition.actions:
            call_id = getattr(getattr(action, "message", None), "call_id", None) or getattr(action, "call_id", None)
            if isinstance(action, StartPeer):
                call_id = action.ring.call_id
                assert call_id not in started  # one peer per call
                started.add(call_id)
            if call_id in ended:
                # After the end, only its quality report (and closing its peer in the same step).
                assert (isinstance(action, Send) and isinstance(action.message, m.CallQualityReport)) \
                    or isinstance(action, ClosePeer), (action, sequence)
            if isinstance(action, Send) and isinstance(action.message, m.CallRinging):
                ringing = action.message.call_id
                rang[ringing] = rang.get(ringing, 0) + 1
                assert rang[ringing] == 1  # each call rings once
        if shown.name == "ended" and shown.call_id is not None:
            ended.add(shown.call_id)
        for action in transition.actions:  # the ring sound starts and stops in pairs, one at a time
            if isinstance(action, ui.StartRinging | ui.StartTestRinging):  # a call's ring, or support's test
                assert ringing_now is None
                ringing_now = action.ring.call_id if isinstance(action, ui.StartRinging) else action.request_id
            elif isinstance(action, ui.StopRinging):
                assert ringing_now == action.call_id
                ringing_now = None
        assert (ringing_now is not None) == (shown.name in ("ringing", "test-ring"))
        deadline = ui.next_deadline(state)
        assert deadline is None or math.isfinite(deadline)
        if state.call is not None and state.call.ended:
            assert not any(isinstance(a, (StartPeer, AcceptAnswer)) for a in transition.actions)


@settings(max_examples=150, deadline=None)
@given(steps())
def test_every_started_peer_is_closed_once_its_call_ends(sequence: list[tuple[ui.Event, float]]) -> None:
    now = 0.0
    state = ui.initial_state(now)
    open_peers: set[str] = set()
    for event, dt in sequence:
        now += dt
        transition = ui.step(state, event, now)
        state = transition.state
        for action in transition.actions:
            if isinstance(action, StartPeer):
                open_peers.add(action.ring.call_id)
            elif isinstance(action, Send) and isinstance(action.message, m.CallOffer):  # the ring's peer offered
                open_peers.add(action.message.call_id)
            elif isinstance(action, ClosePeer):
                assert action.call_id in open_peers  # only what was opened, and only once
                open_peers.remove(action.call_id)
        live = state.call.call_id if state.call is not None and not state.call.ended else None
        assert open_peers <= {live}, (open_peers, live)


def test_a_poor_link_in_a_call_is_shown_and_cleared_and_never_after_the_end() -> None:
    d = idle()
    d.feed(RING)
    call_id = RING.call_id
    d.feed(ui.LinkChanged(call_id, "poor"))
    assert d.shown().link == "poor" and d.shown().log_record()["link"] == "poor"
    d.feed(ui.LinkChanged("another-call", "lost"))  # not this call's
    assert d.shown().link == "poor"
    d.feed(ui.LinkChanged(call_id, "good"))
    assert d.shown().link is None and "link" not in d.shown().log_record()
    d.feed(ui.LinkChanged(call_id, "lost"))
    d.feed(m.CallEnded(call_id=call_id, reason=EndReason.CONNECTION_LOST))
    assert d.shown().name == "ended" and d.shown().link is None
