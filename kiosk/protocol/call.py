"""The call state machine, shared by the municipality server and the device.

Sans-I/O, in the manner of the `websockets` library: this module never touches
a socket, a task or a clock. The I/O layer feeds it events, each with the time
it saw them (``now``, seconds as a float from the caller's clock), and carries
out the effects it returns: ``step(call, event, now) -> Transition(call, effects)``,
the one shape of every state machine here (kiosk.protocol.machine). The same
code therefore runs on the server (the authority that keeps the call record) and
on the device (which mirrors the call to drive its screen), and both reach the
same answer for the same events.

A call moves forward only::

    idle ──Ring──▶ ringing ──Answer──▶ connecting ──MediaConnected──▶ in_call
      │               │                    │                             │
      └───────────────┴────────────────────┴─────────────────────────────┴──▶ ended

While it rings, the unit's offer may go to the caller (:class:`Offered`): the peers then
set up ICE and DTLS before the answer, sending no media. That changes no state and no
fact of the record: "connected" still means media flowing, after the answer.

and ``ended`` is absorbing: whatever arrives afterwards (a hang-up that crossed
the other side's hang-up, an answer that crossed a cancel, a late timer) is
ignored: its only effect is :class:`Ignored` with :attr:`IgnoreReason.ALREADY_ENDED`. No event ever raises:
messages from the network arrive duplicated, late and crossed, and a call must
never die of an exception in the middle of a visit.

Effects are addressed to a *side*, not a transport: :class:`Notify` to
:attr:`Side.CITIZEN` means "send to the device" on the server and "update the
screen" on the device; to :attr:`Side.STAFF` it means "send to the console" on
the server and "send to the server" on the device. A side is never notified of
its own action (the citizen who pressed answer knows they did).

Timeouts are deadlines, not timers: :attr:`Call.next_deadline` tells the I/O
layer when to feed a :class:`TimerFired`, and every event first applies any deadline
that has passed, so the result never depends on how punctually ticks arrive.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, replace
from typing import Final, TypeAlias

from kiosk.protocol.machine import Transition

__all__ = [
    "Answer",
    "Busy",
    "Call",
    "CallConfig",
    "CallRecord",
    "CallState",
    "Cancel",
    "DeviceOffline",
    "Effect",
    "EndReason",
    "Event",
    "HangUp",
    "IgnoreReason",
    "Ignored",
    "MediaConnected",
    "MediaFailed",
    "Notice",
    "Notify",
    "Offered",
    "ProcessLost",
    "RecordCallEnd",
    "Ring",
    "RingAck",
    "ScreenNotRunning",
    "Side",
    "TimerFired",
    "UnitWiped",
    "step",
]

DEFAULT_RING_TIMEOUT: Final = 60.0
# Loopback ICE + DTLS takes well under a second and a 300 ms-RTT, 5 %-loss link
# a few seconds; past this the citizen is staring at a frozen "connecting"
# screen, and aiortc itself never reports failure when it gathered no
# candidates at all (it stays "new"), so the machine must end the call.
DEFAULT_CONNECT_TIMEOUT: Final = 30.0
# A unit that is online and whose screen program is alive confirms the ring
# within a round trip; one that has not confirmed within this did not ring,
# and the caregiver is told so (not "did not answer") while it can still act.
# Long enough for a 4G link blinking for a few seconds while the ring is sent.
DEFAULT_RING_ACK_TIMEOUT: Final = 15.0


class CallState(enum.Enum):
    """Where a call is. The order of declaration is the only order allowed."""

    IDLE = "idle"
    RINGING = "ringing"
    CONNECTING = "connecting"
    IN_CALL = "in_call"
    ENDED = "ended"


class EndReason(enum.StrEnum):
    """Why a call ended; exactly one per call, kept in its record.

    A string enum: it travels as its value (``CallEnded.reason``, the record's
    ``end_reason`` column), and compares equal to it."""

    HUNG_UP_BY_STAFF = "hung_up_by_staff"
    HUNG_UP_BY_CITIZEN = "hung_up_by_citizen"
    NOT_ANSWERED = "not_answered"  # the unit rang and nobody answered
    DID_NOT_RING = "did_not_ring"  # the unit never confirmed it rang
    SCREEN_NOT_RUNNING = "screen_not_running"  # online, but its screen program was not alive: never rang
    MEDIA_FAILED = "media_failed"  # answered, but media could not be set up
    CONNECTION_LOST = "connection_lost"  # media flowed, then the peers lost each other for good
    DEVICE_OFFLINE = "device_offline"
    DEVICE_BUSY = "device_busy"
    CANCELLED_BY_CALLER = "cancelled_by_caller"
    UNIT_WIPED = "unit_wiped"  # a wipe reached the unit: it ended the call before erasing anything
    SERVER_STOPPED = "server_stopped"  # the server process running it stopped before media flowed

    @property
    def media_failure(self) -> bool:
        """The peers could not set up, or lost, the media: the side that saw it tells the server."""
        return self in (EndReason.MEDIA_FAILED, EndReason.CONNECTION_LOST)


class Side(enum.Enum):
    """The two parties: the staff member calling, and the citizen's device."""

    STAFF = "staff"
    CITIZEN = "citizen"

    @property
    def other(self) -> Side:
        return Side.CITIZEN if self is Side.STAFF else Side.STAFF


