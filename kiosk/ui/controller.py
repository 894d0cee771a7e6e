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

Besides calls it decides the quiet screens: not ready, awaiting approval,
ready for a new citizen, idle with the planned visits (asleep at night), a
reminder before a visit, the citizen's consent before support looks at the
screen, support's test ring, and the staff setup behind a PIN. The wall clock
arrives as an event (:class:`WallClock`) so the step stays pure; ``now`` is
always monotonic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal, TypeAlias

import msgspec

from kiosk.protocol import call as c
from kiosk.protocol import machine
from kiosk.protocol import messages as m
from kiosk.protocol.machine import Transition
from kiosk.protocol.screen_settings import VOLUME_STEPS, ScreenSettings

__all__ = [
    "VOLUME_STEPS",
    "AcceptAnswer",
    "Action",
    "AgentConnected",
    "AgentLost",
    "AnswerPressed",
    "CallView",
    "CameraToggled",
    "Chime",
    "ClosePeer",
    "ConsentAnswered",
    "ConsentGiven",
    "CornerHeld",
    "Event",
    "HangUpPressed",
    "MediaDown",
    "MediaUp",
    "MicrophoneToggled",
    "OfferReady",
    "PinEntered",
    "QualityReady",
    "RingTestOver",
    "Screen",
    "ScreenName",
    "Send",
    "SetCamera",
    "SetMicrophone",
    "SetVolume",
    "Settings",
    "SetupClosed",
    "SetupPage",
    "StartPeer",
    "StartRinging",
    "StartTestRinging",
    "StopRinging",
    "TimePassed",
    "UiState",
    "UiTransition",
    "VisitLine",
    "VolumeStep",
    "WakeTouched",
    "WallClock",
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
#: Support's request to see the screen: no answer within this long is a no.
CONSENT_SECONDS: Final = 60.0
#: The PIN pad closes after this long untouched; the open setup after SETUP_SECONDS.
PIN_SECONDS: Final = 60.0
SETUP_SECONDS: Final = 600.0
#: A planned visit's reminder stays this long after the planned time (staff may be late).
REMINDER_AFTER_SECONDS: Final = 300.0
#: A touch on the dark night screen shows it this long (wall-clock seconds).
WOKEN_SECONDS: Final = 60.0
#: After a test ring is answered, its thanks stay this long before the screen returns.
TEST_THANKS_SECONDS: Final = 5.0

ScreenName: TypeAlias = Literal[
    "starting", "offline", "not-ready", "awaiting-approval", "ready", "idle", "reminder", "ringing",
    "connecting", "in-call", "ended", "consent", "setup-pin", "setup", "test-ring", "test-ring-answered",
]
AgentLink: TypeAlias = Literal["connecting", "up", "down"]
#: The call's connection: no offer sent yet; answered with none sent yet ("starting"); an offer
#: sent (while ringing, or in the answer) awaiting the caller's SDP answer; that answer applied.
PeerStage: TypeAlias = Literal["none", "starting", "offered", "accepted"]
SetupPageName: TypeAlias = Literal["menu", "network", "volume", "test-call", "info"]
ConsentAnswer: TypeAlias = m.LookAnswer

#: The device states that are not "in service", and their screens. "awaiting-approval"
#: is the state the enrollment work adds for a unit the municipality has not approved yet.
_STATE_SCREENS: Final[dict[str, ScreenName]] = {
    "unprovisioned": "not-ready",
    "awaiting-approval": "awaiting-approval",
    "enrolled-unassigned": "ready",
    "wipe-pending": "ready",
}


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
    """The peer's SDP offer, its ICE candidates gathered: made while it rings (to send at once,
    so the connection comes up before the answer), or the answer itself once the camera and
    microphone are attached (with a fresh offer if it could not use the one made ringing)."""

    message: m.CallOffer | m.CallAnswer


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
class TimePassed:
    """Monotonic time passed; fed at :func:`next_deadline`."""


@dataclass(frozen=True, slots=True)
class WallClock:
    """The wall clock read now (Unix time, and the local offset from UTC in seconds):
    fed every few seconds, for the clock on screen, the visits, reminders and night hours."""

    time: float
    utc_offset: float = 0.0


@dataclass(frozen=True, slots=True)
class CameraToggled:
    """The citizen pressed "camera off" / "camera on" in a call."""


@dataclass(frozen=True, slots=True)
class MicrophoneToggled:
    """The citizen pressed "sound off" / "sound on" (their microphone) in a call."""


@dataclass(frozen=True, slots=True)
class VolumeStep:
    """A volume button: +1 louder, -1 softer."""

    delta: int


@dataclass(frozen=True, slots=True)
class ConsentAnswered:
    """The citizen pressed Ja or Nej."""

    yes: bool


@dataclass(frozen=True, slots=True)
class WakeTouched:
    """The citizen touched the dark night screen: show it for a while."""


@dataclass(frozen=True, slots=True)
class CornerHeld:
    """The hidden corner was held long enough: staff want the setup."""


@dataclass(frozen=True, slots=True)
class PinEntered:
    pin: str


@dataclass(frozen=True, slots=True)
class SetupPage:
    """Staff opened a page of the setup (any touch in the setup counts as activity)."""

    page: SetupPageName


@dataclass(frozen=True, slots=True)
class SetupClosed:
    """Staff closed the setup (or the PIN pad)."""


@dataclass(frozen=True, slots=True)
class SettingsChanged:
    settings: Settings


LocalEvent: TypeAlias = (
    AgentConnected | AgentLost | AnswerPressed | HangUpPressed | OfferReady | MediaUp | MediaDown
    | LinkChanged | QualityReady | TimePassed | WallClock | CameraToggled | MicrophoneToggled | VolumeStep
    | ConsentAnswered | CornerHeld | PinEntered | SetupPage | SetupClosed | SettingsChanged
    | WakeTouched
)
Event: TypeAlias = (
    LocalEvent | m.AgentStatus | m.Rejected | m.CallRing | m.CallAccept | m.CallEnded | m.ScreenshotRequest
    | m.RingTestRequest
)


# --- actions out ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    """Send ``message`` to the agent (on its way to the server)."""

    message: m.UiToAgent


@dataclass(frozen=True, slots=True)
class StartPeer:
    """Open camera and microphone and send them: on the connection made while it rang, or with a
    fresh offer; then :class:`OfferReady` with the :class:`~kiosk.protocol.messages.CallAnswer`.
    ``preconnected``: the offer made while it rang went to the caller (only then may it be used)."""

    ring: m.CallRing
    preconnected: bool = False


@dataclass(frozen=True, slots=True)
class AcceptAnswer:
    """Apply the staff browser's SDP answer to the call's peer."""

    call_id: str
    sdp: str


@dataclass(frozen=True, slots=True)
class ClosePeer:
    """Close the call's peer and media (then :class:`QualityReady` if it had media)."""

    call_id: str


@dataclass(frozen=True, slots=True)
class SetCamera:
    """Send the camera's picture (on) or a plain filler picture (off)."""

    call_id: str
    on: bool


@dataclass(frozen=True, slots=True)
class SetMicrophone:
    """Send the microphone's sound (on) or silence (off)."""

    call_id: str
    on: bool


@dataclass(frozen=True, slots=True)
class SetVolume:
    """Set the speaker to ``level`` of :data:`VOLUME_STEPS`."""

    level: int


@dataclass(frozen=True, slots=True)
class Chime:
    """Play the soft reminder chime once."""


@dataclass(frozen=True, slots=True)
class StartRinging:
    """Ring: the ring tone (rising), and the caller announced aloud between rings."""

    ring: m.CallRing


@dataclass(frozen=True, slots=True)
class StartTestRinging:
    """Ring as for a call, saying it is support's test ring (no caller: nobody calls)."""

    request_id: str


@dataclass(frozen=True, slots=True)
class StopRinging:
    """The ringing is over (answered, or the call ended); ``call_id`` is a test ring's request id for it."""

    call_id: str


@dataclass(frozen=True, slots=True)
class RingTestOver:
    """Support's test ring ended (or was refused): tell the agent, with what the speaker knows of its sound."""

    request_id: str
    answer: m.RingTestAnswer
    answered_after: float | None = None


@dataclass(frozen=True, slots=True)
class ConsentGiven:
    """The citizen's answer to a request to see the screen (the agent signs it as the result);
    ``unassigned`` when nobody lives with the unit and so nobody was asked."""

    request_id: str
    answer: ConsentAnswer


Action: TypeAlias = (
    Send | StartPeer | AcceptAnswer | ClosePeer | SetCamera | SetMicrophone | SetVolume | Chime | ConsentGiven
    | StartRinging | StopRinging | StartTestRinging | RingTestOver
)


# --- state -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CallView:
    """The one call the device is showing."""

    ring: m.CallRing
    machine: c.Call
    peer: PeerStage = "none"
    end_reason: str | None = None  # an EndReason value: the server's if it told us, else ours
    ended_at: float | None = None
    camera_on: bool = True
    microphone_on: bool = True
    link: str = "good"  # "poor" or "lost": the citizen is told ("Dårlig forbindelse — billedet kan hakke")

    @property
    def call_id(self) -> str:
        return self.ring.call_id

    @property
    def ended(self) -> bool:
        return self.end_reason is not None


class Settings(ScreenSettings, frozen=True):
    """The screen's settings (:class:`~kiosk.protocol.screen_settings.ScreenSettings`, from the
    agent's ui.json) and the unit's serial number, which the *not ready* screen shows."""

    serial: str = "?"


@dataclass(frozen=True, slots=True)
class Consent:
    request_id: str
    asked_at: float


@dataclass(frozen=True, slots=True)
class RingTestView:
    """Support's test ring on screen: ringing until answered or ``ring_seconds`` passed, then thanks a moment."""

    request_id: str
    rang_at: float
    ring_seconds: float
    answered_at: float | None = None

    @property
    def over_at(self) -> float:
        """When its screen gives way: the ring's time up, or the thanks shown long enough."""
        if self.answered_at is None:
            return self.rang_at + self.ring_seconds
        return self.answered_at + TEST_THANKS_SECONDS


@dataclass(frozen=True, slots=True)
class Setup:
    stage: Literal["pin", "open"]
    touched_at: float
    page: SetupPageName = "menu"
    wrong_pins: int = 0


@dataclass(frozen=True, slots=True)
class UiState:
    started_at: float
    agent: AgentLink = "connecting"
    status: m.AgentStatus | None = None
    call: CallView | None = None
    finished: tuple[str, ...] = ()  # ids of ended calls, newest last
    screen_awake: bool = True
    settings: Settings = field(default_factory=Settings)
    wall: WallClock | None = None
    consent: Consent | None = None
    test_ring: RingTestView | None = None
    setup: Setup | None = None
    reminded: tuple[float, ...] = ()  # times of the visits whose chime has sounded
    woken_until: float = 0.0  # wall clock: the night screen shows until then after a touch


def initial_state(now: float, screen_awake: bool = True, settings: Settings | None = None) -> UiState:
    return UiState(started_at=now, screen_awake=screen_awake, settings=settings or Settings())


#: The shared shape (:class:`kiosk.protocol.machine.Transition`) for this machine.
UiTransition: TypeAlias = machine.Transition[UiState, Action]


# --- the screen ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VisitLine:
    """One planned visit as listed: "I dag kl. 10:30 — Anne, sygeplejerske"."""

    day: Literal["today", "tomorrow"]
    hour: int
    minute: int
    staff_name: str
    staff_role: str
    kind: str = ""


@dataclass(frozen=True, slots=True)
class Screen:
    """What to render. ``citizen_name``, ``contact_staff``, ``visits`` and the
    staff names in them are for the screen only: :meth:`log_record` leaves them
    (and anything personal) out."""

    name: ScreenName
    call_id: str | None = None
    caller_name: str | None = None
    caller_role: str | None = None
    end_reason: str | None = None
    offline: Literal["agent", "server"] | None = None  # which link is missing
    device_state: m.DeviceState | None = None
    citizen_name: str | None = None
    contact_staff: tuple[str, ...] = ()
    visits: tuple[VisitLine, ...] = ()
    asleep: bool = False  # night hours: the display is dark until a call
    minutes_to_visit: int | None = None  # the reminder's "om 5 minutter"
    camera_on: bool = True
    microphone_on: bool = True
    volume: int = 0
    setup_page: SetupPageName | None = None
    wrong_pins: int = 0
    serial: str = ""
    link: str | None = None  # in a call: "poor" or "lost" shows the notice; None: all is well
    caller_photo: bytes | None = field(default=None, repr=False)  # ringing: the caller's PNG, if they gave one

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
            ("minutes", self.minutes_to_visit),
            ("page", self.setup_page),
        ):
            if value is not None:
                record[key] = value
        if self.visits:
            record["visits"] = len(self.visits)  # how many are listed; who and when stay off the log
        if self.name == "in-call":
            record.update(camera=self.camera_on, microphone=self.microphone_on)
        if self.asleep:
            record["asleep"] = True
        return record


