"""What the citizen's screen shows, and what the UI does, decided without I/O.

Sans-I/O like :mod:`kiosk.protocol.call`: :func:`step` takes the current
:class:`UiState`, one event (a message from the agent, or something that
happened locally: a button press, the peer connecting, time passing) and the
time on the caller's clock, and returns the new state plus the *actions* the
I/O layer must carry out (send a message to the agent, start, feed or close
the WebRTC peer). :func:`screen` turns a state into the :class:`Screen` to
render; the Kivy app and the headless CLI both only render it.

The call on the device is mirrored with the shared call state machine
(:class:`kiosk.protocol.call.Call`), so the device's ring and connect
timeouts and its handling of duplicated or crossed messages are the same code
the server runs. Nothing here raises for any event in any state, and a call
that has ended stays ended: late messages for it are ignored, a repeated ring
with its id does not ring again, and nothing but its quality report is sent
for it any more.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Final, Literal, TypeAlias

from kiosk.protocol import call as c
from kiosk.protocol import messages as m

__all__ = [
    "AcceptAnswer",
    "Action",
    "AgentConnected",
    "AgentLost",
    "AnswerPressed",
    "CallView",
    "ClosePeer",
    "Event",
    "HangUpPressed",
    "MediaDown",
    "MediaUp",
    "OfferReady",
    "QualityReady",
    "Screen",
    "ScreenName",
    "Send",
    "StartPeer",
    "Tick",
    "Transition",
    "UiState",
    "initial_state",
    "next_deadline",
    "screen",
    "step",
]

#: How long the "call ended" screen stays before the idle screen returns.
ENDED_SCREEN_SECONDS: Final = 5.0
#: How long "starting" may show before a missing agent counts as offline.
STARTING_SECONDS: Final = 3.0
#: Ended call ids remembered, so a late duplicate ring never rings again.
REMEMBERED_CALLS: Final = 32

ScreenName: TypeAlias = Literal["starting", "offline", "idle", "ringing", "connecting", "in-call", "ended"]
AgentLink: TypeAlias = Literal["connecting", "up", "down"]
PeerStage: TypeAlias = Literal["none", "starting", "offered", "accepted"]


# --- local events (the agent's messages are events too) ----------------------


@dataclass(frozen=True, slots=True)
class AgentConnected:
    """The agent's socket is connected and our hello is sent."""


@dataclass(frozen=True, slots=True)
class AgentLost:
    """The agent's socket closed (the agent restarts, or stopped)."""


@dataclass(frozen=True, slots=True)
class AnswerPressed:
    """The citizen pressed answer. ``call_id`` None: whatever is ringing."""

    call_id: str | None = None


@dataclass(frozen=True, slots=True)
class HangUpPressed:
    """The citizen pressed hang-up. ``call_id`` None: the current call."""

    call_id: str | None = None


@dataclass(frozen=True, slots=True)
class OfferReady:
    """The peer's SDP offer, its ICE candidates gathered."""

    message: m.CallAnswer


@dataclass(frozen=True, slots=True)
class MediaUp:
    """The peer connection reached "connected"."""

    call_id: str


@dataclass(frozen=True, slots=True)
class MediaDown:
    """The peer could not be set up, or failed for good."""

    call_id: str
    why: str = ""


@dataclass(frozen=True, slots=True)
class LinkChanged:
    """The call's link as the peer judges it: "good", "poor" or "lost" (kiosk.media.link)."""

    call_id: str
    link: str


@dataclass(frozen=True, slots=True)
class QualityReady:
    """A closed peer's quality summary (only for calls that had media)."""

    report: m.CallQualityReport


@dataclass(frozen=True, slots=True)
class Tick:
    """Time passed; fed at :func:`next_deadline`."""


LocalEvent: TypeAlias = (
    AgentConnected | AgentLost | AnswerPressed | HangUpPressed | OfferReady | MediaUp | MediaDown
    | LinkChanged | QualityReady | Tick
)
Event: TypeAlias = LocalEvent | m.AgentStatus | m.Rejected | m.CallRing | m.CallAccept | m.CallEnded


# --- actions out ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    """Send ``message`` to the agent (on its way to the server)."""

    message: m.UiToAgent


@dataclass(frozen=True, slots=True)
class StartPeer:
    """Open camera and microphone, create the peer, make the offer (then :class:`OfferReady`)."""

    ring: m.CallRing


@dataclass(frozen=True, slots=True)
class AcceptAnswer:
    """Apply the staff browser's SDP answer to the call's peer."""

    call_id: str
    sdp: str


@dataclass(frozen=True, slots=True)
class ClosePeer:
    """Close the call's peer and media (then :class:`QualityReady` if it had media)."""

    call_id: str


Action: TypeAlias = Send | StartPeer | AcceptAnswer | ClosePeer


# --- state -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CallView:
    """The one call the device is showing."""

    ring: m.CallRing
    machine: c.Call
    peer: PeerStage = "none"
    end_reason: str | None = None  # an EndReason value: the server's if it told us, else ours
    ended_at: float | None = None
    link: str = "good"  # "poor" or "lost": the citizen is told ("Dårlig forbindelse — billedet kan hakke")

    @property
    def call_id(self) -> str:
        return self.ring.call_id

    @property
    def ended(self) -> bool:
        return self.end_reason is not None


