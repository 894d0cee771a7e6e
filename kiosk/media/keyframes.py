"""Asking for a key frame after loss, and not showing broken pictures meanwhile.

What aiortc 1.16 already does on the receiving side: it NACKs missing packets,
and it sends a PLI (``RTCRtpReceiver._send_rtcp_pli``) when the decoder raises
or when its jitter buffer overflows.  What it does not do:

- A packet that is lost for good (its retransmission lost too, or too late)
  blocks the video jitter buffer until 512 more packets have arrived, several
  seconds of frozen picture at call bitrates, and only then asks for a key
  frame.
- A lost PLI is never repeated, and PLIs are not rate limited.
- After that overflow it feeds the decoder frames whose references are gone,
  which a VP8 decoder shows as smeared blocks.

:class:`RecoveringJitterBuffer` is aiortc's video jitter buffer with a deadline:
a hole that NACK has not filled within ``max_hole_wait`` is skipped, frames are
held back until a key frame arrives (the picture freezes rather than smears),
and :class:`KeyframeRequestPolicy` decides when to ask.  The buffer asks by
returning aiortc's own "PLI needed" flag, so aiortc's receiver sends the RTCP
PLI itself, with its own SSRCs; we add no second RTCP path.

Both follow the link (:func:`follow_round_trip`, called by the call peer each
time it measures the round trip; until then a slow link's round trip is
assumed, :data:`ASSUMED_ROUND_TRIP`): a hole waits two and a half round trips
(:func:`hole_wait_for`; never less than the configured floor, never more than
:data:`MAX_HOLE_WAIT`), and :class:`RepeatingNackGenerator` asks for each missing
packet twice, and again each round trip while its hole may still be filled
(:mod:`kiosk.media.nack`), where aiortc NACKs only when a new gap appears.

Media that returns after a silence (:class:`SilenceWatch`: an outage, a dropped
bearer) is not repaired packet by packet: what was sent in the dark is seconds old and
mostly gone from the sender's history, so the buffer gives the hole up at once and asks
for a key frame with the first packet back, and the NACK generator does not ask for the
packets lost in the dark (hundreds of them, which on a narrow link would queue ahead of
the key frame).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import aiortc.rtcrtpreceiver
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtcrtpreceiver import NackGenerator
from aiortc.rtp import RtpPacket
from aiortc.utils import uint16_gt

from .nack import NackSchedule

logger = logging.getLogger(__name__)

Clock = Callable[[], float]

# aiortc's own constructors, kept for audio and for uninstalling.
_AIORTC_JITTER_BUFFER = JitterBuffer
_AIORTC_NACK_GENERATOR = NackGenerator

#: A hole is given this many round trips: the NACK's way there and the copy's way back, and
#: time for a second round of NACKs (:mod:`kiosk.media.nack`) when the first copies were lost.
HOLE_WAIT_ROUND_TRIPS = 2.5
#: Beyond this a frozen picture is better ended by a key frame than by more waiting.
MAX_HOLE_WAIT = 1.5
#: ... and never less than this (a fast link's: a NACK and its copy, with room for jitter).
HOLE_WAIT_FLOOR = 0.3
#: The round trip assumed until RTCP has measured one (a second or two into the call): a slow
#: rural link's. The first key frame is the one most likely to lose a packet (it is the
#: largest), and giving up on its hole before the copy can arrive costs a key-frame round
#: trip and often a second loss; waiting longer than a fast link needs costs a short freeze.
ASSUMED_ROUND_TRIP = 0.4
#: Unanswered key-frame requests are repeated at most this far apart.
MAX_RETRY_INTERVAL = 2.4
#: No video packet for this long, then one: the link was dark (an outage), not lossy. Video at
#: the lowest rate a stepped-down call sends (7.5 fps) leaves 0.13 s between frames; jitter on
#: a 4G link adds tens of milliseconds; the link watch calls 1.5 s of silence "lost".
SILENCE = 1.0

_VP8_KEYFRAME_START_CODE = b"\x9d\x01\x2a"
_H264_IDR = 5


class KeyframeRequestPolicy:
    """When to send a PLI.  Pure: the caller passes the time.

    Ask as soon as a picture is lost, unless we asked less than
    ``min_interval`` ago (one key frame repairs every loss before it).  While
    no key frame has come, ask again after ``retry_interval``: a PLI can be
    lost too.  Each further retry waits twice as long (up to
    :data:`MAX_RETRY_INTERVAL`): on a narrow link a key frame takes longer
    than the first interval to arrive, and asking again only sends another
    one into the same queue, which is how a capped link freezes for good.
    """

    def __init__(self, min_interval: float = 0.2, retry_interval: float = 0.6) -> None:
        self.min_interval = min_interval
        self.retry_interval = retry_interval
        self.waiting = False
        self.requests = 0
        self._last_request: float | None = None
        self._retries = 0  # requests for this loss after the first

    def picture_lost(self) -> None:
        if not self.waiting:
            self._retries = -1  # the first request for this loss is not a retry
        self.waiting = True

    def keyframe_received(self) -> None:
        self.waiting = False

    def should_request(self, now: float) -> bool:
        if not self.waiting:
            return False
        if self._retries < 0:
            interval = self.min_interval
        else:
            interval = min(MAX_RETRY_INTERVAL, self.retry_interval * 2 ** self._retries)
        if self._last_request is not None and now - self._last_request < interval:
            return False
        self._last_request = now
        self._retries += 1
        self.requests += 1
        return True


class SilenceWatch:
    """Tells, packet by packet, whether one ends a silence of at least :data:`SILENCE`: the hole
    behind it opened in the dark and NACK cannot usefully fill it. The jitter buffer and the NACK
    generator each keep one (each sees every packet of its stream)."""

    def __init__(self) -> None:
        self._last_arrival: float | None = None

    def returns_after_silence(self, now: float) -> bool:
        """Whether a packet arriving at ``now`` ends such a silence; it is then the last arrival."""
        last, self._last_arrival = self._last_arrival, now
        return last is not None and now - last >= SILENCE


def is_keyframe(data: bytes) -> bool:
    """Whether an assembled (depayloaded) VP8 or H.264 frame is a key frame.

    The frame must also *begin* at its start: after a skipped hole the first
    frame we hold may be a tail whose head was lost.  H.264 from aiortc's
    depayloader begins with a start code exactly when it begins at a NAL
    unit; a VP8 key frame has a fixed start code after its 3-byte tag.
    """
    if data.startswith((b"\x00\x00\x00\x01", b"\x00\x00\x01")):
        i = 0
        while (i := data.find(b"\x00\x00\x01", i)) != -1:
            i += 3
            if i < len(data) and data[i] & 0x1F == _H264_IDR:
                return True
        return False
    return len(data) >= 6 and data[0] & 0x01 == 0 and data[3:6] == _VP8_KEYFRAME_START_CODE


class RecoveringJitterBuffer(JitterBuffer):
    """aiortc's video jitter buffer, plus a deadline on holes (see module doc)."""

    def __init__(
        self,
        capacity: int,
        prefetch: int = 0,
        is_video: bool = True,
        max_hole_wait: float = HOLE_WAIT_FLOOR,
        policy: KeyframeRequestPolicy | None = None,
        clock: Clock = time.monotonic,
        initial_hole_wait: float | None = None,
    ) -> None:
        super().__init__(capacity=capacity, prefetch=prefetch, is_video=is_video)
        self.max_hole_wait = max_hole_wait if initial_hole_wait is None else initial_hole_wait
        self.hole_wait_floor = max_hole_wait  # what follow_round_trip never goes below
        self.policy = policy or KeyframeRequestPolicy()
        self._clock = clock
        self._blocked_since: float | None = None
        self._newest: int | None = None
        self._silence = SilenceWatch()
        self.holes_skipped = 0
        self.frames_held_back = 0

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        now = self._clock()
        resumed = self._silence.returns_after_silence(now)
        if self._newest is None or uint16_gt(packet.sequence_number, self._newest):
            self._newest = packet.sequence_number
        overflowed, frame = super().add(packet)
        if overflowed:
            # aiortc dropped packets to make room: what follows may not decode.
            self.policy.picture_lost()
        if frame is None and self._head_is_blocked(self._newest):
            if resumed:  # lost in the dark: ask for a key frame now, not a hole wait later
                frame = self._skip_holes(self._newest)
            elif self._blocked_since is None:
                self._blocked_since = now
            elif now - self._blocked_since >= self.max_hole_wait:
                frame = self._skip_holes(self._newest)
        else:
            self._blocked_since = None
        frame = self._gate(frame)
        return self.policy.should_request(now), frame

    def _head_is_blocked(self, newest: int) -> bool:
        """A missing packet sits between the oldest held packet and ``newest``."""
        return self._last_hole_offset(newest) is not None

    def _last_hole_offset(self, newest: int) -> int | None:
        if self._origin is None:
            return None
        span = (newest - self._origin) % 65536
        if span >= self.capacity:
            return None
        for offset in range(span, -1, -1):
            if self._packets[(self._origin + offset) % self.capacity] is None:
                return offset
        return None

    def _skip_holes(self, newest: int) -> JitterFrame | None:
        offset = self._last_hole_offset(newest)
        if offset is None:
            return None
        self.remove(offset + 1)  # everything up to and including the last hole
        self.holes_skipped += 1
        self._blocked_since = None
        self.policy.picture_lost()
        logger.info("video: skipped a hole NACK did not fill; asking for a key frame")
        return self._remove_frame(newest)

    def _gate(self, frame: JitterFrame | None) -> JitterFrame | None:
        """While a picture is lost, pass nothing but a key frame."""
        if frame is None or not self.policy.waiting:
            return frame
        if is_keyframe(frame.data):
            self.policy.keyframe_received()
            return frame
        self.frames_held_back += 1
        return None