_CALL_SCREENS: Final[dict[c.CallState, ScreenName]] = {
    c.CallState.IDLE: "ringing",  # never stored: a view starts ringing
    c.CallState.RINGING: "ringing",
    c.CallState.CONNECTING: "connecting",
    c.CallState.IN_CALL: "in-call",
    c.CallState.ENDED: "ended",
}


def screen(state: UiState) -> Screen:
    """The screen for ``state``. A call comes before everything, then support's test ring,
    the citizen's consent, the staff setup, then what the unit's state and the clock say."""
    settings = state.settings
    view = state.call
    if view is not None:
        name: ScreenName = "ended" if view.ended else _CALL_SCREENS[view.machine.state]
        return Screen(
            name,
            call_id=view.call_id,
            caller_name=view.ring.caller_name,
            caller_role=view.ring.caller_role,
            end_reason=view.end_reason,
            camera_on=view.camera_on,
            microphone_on=view.microphone_on,
            volume=settings.volume if name == "in-call" else 0,
            link=view.link if view.link != "good" and not view.ended else None,
            caller_photo=view.ring.caller_photo if name == "ringing" else None,
        )
    if state.test_ring is not None:
        return Screen("test-ring" if state.test_ring.answered_at is None else "test-ring-answered")
    if state.consent is not None:
        return Screen("consent")
    if state.setup is not None:
        setup = state.setup
        if setup.stage == "pin":
            return Screen("setup-pin", wrong_pins=setup.wrong_pins)
        status = state.status
        return Screen("setup", setup_page=setup.page, volume=settings.volume, serial=settings.serial,
                      device_state=status.state if status else None,
                      offline=None if status and status.server_online else "server")
    if state.agent == "connecting" or (state.agent == "up" and state.status is None):
        return Screen("starting")
    if state.agent == "down":
        return Screen("offline", offline="agent")
    status = state.status
    assert status is not None
    quiet = _STATE_SCREENS.get(status.state)
    if quiet is not None:
        return Screen(quiet, device_state=status.state, serial=settings.serial if quiet == "not-ready" else "",
                      offline=None if status.server_online else "server")
    if not status.server_online:
        return Screen("offline", offline="server", device_state=status.state, visits=_visit_lines(state))
    reminder = _reminder(state)
    if reminder is not None:
        visit, minutes = reminder
        return Screen("reminder", caller_name=visit.staff_name, caller_role=visit.staff_role,
                      minutes_to_visit=minutes, device_state=status.state)
    return Screen(
        "idle",
        device_state=status.state,
        citizen_name=status.citizen_name,
        contact_staff=tuple(status.contact_staff),
        visits=_visit_lines(state),
        asleep=_night(state),
    )