# --- events in ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ring:
    """Staff placed the call; the device is asked to ring."""



@dataclass(frozen=True, slots=True)
class RingAck:
    """The device reports that it is ringing (screen awake, tone playing)."""



@dataclass(frozen=True, slots=True)
class Offered:
    """While it rings, the unit made its offer, to be passed to the caller so the peers can
    connect before the answer (nothing is sent on it before then)."""



@dataclass(frozen=True, slots=True)
class Answer:
    """The citizen pressed the answer button."""



@dataclass(frozen=True, slots=True)
class MediaConnected:
    """A peer reports media flowing (ICE and DTLS connected)."""



@dataclass(frozen=True, slots=True)
class MediaFailed:
    """A peer reports that media could not be set up or was lost for good."""



@dataclass(frozen=True, slots=True)
class HangUp:
    """One side pressed hang-up."""

    side: Side


@dataclass(frozen=True, slots=True)
class Cancel:
    """Staff withdrew the call before it connected."""



@dataclass(frozen=True, slots=True)
class UnitWiped:
    """The device is being wiped: it ended its side of the call (camera and microphone off) first."""



@dataclass(frozen=True, slots=True)
class DeviceOffline:
    """The server lost (or never had) the device's connection.

    The server's I/O layer decides when a dropped link counts as offline (a
    4G blip that reconnects within its grace period is not); once fed, the
    call ends, because hang-up and renegotiation can no longer reach the
    device.
    """



@dataclass(frozen=True, slots=True)
class Busy:
    """The device cannot take the call (it is already in one)."""



@dataclass(frozen=True, slots=True)
class ScreenNotRunning:
    """The device is online but its screen program is not alive: it cannot ring."""



@dataclass(frozen=True, slots=True)
class ProcessLost:
    """The server process that ran the call died (another process, or this one restarted, found
    the call in the database with nobody running it). A call whose media flowed has lost its
    connection; one still ringing or connecting was cut off by the server, not by either side."""



@dataclass(frozen=True, slots=True)
class TimerFired:
    """The I/O layer's timer for :attr:`Call.next_deadline` fired (early or late is fine)."""



Event: TypeAlias = (
    Ring
    | RingAck
    | Offered
    | Answer
    | MediaConnected
    | MediaFailed
    | HangUp
    | Cancel
    | UnitWiped
    | DeviceOffline
    | Busy
    | ScreenNotRunning
    | ProcessLost
    | TimerFired
)


# --- effects out -------------------------------------------------------------


class Notice(enum.Enum):
    """What a side is told."""

    RING = "ring"  # to the citizen: start ringing
    RINGING = "ringing"  # to staff: the device confirmed it is ringing
    OFFER = "offer"  # to staff: the ringing unit's offer, to answer before the citizen does
    ANSWERED = "answered"  # to staff: the citizen answered, start media
    CONNECTED = "connected"  # to both: media flows
    ENDED = "ended"  # to either: the call is over, see ``reason``