class RepeatingNackGenerator(NackGenerator):
    """aiortc's NACK generator, asking for each missing packet on its own schedule
    (:class:`~kiosk.media.nack.NackSchedule`: rounds of two NACKs, repeated each round trip
    while the hole may still be filled).

    aiortc sends a NACK only when a new gap appears, listing every packet still missing;
    a packet whose NACK or copy was lost is asked for again only when the next gap happens
    to come, often after the hole's deadline, and a key frame must repair what one more
    NACK would have. :func:`follow_round_trip` sets the schedule's round trip and hole wait
    from the measured round trip. Answering True makes aiortc send a NACK for
    :attr:`missing`, which here holds only the packets due now, through its own RTCP path.
    """

    def __init__(self, hole_wait_floor: float = HOLE_WAIT_FLOOR, clock: Clock = time.monotonic) -> None:
        super().__init__()
        self.hole_wait_floor = hole_wait_floor
        self.schedule = NackSchedule(ASSUMED_ROUND_TRIP, hole_wait_for(None, hole_wait_floor))
        self._clock = clock
        self._silence = SilenceWatch()

    @property
    def repeats(self) -> int:
        return self.schedule.repeats

    def follow_round_trip(self, rtt: float | None) -> None:
        if rtt is not None and math.isfinite(rtt) and rtt > 0:
            self.schedule.follow(rtt, hole_wait_for(rtt, self.hole_wait_floor))

    def add(self, packet: RtpPacket) -> bool:
        now = self._clock()
        if self._silence.returns_after_silence(now):
            # What went missing in the dark is not asked for: the jitter buffer gives it up
            # and asks for a key frame, which the copies would only delay on a narrow link.
            self.schedule.restart(packet.sequence_number)
            self.missing = set()
            return False
        self.missing = set(self.schedule.arrived(packet.sequence_number, now))
        return bool(self.missing)