def _local(wall: WallClock, at: float) -> tuple[int, int, int]:
    """(local day number, hour, minute) of Unix time ``at`` at the wall clock's offset."""
    seconds = int(at + wall.utc_offset)
    day, rest = divmod(seconds, 86400)
    return day, rest // 3600, rest % 3600 // 60


def _visit_lines(state: UiState) -> tuple[VisitLine, ...]:
    """Today's and tomorrow's visits not yet past, in time order (none before the clock is known)."""
    wall, status = state.wall, state.status
    if wall is None or status is None:
        return ()
    today, _, _ = _local(wall, wall.time)
    lines: list[VisitLine] = []
    for visit in sorted(status.visits, key=lambda v: v.at):
        if visit.at + REMINDER_AFTER_SECONDS < wall.time:
            continue
        day, hour, minute = _local(wall, visit.at)
        if day in (today, today + 1):
            lines.append(VisitLine("today" if day == today else "tomorrow", hour, minute,
                                   visit.staff_name, visit.staff_role, visit.kind))
    return tuple(lines)


def _reminder(state: UiState) -> tuple[m.PlannedVisit, int] | None:
    """The visit due within the reminder time (or just past it), and the whole minutes left."""
    wall, status = state.wall, state.status
    if wall is None or status is None or state.settings.reminder_minutes <= 0:
        return None
    lead = state.settings.reminder_minutes * 60
    for visit in sorted(status.visits, key=lambda v: v.at):
        left = visit.at - wall.time
        if -REMINDER_AFTER_SECONDS <= left <= lead:
            return visit, max(0, math.ceil(left / 60))
    return None


