"""The call state machine, shared by the municipality server and the device.

Sans-I/O, in the manner of the `websockets` library: this module never touches
a socket, a task or a clock. The I/O layer feeds it events, each stamped with
the time it saw them (``now``, seconds as a float from the caller's clock), and
carries out the effects it returns. The same code therefore runs on the server
(the authority that keeps the call record) and on the device (which mirrors the
call to drive its screen), and both reach the same answer for the same events.

A call moves forward only::

    idle ──Ring──▶ ringing ──Answer──▶ connecting ──MediaConnected──▶ in_call
      │               │                    │                             │
      └───────────────┴────────────────────┴─────────────────────────────┴──▶ ended

and ``ended`` is absorbing: whatever arrives afterwards (a hang-up that crossed
the other side's hang-up, an answer that crossed a cancel, a late timer) is
ignored with :attr:`Outcome.ALREADY_ENDED` and no effects. No event ever raises:
messages from the network arrive duplicated, late and crossed, and a call must
never die of an exception in the middle of a visit.

Effects are addressed to a *side*, not a transport: :class:`Notify` to
:attr:`Side.CITIZEN` means "send to the device" on the server and "update the
screen" on the device; to :attr:`Side.STAFF` it means "send to the console" on
the server and "send to the server" on the device. A side is never notified of
its own action (the citizen who pressed answer knows they did).

Timeouts are deadlines, not timers: :attr:`Call.next_deadline` tells the I/O
layer when to feed a :class:`Tick`, and every event first applies any deadline
that has passed, so the result never depends on how punctually ticks arrive.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, replace
from typing import Final, TypeAlias

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
    "MediaConnected",
    "MediaFailed",
    "Notice",
    "Notify",
    "Outcome",
    "RecordCallEnd",
    "Ring",
    "RingAck",
    "Side",
    "Step",
    "Tick",
]

DEFAULT_RING_TIMEOUT: Final = 60.0
# Loopback ICE + DTLS takes well under a second and a 300 ms-RTT, 5 %-loss link
# a few seconds; past this the citizen is staring at a frozen "connecting"
# screen, and aiortc itself never reports failure when it gathered no
# candidates at all (it stays "new"), so the machine must end the call.
DEFAULT_CONNECT_TIMEOUT: Final = 30.0


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
    NOT_ANSWERED = "not_answered"
    MEDIA_FAILED = "media_failed"
    DEVICE_OFFLINE = "device_offline"
    DEVICE_BUSY = "device_busy"
    CANCELLED_BY_CALLER = "cancelled_by_caller"


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

    now: float


@dataclass(frozen=True, slots=True)
class RingAck:
    """The device reports that it is ringing (screen awake, tone playing)."""

    now: float


@dataclass(frozen=True, slots=True)
class Answer:
    """The citizen pressed the answer button."""

    now: float


@dataclass(frozen=True, slots=True)
class MediaConnected:
    """A peer reports media flowing (ICE and DTLS connected)."""

    now: float


@dataclass(frozen=True, slots=True)
class MediaFailed:
    """A peer reports that media could not be set up or was lost for good."""

    now: float


@dataclass(frozen=True, slots=True)
class HangUp:
    """One side pressed hang-up."""

    now: float
    side: Side


@dataclass(frozen=True, slots=True)
class Cancel:
    """Staff withdrew the call before it connected."""

    now: float


@dataclass(frozen=True, slots=True)
class DeviceOffline:
    """The server lost (or never had) the device's connection.

    The server's I/O layer decides when a dropped link counts as offline (a
    4G blip that reconnects within its grace period is not); once fed, the
    call ends, because hang-up and renegotiation can no longer reach the
    device.
    """

    now: float


@dataclass(frozen=True, slots=True)
class Busy:
    """The device cannot take the call (it is already in one)."""

    now: float


@dataclass(frozen=True, slots=True)
class Tick:
    """Time has passed; fed at :attr:`Call.next_deadline`."""

    now: float


Event: TypeAlias = (
    Ring
    | RingAck
    | Answer
    | MediaConnected
    | MediaFailed
    | HangUp
    | Cancel
    | DeviceOffline
    | Busy
    | Tick
)


# --- effects out -------------------------------------------------------------


class Notice(enum.Enum):
    """What a side is told."""

    RING = "ring"  # to the citizen: start ringing
    RINGING = "ringing"  # to staff: the device confirmed it is ringing
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


Effect: TypeAlias = Notify | RecordCallEnd


class Outcome(enum.Enum):
    """What became of an event. Only APPLIED changed the call by itself,
    though a deadline that passed before any event may still end it."""

    APPLIED = "applied"
    DUPLICATE = "duplicate"  # it already happened (repeated Answer, RingAck, ...)
    NO_CALL = "no_call"  # nothing to act on: no call has been placed
    ALREADY_ENDED = "already_ended"  # late or crossed message after the end
    OUT_OF_ORDER = "out_of_order"  # makes no sense now (media before answer)
    INVALID_TIME = "invalid_time"  # ``now`` is NaN or infinite; nothing done


# --- the machine -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CallConfig:
    """Per-municipality settings."""

    ring_timeout: float = DEFAULT_RING_TIMEOUT
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT

    def __post_init__(self) -> None:
        for name in ("ring_timeout", "connect_timeout"):
            value = getattr(self, name)
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if not (number and math.isfinite(value) and value > 0):
                raise ValueError(
                    f"{name} must be a positive number of seconds, got {value!r}; "
                    "check the municipality's call settings"
                )


@dataclass(frozen=True, slots=True)
class Step:
    """The result of feeding one event: the new call, what to do, and why."""

    call: Call
    effects: tuple[Effect, ...]
    outcome: Outcome


@dataclass(frozen=True, slots=True)
class Call:
    """One call, immutable; :meth:`handle` returns the next one.

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
        """When the I/O layer should feed a :class:`Tick`, or None if no timeout runs."""
        if self.state is CallState.RINGING and self.placed_at is not None:
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

    def handle(self, event: Event) -> Step:
        """Feed one event. Never raises for any event in any state."""
        if not isinstance(event, Event):  # a programming error, not a network one
            raise TypeError(f"not a call event: {event!r}")
        if not math.isfinite(event.now):
            return Step(self, (), Outcome.INVALID_TIME)
        # A wall clock stepped back by NTP (a freshly booted kiosk) must not give
        # the record negative durations: time never runs backwards for a call.
        now = max(event.now, self._latest)
        expired, timeout_effects = self._expire(now)
        if isinstance(event, Tick) and self.state not in (CallState.IDLE, CallState.ENDED):
            # The tick is what ended the call, if anything did: that is its job.
            return Step(expired, timeout_effects, Outcome.APPLIED)
        step = expired._apply(event, now)
        return Step(step.call, timeout_effects + step.effects, step.outcome)

    # --- internals -----------------------------------------------------------

    @property
    def _latest(self) -> float:
        stamps = (
            self.placed_at,
            self.rang_at,
            self.answered_at,
            self.connected_at,
            self.ended_at,
        )
        return max((t for t in stamps if t is not None), default=-math.inf)

    def _expire(self, now: float) -> tuple[Call, tuple[Effect, ...]]:
        deadline = self.next_deadline
        if deadline is None or now < deadline:
            return self, ()
        reason = (
            EndReason.NOT_ANSWERED if self.state is CallState.RINGING else EndReason.MEDIA_FAILED
        )
        # Ended at the deadline, not when the tick happened to arrive, so the
        # ring duration in the record is the configured timeout, not timer jitter.
        step = self._end(deadline, reason, notify=(Side.STAFF, Side.CITIZEN))
        return step.call, step.effects

    def _end(self, now: float, reason: EndReason, notify: tuple[Side, ...]) -> Step:
        ended = replace(
            self,
            state=CallState.ENDED,
            # A call refused before it rang (offline, busy) was placed now.
            placed_at=self.placed_at if self.placed_at is not None else now,
            ended_at=now,
            end_reason=reason,
        )
        record = ended.record
        assert record is not None  # ended with placed_at, ended_at, reason set
        effects: tuple[Effect, ...] = tuple(Notify(side, Notice.ENDED, reason) for side in notify)
        return Step(ended, effects + (RecordCallEnd(record),), Outcome.APPLIED)

    def _same(self, outcome: Outcome) -> Step:
        return Step(self, (), outcome)

    def _apply(self, event: Event, now: float) -> Step:
        state = self.state
        if state is CallState.ENDED:
            return self._same(Outcome.ALREADY_ENDED)

        # Refusals that can come before any ring: the server knows the device is
        # offline or busy when staff click "call", and the attempt still counts.
        if isinstance(event, DeviceOffline):
            return self._end(now, EndReason.DEVICE_OFFLINE, notify=(Side.STAFF,))
        if isinstance(event, Busy):
            if state in (CallState.IDLE, CallState.RINGING):
                return self._end(now, EndReason.DEVICE_BUSY, notify=(Side.STAFF,))
            # A device that answered cannot be busy; a stale message.
            return self._same(Outcome.OUT_OF_ORDER)

        if isinstance(event, Ring):
            if state is CallState.IDLE:
                rung = replace(self, state=CallState.RINGING, placed_at=now)
                return Step(rung, (Notify(Side.CITIZEN, Notice.RING),), Outcome.APPLIED)
            return self._same(Outcome.DUPLICATE)  # a double click on "call"

        if state is CallState.IDLE:
            # Tick, RingAck, Answer, media, hang-up, cancel: nothing was placed.
            return self._same(Outcome.NO_CALL)

        if isinstance(event, Tick):  # live-state ticks are settled in handle()
            return self._same(Outcome.APPLIED)  # pragma: no cover

        if isinstance(event, RingAck):
            if self.rang_at is not None:
                return self._same(Outcome.DUPLICATE)
            if state is CallState.RINGING:
                acked = replace(self, rang_at=now)
                return Step(acked, (Notify(Side.STAFF, Notice.RINGING),), Outcome.APPLIED)
            # An ack overtaken by the answer: the ring time is unknown, leave it so.
            return self._same(Outcome.OUT_OF_ORDER)

        if isinstance(event, Answer):
            if state is CallState.RINGING:
                answered = replace(self, state=CallState.CONNECTING, answered_at=now)
                return Step(answered, (Notify(Side.STAFF, Notice.ANSWERED),), Outcome.APPLIED)
            return self._same(Outcome.DUPLICATE)

        if isinstance(event, MediaConnected):
            if state is CallState.CONNECTING:
                connected = replace(self, state=CallState.IN_CALL, connected_at=now)
                effects = (
                    Notify(Side.STAFF, Notice.CONNECTED),
                    Notify(Side.CITIZEN, Notice.CONNECTED),
                )
                return Step(connected, effects, Outcome.APPLIED)
            if state is CallState.IN_CALL:
                return self._same(Outcome.DUPLICATE)  # the other peer's report, or ICE recovered
            return self._same(Outcome.OUT_OF_ORDER)  # no media before the answer

        if isinstance(event, MediaFailed):
            if state is CallState.RINGING:
                return self._same(Outcome.OUT_OF_ORDER)
            # Both sides are told: the peer that did not notice must stop too.
            return self._end(now, EndReason.MEDIA_FAILED, notify=(Side.STAFF, Side.CITIZEN))

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
            return self._end(now, reason, notify=(event.side.other,))

        if isinstance(event, Cancel):
            # A cancel that crossed the media connecting is still staff leaving:
            # end the call rather than keep the citizen facing an empty room.
            reason = (
                EndReason.HUNG_UP_BY_STAFF
                if state is CallState.IN_CALL
                else EndReason.CANCELLED_BY_CALLER
            )
            return self._end(now, reason, notify=(Side.CITIZEN,))

        raise AssertionError(f"unhandled event {event!r}")  # pragma: no cover