@dataclass
class LossRecovery:
    """The settings in force, and the buffers made, for diagnostics and tests."""

    max_hole_wait: float
    min_interval: float
    retry_interval: float
    buffers: list[RecoveringJitterBuffer] = field(default_factory=list)
    nack_generators: list[RepeatingNackGenerator] = field(default_factory=list)

    @property
    def holes_skipped(self) -> int:
        return sum(b.holes_skipped for b in self.buffers)

    @property
    def keyframes_requested(self) -> int:
        return sum(b.policy.requests for b in self.buffers)

    @property
    def nacks_repeated(self) -> int:
        return sum(g.repeats for g in self.nack_generators)

    @property
    def packets_nacked(self) -> int:
        """Missing packets asked for (each once, however often it was asked)."""
        return sum(g.schedule.asked - g.schedule.repeats for g in self.nack_generators)


_installed: LossRecovery | None = None


def install_loss_recovery(
    max_hole_wait: float = HOLE_WAIT_FLOOR, min_interval: float = 0.2, retry_interval: float = 0.6
) -> LossRecovery:
    """Give every aiortc receiver created from now on a recovering video buffer.

    aiortc builds the buffer in ``RTCRtpReceiver.__init__`` from the name
    ``JitterBuffer`` in its module; we replace that name.  ``max_hole_wait``
    is the least wait for a hole (:func:`follow_round_trip` lengthens it for
    slow links; before the round trip is measured, :data:`ASSUMED_ROUND_TRIP` sets it).  Installing again
    with the same settings returns the recovery in force (the unit and the
    Python caregiver may share a process, in tests and the demo).
    """
    global _installed
    if _installed is not None and (_installed.max_hole_wait, _installed.min_interval,
                                   _installed.retry_interval) == (max_hole_wait, min_interval, retry_interval):
        return _installed
    recovery = LossRecovery(max_hole_wait, min_interval, retry_interval)

    def jitter_buffer(capacity: int, prefetch: int = 0, is_video: bool = False) -> JitterBuffer:
        if not is_video:
            return _AIORTC_JITTER_BUFFER(capacity=capacity, prefetch=prefetch, is_video=False)
        buffer = RecoveringJitterBuffer(
            capacity=capacity,
            prefetch=prefetch,
            max_hole_wait=recovery.max_hole_wait,
            policy=KeyframeRequestPolicy(recovery.min_interval, recovery.retry_interval),
            initial_hole_wait=hole_wait_for(None, recovery.max_hole_wait),
        )
        recovery.buffers.append(buffer)
        return buffer

    def nack_generator() -> NackGenerator:
        generator = RepeatingNackGenerator(recovery.max_hole_wait)
        recovery.nack_generators.append(generator)
        return generator

    aiortc.rtcrtpreceiver.JitterBuffer = jitter_buffer  # type: ignore[attr-defined,assignment]
    aiortc.rtcrtpreceiver.NackGenerator = nack_generator  # type: ignore[misc,assignment]
    _installed = recovery
    return recovery