def _night(state: UiState) -> bool:
    wall = state.wall
    if wall is None:
        return False
    if wall.time < state.woken_until:
        return False
    _, hour, _ = _local(wall, wall.time)
    start, end = state.settings.night_start_hour, state.settings.night_end_hour
    if start == end:
        return False
    return start <= hour < end if start < end else hour >= start or hour < end


def next_deadline(state: UiState) -> float | None:
    """When the I/O layer should feed a :class:`TimePassed` (monotonic clock), or None."""
    deadlines: list[float] = []
    if state.agent == "connecting":
        deadlines.append(state.started_at + STARTING_SECONDS)
    view = state.call
    if view is not None:
        if view.ended_at is not None:
            deadlines.append(view.ended_at + ENDED_SCREEN_SECONDS)
        elif view.machine.next_deadline is not None:
            deadlines.append(view.machine.next_deadline)
    if state.consent is not None:
        deadlines.append(state.consent.asked_at + CONSENT_SECONDS)
    if state.test_ring is not None:
        deadlines.append(state.test_ring.over_at)
    if state.setup is not None:
        deadlines.append(state.setup.touched_at + _setup_timeout(state.setup))
    return min(deadlines, default=None)


def _setup_timeout(setup: Setup) -> float:
    return PIN_SECONDS if setup.stage == "pin" else SETUP_SECONDS