@dataclass(frozen=True, slots=True)
class UiState:
    started_at: float
    agent: AgentLink = "connecting"
    status: m.AgentStatus | None = None
    call: CallView | None = None
    finished: tuple[str, ...] = ()  # ids of ended calls, newest last
    screen_awake: bool = True


def initial_state(now: float, screen_awake: bool = True) -> UiState:
    return UiState(started_at=now, screen_awake=screen_awake)


@dataclass(frozen=True, slots=True)
class Transition:
    state: UiState
    actions: tuple[Action, ...] = ()


# --- the screen ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Screen:
    """What to render. ``citizen_name`` and ``contact_staff`` are for the screen
    only: :meth:`log_record` leaves them (and anything personal) out."""

    name: ScreenName
    call_id: str | None = None
    caller_name: str | None = None
    caller_role: str | None = None
    end_reason: str | None = None
    offline: Literal["agent", "server"] | None = None  # which link is missing
    device_state: m.DeviceState | None = None
    citizen_name: str | None = None
    contact_staff: tuple[str, ...] = ()
    link: str | None = None  # in a call: "poor" or "lost" shows the notice; None: all is well

    def log_record(self) -> dict[str, Any]:
        """One JSON-able line for logs and the headless CLI: no citizen data, no SDP."""
        record: dict[str, Any] = {"screen": self.name}
        for key, value in (
            ("call_id", self.call_id),
            ("caller", self.caller_name),
            ("role", self.caller_role),
            ("reason", self.end_reason),
            ("link", self.link),
            ("offline", self.offline),
            ("device_state", self.device_state),
        ):
            if value is not None:
                record[key] = value
        return record


_CALL_SCREENS: Final[dict[c.CallState, ScreenName]] = {
    c.CallState.IDLE: "ringing",  # never stored: a view starts ringing
    c.CallState.RINGING: "ringing",
    c.CallState.CONNECTING: "connecting",
    c.CallState.IN_CALL: "in-call",
    c.CallState.ENDED: "ended",
}


def screen(state: UiState) -> Screen:
    """The screen for ``state``. A call on screen comes before everything else."""
    view = state.call
    if view is not None:
        name: ScreenName = "ended" if view.ended else _CALL_SCREENS[view.machine.state]
        return Screen(
            name,
            call_id=view.call_id,
            caller_name=view.ring.caller_name,
            caller_role=view.ring.caller_role,
            end_reason=view.end_reason,
            link=view.link if view.link != "good" and not view.ended else None,
        )
    if state.agent == "connecting" or (state.agent == "up" and state.status is None):
        return Screen("starting")
    if state.agent == "down":
        return Screen("offline", offline="agent")
    status = state.status
    assert status is not None
    if not status.server_online:
        return Screen("offline", offline="server", device_state=status.state)
    return Screen(
        "idle",
        device_state=status.state,
        citizen_name=status.citizen_name,
        contact_staff=tuple(status.contact_staff),
    )


def next_deadline(state: UiState) -> float | None:
    """When the I/O layer should feed a :class:`Tick` (caller's clock), or None."""
    deadlines: list[float] = []
    if state.agent == "connecting":
        deadlines.append(state.started_at + STARTING_SECONDS)
    view = state.call
    if view is not None:
        if view.ended_at is not None:
            deadlines.append(view.ended_at + ENDED_SCREEN_SECONDS)
        elif view.machine.next_deadline is not None:
            deadlines.append(view.machine.next_deadline)
    return min(deadlines, default=None)


# --- the step ---------------------------------------------------------------------


def step(state: UiState, event: Event, now: float) -> Transition:
    """Feed one event at time ``now``. Never raises for any event in any state."""
    if not math.isfinite(now):
        return Transition(state)
    match event:
        case m.AgentStatus():
            return Transition(replace(state, status=event))
        case AgentConnected():
            return Transition(replace(state, agent="up"))
        case AgentLost():
            return _agent_lost(replace(state, agent="down", status=None), now)
        case m.CallRing():
            return _ring(state, event, now)
        case m.CallAccept(call_id=call_id, sdp=sdp):
            view = _live(state, call_id)
            if view is None or view.peer != "offered":
                return Transition(state)  # duplicate, stale, or before our offer went out
            return Transition(_with_call(state, replace(view, peer="accepted")), (AcceptAnswer(call_id, sdp),))
        case m.CallEnded(call_id=call_id, reason=reason):
            view = _live(state, call_id)
            if view is None:
                return Transition(state)
            return _finish(state, view, reason, now, ())
        case AnswerPressed(call_id=call_id):
            view = _live(state, call_id)
            if view is None or view.machine.state is not c.CallState.RINGING:
                return Transition(state)
            return _feed(state, view, c.Answer(), now)
        case HangUpPressed(call_id=call_id):
            view = _live(state, call_id)
            if view is None:
                return Transition(state)
            return _feed(state, view, c.HangUp(c.Side.CITIZEN), now)
        case OfferReady(message=answer):
            view = _live(state, answer.call_id)
            if view is None or view.peer != "starting":
                return Transition(state)
            return Transition(_with_call(state, replace(view, peer="offered")), (Send(answer),))
        case MediaUp(call_id=call_id):
            view = _live(state, call_id)
            if view is None:
                return Transition(state)
            return _feed(state, view, c.MediaConnected(), now)
        case MediaDown(call_id=call_id):
            view = _live(state, call_id)
            if view is None:
                return Transition(state)
            return _feed(state, view, c.MediaFailed(), now)
        case LinkChanged(call_id=call_id, link=link):
            view = _live(state, call_id)
            if view is None or view.link == link:
                return Transition(state)
            return Transition(_with_call(state, replace(view, link=link)))
        case QualityReady(report=report):
            return Transition(state, (Send(report),))  # the call has ended: that is when it is ready
        case Tick():
            return _tick(state, now)
        case _:  # Rejected, and anything else the agent may add: nothing on screen changes
            return Transition(state)