def hole_wait_for(rtt: float | None, floor: float) -> float:
    """How long a hole may wait for NACK on a link whose round trip is ``rtt`` seconds (None: not
    measured yet, so :data:`ASSUMED_ROUND_TRIP`)."""
    if rtt is None or not math.isfinite(rtt) or rtt <= 0:
        rtt = ASSUMED_ROUND_TRIP
    return min(MAX_HOLE_WAIT, max(floor, HOLE_WAIT_ROUND_TRIPS * rtt))


def recovering_buffer(receiver: object) -> RecoveringJitterBuffer | None:
    """The recovering buffer of an aiortc ``RTCRtpReceiver``, if it has one.

    aiortc keeps it in a private attribute (``RTCRtpReceiver.__jitter_buffer``);
    reading it is the price of not keeping a second map from receivers to buffers.
    """
    buffer = getattr(receiver, "_RTCRtpReceiver__jitter_buffer", None)
    return buffer if isinstance(buffer, RecoveringJitterBuffer) else None


def follow_round_trip(receivers: Iterable[object], rtt: float | None) -> float | None:
    """Let the video buffers of ``receivers`` wait for holes, and their NACKs repeat, as ``rtt``
    needs; the wait set."""
    wait = None
    for receiver in receivers:
        buffer = recovering_buffer(receiver)
        if buffer is not None:
            wait = buffer.max_hole_wait = hole_wait_for(rtt, buffer.hole_wait_floor)
        generator = getattr(receiver, "_RTCRtpReceiver__nack_generator", None)  # private, as above
        if isinstance(generator, RepeatingNackGenerator):
            generator.follow_round_trip(rtt)
    return wait


def uninstall_loss_recovery() -> None:
    global _installed
    aiortc.rtcrtpreceiver.JitterBuffer = _AIORTC_JITTER_BUFFER  # type: ignore[attr-defined]
    aiortc.rtcrtpreceiver.NackGenerator = _AIORTC_NACK_GENERATOR  # type: ignore[misc]
    _installed = None


def installed_loss_recovery() -> LossRecovery | None:
    return _installed