# --- the step ---------------------------------------------------------------------


def step(state: UiState, event: Event, now: float) -> UiTransition:
    """Feed one event at time ``now``. Never raises for any event in any state."""
    if not math.isfinite(now):
        return Transition(state)
    after = _step(state, event, now)
    # The ring's sound follows the ringing state, whatever ended it: one place decides.
    was, is_ = _ring_sound(state), _ring_sound(after.state)
    if was is is_ or (was is not None and is_ is not None and was[0] == is_[0]):
        return after
    sounds: tuple[Action, ...] = ((StopRinging(was[0]),) if was else ()) + ((is_[1],) if is_ else ())
    return Transition(after.state, after.actions + sounds)


def _ring_sound(state: UiState) -> tuple[str, StartRinging | StartTestRinging] | None:
    """What rings now (a call, or support's test ring), by its id, and the action that starts its sound."""
    view = _live(state, None)
    if view is not None and view.machine.state is c.CallState.RINGING:
        return view.call_id, StartRinging(view.ring)
    test = state.test_ring
    if test is not None and test.answered_at is None:
        return test.request_id, StartTestRinging(test.request_id)
    return None


def _step(state: UiState, event: Event, now: float) -> UiTransition:
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
        case AnswerPressed(call_id=call_id) if _test_ringing(state, call_id):
            return _test_answered(state, now)
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
        case OfferReady(message=m.CallOffer() as offer):
            view = _live(state, offer.call_id)
            if view is None or view.peer != "none" or view.machine.state is not c.CallState.RINGING:
                return Transition(state)  # answered meanwhile: the answer makes its own offer
            return Transition(_with_call(state, replace(view, peer="offered")), (Send(offer),))
        case OfferReady(message=m.CallAnswer() as answer):
            view = _live(state, answer.call_id)
            if view is None or view.machine.state is not c.CallState.CONNECTING:
                return Transition(state)
            # A fresh offer waits for its own SDP answer; without one, the ring's connection goes on.
            stage: PeerStage = "offered" if answer.sdp is not None else view.peer
            return Transition(_with_call(state, replace(view, peer=stage)), (Send(answer),))
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
        case TimePassed():
            return _tick(state, now)
        case WallClock():
            return _wall(state, event)
        case CameraToggled() | MicrophoneToggled():
            return _toggle(state, event)
        case VolumeStep(delta=delta):
            level = min(VOLUME_STEPS, max(0, state.settings.volume + (1 if delta > 0 else -1 if delta < 0 else 0)))
            if level == state.settings.volume:
                return Transition(state)
            return Transition(replace(state, settings=msgspec.structs.replace(state.settings, volume=level)),
                              (SetVolume(level),))
        case m.ScreenshotRequest(request_id=request_id, ask_consent=False):
            return Transition(state, (ConsentGiven(request_id, "unassigned"),))
        case m.ScreenshotRequest(request_id=request_id):  # support asks to see the screen: the citizen first
            return _consent_asked(state, request_id, now)
        case m.RingTestRequest():
            return _test_ring(state, event, now)
        case ConsentAnswered(yes=yes):
            return _consent_answered(state, "yes" if yes else "no")
        case CornerHeld() | PinEntered() | SetupPage() | SetupClosed():
            return _setup(state, event, now)
        case SettingsChanged(settings=settings):  # staff changed them (set-config): the volume follows
            volume = (SetVolume(settings.volume),) if settings.volume != state.settings.volume else ()
            return Transition(replace(state, settings=settings), volume)
        case WakeTouched():
            if state.wall is None:
                return Transition(state)
            return Transition(replace(state, woken_until=state.wall.time + WOKEN_SECONDS))
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