@dataclass(frozen=True, slots=True)
class Notify:
    """Tell one side something; ``reason`` is set exactly for :attr:`Notice.ENDED`."""

    to: Side
    notice: Notice
    reason: EndReason | None = None

    def __post_init__(self) -> None:
        if (self.notice is Notice.ENDED) != (self.reason is not None):
            raise ValueError("Notify carries an end reason if and only if it is ENDED")


@dataclass(frozen=True, slots=True)
class CallRecord:
    """The timing part of a call's record; the I/O layer adds who, whom and quality.

    Times are on the clock of the machine that produced the record.
    """

    reason: EndReason
    placed_at: float
    rang_at: float | None  # None: the device never confirmed it rang
    answered_at: float | None
    connected_at: float | None
    ended_at: float

    @property
    def ring_duration(self) -> float | None:
        """How long the device rang: until answered, or until the call ended."""
        if self.rang_at is None:
            return None
        stop = self.answered_at if self.answered_at is not None else self.ended_at
        return stop - self.rang_at

    @property
    def talk_duration(self) -> float | None:
        """How long media flowed; None for a call that never connected."""
        if self.connected_at is None:
            return None
        return self.ended_at - self.connected_at


@dataclass(frozen=True, slots=True)
class RecordCallEnd:
    """Store the call record; emitted exactly once per call."""

    record: CallRecord


class IgnoreReason(enum.Enum):
    """Why an event changed nothing by itself."""

    DUPLICATE = "duplicate"  # it already happened (repeated Answer, RingAck, ...)
    NO_CALL = "no_call"  # nothing to act on: no call has been placed
    ALREADY_ENDED = "already_ended"  # late or crossed message after the end
    OUT_OF_ORDER = "out_of_order"  # makes no sense now (media before answer)
    INVALID_TIME = "invalid_time"  # ``now`` is NaN or infinite; nothing done


@dataclass(frozen=True, slots=True)
class Ignored:
    """The event changed nothing by itself; the I/O layer may log why.

    A deadline that passed before the event may still have ended the call: its
    effects then come first, and this one last.
    """

    reason: IgnoreReason


Effect: TypeAlias = Notify | RecordCallEnd | Ignored
CallTransition: TypeAlias = Transition["Call", Effect]


# --- the machine -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CallConfig:
    """Per-municipality settings."""

    ring_timeout: float = DEFAULT_RING_TIMEOUT
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    ring_ack_timeout: float = DEFAULT_RING_ACK_TIMEOUT

    def __post_init__(self) -> None:
        for name in ("ring_timeout", "connect_timeout", "ring_ack_timeout"):
            value = getattr(self, name)
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if not (number and math.isfinite(value) and value > 0):
                raise ValueError(
                    f"{name} must be a positive number of seconds, got {value!r}; "
                    "check the municipality's call settings"
                )


@dataclass(frozen=True, slots=True)
class Call:
    """One call, immutable; :func:`step` returns the next one.

    Start with ``Call()`` or ``Call(config=CallConfig(ring_timeout=45))``.
    """

    config: CallConfig = CallConfig()
    state: CallState = CallState.IDLE
    placed_at: float | None = None
    rang_at: float | None = None
    answered_at: float | None = None
    connected_at: float | None = None
    ended_at: float | None = None
    end_reason: EndReason | None = None

    def __post_init__(self) -> None:
        if (self.state is CallState.ENDED) != (self.end_reason is not None):
            raise ValueError("a call has an end reason if and only if it has ended")

    @property
    def next_deadline(self) -> float | None:
        """When the I/O layer should feed :class:`TimerFired`, or None if no timeout runs."""
        if self.state is CallState.RINGING and self.placed_at is not None:
            if self.rang_at is None:  # until the unit confirms, the shorter wait applies
                return self.placed_at + min(self.config.ring_timeout, self.config.ring_ack_timeout)
            return self.placed_at + self.config.ring_timeout
        if self.state is CallState.CONNECTING and self.answered_at is not None:
            return self.answered_at + self.config.connect_timeout
        return None

    @property
    def record(self) -> CallRecord | None:
        """The call record once ended, else None."""
        if self.end_reason is None or self.placed_at is None or self.ended_at is None:
            return None
        return CallRecord(
            reason=self.end_reason,
            placed_at=self.placed_at,
            rang_at=self.rang_at,
            answered_at=self.answered_at,
            connected_at=self.connected_at,
            ended_at=self.ended_at,
        )

    @property
    def latest(self) -> float:
        """The latest time stamped on this call (-inf for a fresh one)."""
        stamps = (
            self.placed_at,
            self.rang_at,
            self.answered_at,
            self.connected_at,
            self.ended_at,
        )
        return max((t for t in stamps if t is not None), default=-math.inf)