def _live(state: UiState, call_id: str | None) -> CallView | None:
    """The current call if it has not ended (and is ``call_id``, when given)."""
    view = state.call
    if view is None or view.ended or (call_id is not None and view.call_id != call_id):
        return None
    return view


def _with_call(state: UiState, view: CallView | None) -> UiState:
    return replace(state, call=view)


def _ring(state: UiState, ring: m.CallRing, now: float) -> Transition:
    if ring.call_id in state.finished:
        return Transition(state)  # a late duplicate of a call that is over
    current = state.call
    if current is not None and not current.ended:
        # The same ring again, or a second call while busy: the server keeps
        # one call per unit, so this is stale. Keep the citizen's call.
        return Transition(state)
    try:
        config = c.CallConfig(ring_timeout=ring.ring_timeout)
    except ValueError:
        config = c.CallConfig()
    machine = c.step(c.Call(config=config), c.Ring(), now).state
    machine = c.step(machine, c.RingAck(), now).state
    view = CallView(ring=ring, machine=machine)
    ringing = m.CallRinging(call_id=ring.call_id, screen_awake=state.screen_awake)
    return Transition(_with_call(state, view), (Send(ringing),))


def _feed(state: UiState, view: CallView, event: c.Event, now: float) -> Transition:
    """Feed the mirrored call machine and turn what changed into actions."""
    after = c.step(view.machine, event, now).state
    if after == view.machine:
        return Transition(state)  # a duplicate, or out of order: nothing changed
    new_view = replace(view, machine=after)
    if after.state is c.CallState.ENDED:
        assert after.end_reason is not None
        reason = after.end_reason
        sends: tuple[Action, ...] = ()
        if reason is c.EndReason.HUNG_UP_BY_CITIZEN:
            sends = (Send(m.CallHangUp(call_id=view.call_id, reason="hung-up")),)
        elif reason.media_failure:  # set-up failed, or media lost in the call
            sends = (Send(m.CallHangUp(call_id=view.call_id, reason="media-failed")),)
        # NOT_ANSWERED and DEVICE_OFFLINE: the server reaches the same verdict itself.
        return _finish(state, new_view, reason.value, now, sends)
    actions: tuple[Action, ...] = ()
    if view.machine.state is c.CallState.RINGING and after.state is c.CallState.CONNECTING:
        new_view = replace(new_view, peer="starting")
        actions = (StartPeer(view.ring),)
    elif after.state is c.CallState.IN_CALL and view.machine.state is not c.CallState.IN_CALL:
        actions = (Send(m.CallConnected(call_id=view.call_id)),)
    return Transition(_with_call(state, new_view), actions)


def _finish(state: UiState, view: CallView, reason: str, now: float, sends: tuple[Action, ...]) -> Transition:
    ended = replace(view, end_reason=reason, ended_at=now)
    close: tuple[Action, ...] = (ClosePeer(view.call_id),) if view.peer != "none" else ()
    finished = (*state.finished, view.call_id)[-REMEMBERED_CALLS:]
    # The hang-up goes out before the peer closes, so the server has ended the
    # call by the time the quality report follows.
    return Transition(replace(state, call=ended, finished=finished), sends + close)


def _agent_lost(state: UiState, now: float) -> Transition:
    view = _live(state, None)
    if view is None or view.machine.state is c.CallState.IN_CALL:
        # Media goes peer to peer: a call in progress outlives the agent's restart.
        return Transition(state)
    # Ringing or connecting, the answer can no longer reach the caller.
    return _feed(state, view, c.DeviceOffline(), now)


def _tick(state: UiState, now: float) -> Transition:
    if state.agent == "connecting" and now >= state.started_at + STARTING_SECONDS:
        state = replace(state, agent="down")
    view = state.call
    if view is None:
        return Transition(state)
    if view.ended_at is not None:
        if now >= view.ended_at + ENDED_SCREEN_SECONDS:
            state = _with_call(state, None)
        return Transition(state)
    return _feed(state, view, c.TimerFired(), now) if _due(view, now) else Transition(state)


def _due(view: CallView, now: float) -> bool:
    deadline = view.machine.next_deadline
    return deadline is not None and now >= deadline