def _ring(state: UiState, ring: m.CallRing, now: float) -> UiTransition:
    if ring.call_id in state.finished:
        return Transition(state)  # a late duplicate of a call that is over
    current = state.call
    if current is not None and not current.ended:
        # The same ring again, or a second call while busy: the server keeps
        # one call per unit, so this is stale. Keep the citizen's call.
        return Transition(state)
    test = state.test_ring
    if test is not None:  # a real call beats a test: the test ends and says why
        over: tuple[Action, ...] = (RingTestOver(test.request_id, "call-came"),) if test.answered_at is None else ()
        called = _ring(replace(state, test_ring=None), ring, now)
        return Transition(called.state, over + called.actions)
    try:
        config = c.CallConfig(ring_timeout=ring.ring_timeout)
    except ValueError:
        config = c.CallConfig()
    machine = c.step(c.Call(config=config), c.Ring(), now).state
    machine = c.step(machine, c.RingAck(), now).state
    view = CallView(ring=ring, machine=machine)
    ringing = m.CallRinging(call_id=ring.call_id, screen_awake=state.screen_awake)
    return Transition(replace(state, call=view, setup=None), (Send(ringing),))  # the call closes the setup


def _feed(state: UiState, view: CallView, event: c.Event, now: float) -> UiTransition:
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
        new_view = replace(new_view, peer="starting" if view.peer == "none" else view.peer)
        actions = (StartPeer(view.ring, preconnected=view.peer != "none"),)
    elif after.state is c.CallState.IN_CALL and view.machine.state is not c.CallState.IN_CALL:
        actions = (Send(m.CallConnected(call_id=view.call_id)),)
    return Transition(_with_call(state, new_view), actions)


def _finish(state: UiState, view: CallView, reason: str, now: float, sends: tuple[Action, ...]) -> UiTransition:
    ended = replace(view, end_reason=reason, ended_at=now)
    close: tuple[Action, ...] = (ClosePeer(view.call_id),) if view.peer != "none" else ()
    finished = (*state.finished, view.call_id)[-REMEMBERED_CALLS:]
    # The hang-up goes out before the peer closes, so the server has ended the
    # call by the time the quality report follows.
    return Transition(replace(state, call=ended, finished=finished), sends + close)


def _agent_lost(state: UiState, now: float) -> UiTransition:
    state = replace(state, test_ring=None)  # nobody is left to hear how a test ring went
    view = _live(state, None)
    if view is None or view.machine.state is c.CallState.IN_CALL:
        # Media goes peer to peer: a call in progress outlives the agent's restart.
        return Transition(state)
    # Ringing or connecting, the answer can no longer reach the caller.
    return _feed(state, view, c.DeviceOffline(), now)


def _tick(state: UiState, now: float) -> UiTransition:
    if state.agent == "connecting" and now >= state.started_at + STARTING_SECONDS:
        state = replace(state, agent="down")
    if state.setup is not None and now >= state.setup.touched_at + _setup_timeout(state.setup):
        state = replace(state, setup=None)
    if state.test_ring is not None and now >= state.test_ring.over_at:
        test = state.test_ring
        state = replace(state, test_ring=None)
        if test.answered_at is None:  # rang its time out: nobody answered
            after = _tick(state, now)
            return Transition(after.state, (RingTestOver(test.request_id, "not-answered"), *after.actions))
    if state.consent is not None and now >= state.consent.asked_at + CONSENT_SECONDS:
        silence = _consent_answered(state, "no-answer")
        after = _tick(silence.state, now)
        return Transition(after.state, silence.actions + after.actions)
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