def step(call: Call, event: Event, now: float) -> CallTransition:
    """Feed one event seen at ``now``. Never raises for any event in any state."""
    if not isinstance(event, Event):  # a programming error, not a network one
        raise TypeError(f"not a call event: {event!r}")
    if not math.isfinite(now):
        return _ignore(call, IgnoreReason.INVALID_TIME)
    # A wall clock stepped back by NTP (a freshly booted kiosk) must not give
    # the record negative durations: time never runs backwards for a call.
    now = max(now, call.latest)
    expired = _expire(call, now)
    if isinstance(event, TimerFired) and call.state not in (CallState.IDLE, CallState.ENDED):
        return expired  # the timer is what ended the call, if anything did: that is its job
    applied = _apply(expired.state, event, now)
    return Transition(applied.state, expired.actions + applied.actions)


# --- internals ---------------------------------------------------------------


def _ignore(call: Call, reason: IgnoreReason) -> CallTransition:
    return Transition(call, (Ignored(reason),))


def _expire(call: Call, now: float) -> CallTransition:
    deadline = call.next_deadline
    if deadline is None or now < deadline:
        return Transition(call)
    if call.state is CallState.RINGING:
        # "Did not answer" only where the unit truly rang.
        reason = EndReason.NOT_ANSWERED if call.rang_at is not None else EndReason.DID_NOT_RING
    else:
        reason = EndReason.MEDIA_FAILED
    # Ended at the deadline, not when the timer happened to fire, so the ring
    # duration in the record is the configured timeout, not timer jitter.
    return _end(call, deadline, reason, notify=(Side.STAFF, Side.CITIZEN))


def _end(call: Call, now: float, reason: EndReason, notify: tuple[Side, ...]) -> CallTransition:
    ended = replace(
        call,
        state=CallState.ENDED,
        # A call refused before it rang (offline, busy) was placed now.
        placed_at=call.placed_at if call.placed_at is not None else now,
        ended_at=now,
        end_reason=reason,
    )
    record = ended.record
    assert record is not None  # ended with placed_at, ended_at, reason set
    effects: tuple[Effect, ...] = tuple(Notify(side, Notice.ENDED, reason) for side in notify)
    return Transition(ended, (*effects, RecordCallEnd(record)))