def _wall(state: UiState, wall: WallClock) -> UiTransition:
    """A new reading of the wall clock: a reminder that just began chimes once."""
    if not (math.isfinite(wall.time) and math.isfinite(wall.utc_offset)):
        return Transition(state)
    state = replace(state, wall=wall)
    reminder = _reminder(state)
    if reminder is None or reminder[0].at in state.reminded or state.call is not None:
        return Transition(state)
    reminded = (*state.reminded, reminder[0].at)[-REMEMBERED_CALLS:]
    return Transition(replace(state, reminded=reminded), (Chime(),))


def _toggle(state: UiState, event: CameraToggled | MicrophoneToggled) -> UiTransition:
    view = _live(state, None)
    if view is None or view.machine.state not in (c.CallState.CONNECTING, c.CallState.IN_CALL):
        return Transition(state)
    if isinstance(event, CameraToggled):
        view = replace(view, camera_on=not view.camera_on)
        action: Action = SetCamera(view.call_id, view.camera_on)
    else:
        view = replace(view, microphone_on=not view.microphone_on)
        action = SetMicrophone(view.call_id, view.microphone_on)
    return Transition(_with_call(state, view), (action,))


def _consent_asked(state: UiState, request_id: str, now: float) -> UiTransition:
    actions: tuple[Action, ...] = ()
    if state.consent is not None:  # a newer request replaces an open one, which counts as unanswered
        if state.consent.request_id == request_id:
            return Transition(state)
        actions = (ConsentGiven(state.consent.request_id, "no-answer"),)
    return Transition(replace(state, consent=Consent(request_id, now), setup=None), actions)


def _consent_answered(state: UiState, answer: ConsentAnswer) -> UiTransition:
    if state.consent is None:
        return Transition(state)
    return Transition(replace(state, consent=None), (ConsentGiven(state.consent.request_id, answer),))


def _test_ring(state: UiState, request: m.RingTestRequest, now: float) -> UiTransition:
    """Support's test ring: refused in a call (never interrupted); a newer one replaces one still ringing."""
    if _live(state, None) is not None:
        return Transition(state, (RingTestOver(request.request_id, "in-call"),))
    current = state.test_ring
    if current is not None and current.request_id == request.request_id:
        return Transition(state)  # the same request again
    replaced: tuple[Action, ...] = ((RingTestOver(current.request_id, "not-answered"),)
                                    if current is not None and current.answered_at is None else ())
    seconds = min(m.MAX_RING_TEST_SECONDS, max(m.MIN_RING_TEST_SECONDS, request.ring_seconds))
    ringing = RingTestView(request.request_id, now, seconds if math.isfinite(seconds) else m.MAX_RING_TEST_SECONDS)
    # Like a call's ring it closes the setup, and the words of a call that ended give way to it.
    return Transition(replace(state, test_ring=ringing, setup=None, call=None), replaced)


def _test_ringing(state: UiState, call_id: str | None) -> bool:
    """Whether an answer press is for a test ring: one rings (no call does) and the press names it or nothing."""
    test = state.test_ring
    return (test is not None and test.answered_at is None and _live(state, None) is None
            and call_id in (None, test.request_id))


def _test_answered(state: UiState, now: float) -> UiTransition:
    test = state.test_ring
    assert test is not None
    after = round(min(test.ring_seconds, max(0.0, now - test.rang_at)), 1)  # a press just as time ran out
    return Transition(replace(state, test_ring=replace(test, answered_at=now)),
                      (RingTestOver(test.request_id, "answered", after),))


def _setup(state: UiState, event: CornerHeld | PinEntered | SetupPage | SetupClosed, now: float) -> UiTransition:
    setup = state.setup
    match event:
        case CornerHeld():
            if setup is not None or state.call is not None or state.consent is not None \
                    or state.test_ring is not None:
                return Transition(state)
            if state.settings.staff_pin is None:
                return Transition(state)  # no PIN set from the server: there is no setup to open
            return Transition(replace(state, setup=Setup("pin", now)))
        case PinEntered(pin=pin):
            if setup is None or setup.stage != "pin":
                return Transition(state)
            if pin == state.settings.staff_pin:
                return Transition(replace(state, setup=Setup("open", now)))
            return Transition(replace(state, setup=replace(setup, touched_at=now, wrong_pins=setup.wrong_pins + 1)))
        case SetupPage(page=page):
            if setup is None or setup.stage != "open":
                return Transition(state)
            return Transition(replace(state, setup=replace(setup, page=page, touched_at=now)))
        case SetupClosed():
            return Transition(replace(state, setup=None))