def _apply(call: Call, event: Event, now: float) -> CallTransition:
    state = call.state
    if state is CallState.ENDED:
        return _ignore(call, IgnoreReason.ALREADY_ENDED)

    # Refusals that can come before any ring: the server knows the device is
    # offline or busy when staff click "call", and the attempt still counts.
    if isinstance(event, DeviceOffline):
        return _end(call, now, EndReason.DEVICE_OFFLINE, notify=(Side.STAFF,))
    if isinstance(event, Busy | ScreenNotRunning):
        if state in (CallState.IDLE, CallState.RINGING):
            reason = EndReason.DEVICE_BUSY if isinstance(event, Busy) else EndReason.SCREEN_NOT_RUNNING
            return _end(call, now, reason, notify=(Side.STAFF,))
        # A device that answered cannot be busy, and its screen runs; a stale message.
        return _ignore(call, IgnoreReason.OUT_OF_ORDER)

    if isinstance(event, Ring):
        if state is CallState.IDLE:
            rung = replace(call, state=CallState.RINGING, placed_at=now)
            return Transition(rung, (Notify(Side.CITIZEN, Notice.RING),))
        return _ignore(call, IgnoreReason.DUPLICATE)  # a double click on "call"

    if state is CallState.IDLE:
        # Timer, RingAck, Answer, media, hang-up, cancel: nothing was placed.
        return _ignore(call, IgnoreReason.NO_CALL)

    if isinstance(event, TimerFired):  # live-state timers are settled in step()
        return Transition(call)  # pragma: no cover

    if isinstance(event, RingAck):
        if call.rang_at is not None:
            return _ignore(call, IgnoreReason.DUPLICATE)
        if state is CallState.RINGING:
            return Transition(replace(call, rang_at=now), (Notify(Side.STAFF, Notice.RINGING),))
        # An ack overtaken by the answer: the ring time is unknown, leave it so.
        return _ignore(call, IgnoreReason.OUT_OF_ORDER)

    if isinstance(event, Offered):
        if state is CallState.RINGING:
            # Passed on however often it comes: a unit that made its offer again (a retry)
            # is the one to know which is current, and the caller answers the newest.
            return Transition(call, (Notify(Side.STAFF, Notice.OFFER),))
        # Answered already: the offer rides in the answer (or the pre-connection is in use).
        return _ignore(call, IgnoreReason.OUT_OF_ORDER)

    if isinstance(event, Answer):
        if state is CallState.RINGING:
            answered = replace(call, state=CallState.CONNECTING, answered_at=now)
            return Transition(answered, (Notify(Side.STAFF, Notice.ANSWERED),))
        return _ignore(call, IgnoreReason.DUPLICATE)

    if isinstance(event, MediaConnected):
        if state is CallState.CONNECTING:
            connected = replace(call, state=CallState.IN_CALL, connected_at=now)
            effects = (
                Notify(Side.STAFF, Notice.CONNECTED),
                Notify(Side.CITIZEN, Notice.CONNECTED),
            )
            return Transition(connected, effects)
        if state is CallState.IN_CALL:
            return _ignore(call, IgnoreReason.DUPLICATE)  # the other peer's report, or ICE recovered
        return _ignore(call, IgnoreReason.OUT_OF_ORDER)  # no media before the answer

    if isinstance(event, MediaFailed):
        if state is CallState.RINGING:
            return _ignore(call, IgnoreReason.OUT_OF_ORDER)
        # Both sides are told: the peer that did not notice must stop too.
        reason = EndReason.CONNECTION_LOST if state is CallState.IN_CALL else EndReason.MEDIA_FAILED
        return _end(call, now, reason, notify=(Side.STAFF, Side.CITIZEN))

    if isinstance(event, HangUp):
        if event.side is Side.STAFF:
            # Staff hanging up before the answer is withdrawing the call.
            reason = (
                EndReason.CANCELLED_BY_CALLER
                if state is CallState.RINGING
                else EndReason.HUNG_UP_BY_STAFF
            )
        else:
            reason = EndReason.HUNG_UP_BY_CITIZEN
        return _end(call, now, reason, notify=(event.side.other,))

    if isinstance(event, ProcessLost):
        reason = EndReason.CONNECTION_LOST if state is CallState.IN_CALL else EndReason.SERVER_STOPPED
        return _end(call, now, reason, notify=(Side.STAFF, Side.CITIZEN))

    if isinstance(event, UnitWiped):
        # The device already stopped its media; only the caller is left to tell.
        return _end(call, now, EndReason.UNIT_WIPED, notify=(Side.STAFF,))

    if isinstance(event, Cancel):
        # A cancel that crossed the media connecting is still staff leaving:
        # end the call rather than keep the citizen facing an empty room.
        reason = (
            EndReason.HUNG_UP_BY_STAFF
            if state is CallState.IN_CALL
            else EndReason.CANCELLED_BY_CALLER
        )
        return _end(call, now, reason, notify=(Side.CITIZEN,))

    raise AssertionError(f"unhandled event {event!r}")  # pragma: no cover
