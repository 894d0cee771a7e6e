"""How a call's link is doing, as the people in the call would put it: good, poor, or lost.

Pure: the peer (:class:`kiosk.media.peer.CallPeer`) tells a :class:`LinkWatch`
about every remote frame and, every half second, what its RTP counters say;
the watch answers with the link's state when it changes. From the same
observations it keeps the call record's link figures: outages, how long the
video took to come back after each, and the lowest bitrate sent.

- *lost*: no remote media at all (audio comes 50 times a second) for
  ``lost_after`` seconds; after ``give_up_after`` the peers have lost each
  other for good and the call ends with the true reason.
- *poor*: media arrives but the picture is frozen, or loss in the last
  window is heavy ("Dårlig forbindelse — billedet kan hakke").
- *good*: neither, for ``calm_for`` seconds (no flapping on a borderline link).

Silence is only counted while the watch itself was running: when the watch was not run
for longer than ``lost_after`` (the whole process stalled — a shader compiled while
holding the GIL as the call's first frame is drawn, a machine swapping), frames may be
waiting unread in queues, so the silence counts from that late look instead. Without
this, a slow start of the screen showed "Forbindelsen er væk" while video flowed.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Final

#: Remote media silent this long: the link is lost, and both people are told (target: within 2 s).
LOST_AFTER: Final = 1.5
#: Lost this long: the call ends. Outages up to 10 s are ridden out (aiortc keeps the ICE
#: pair for 30 s of failed consent checks, so the path comes back by itself).
GIVE_UP_AFTER: Final = 15.0
#: The picture frozen this long while sound still arrives: the link is poor.
FROZEN_AFTER: Final = 1.0
#: Loss in one window at or above this: the link is poor.
POOR_LOSS: Final = 0.15
#: Good again only after this long without a sign of trouble.
CALM_FOR: Final = 3.0
#: The lowest bitrate is measured over windows at least this long, after this much media.
BITRATE_WINDOW: Final = 1.0
BITRATE_SETTLE: Final = 2.0


#: The sender's bitrate cap from loss (Google's loss-based rule): more than LOSS_HIGH lost
#: in a report cuts it by half the loss; less than LOSS_LOW lets it grow by BITRATE_GROWTH.
LOSS_HIGH: Final = 0.10
LOSS_LOW: Final = 0.02
BITRATE_GROWTH: Final = 1.08
MIN_BITRATE_CAP: Final = 150_000
MAX_BITRATE_CAP: Final = 1_500_000


def loss_based_cap(cap: int, fraction_lost: float | None) -> int:
    """The next video bitrate cap after a receiver report saying ``fraction_lost`` (0..1) was lost.

    aiortc's only congestion signal is REMB, a delay-based estimate that does not
    react to a full queue dropping packets at the tail (a narrow 4G uplink);
    this does, so the video gives way before it freezes and the voice keeps its share."""
    if fraction_lost is None:
        return cap
    if fraction_lost > LOSS_HIGH:
        cap = int(cap * (1 - 0.5 * fraction_lost))
    elif fraction_lost < LOSS_LOW:
        cap = int(cap * BITRATE_GROWTH)
    return max(MIN_BITRATE_CAP, min(MAX_BITRATE_CAP, cap))


#: aiortc sends a receiver report every 0.5-1.5 s. One that comes this long after the one before
#: covers a time the link was dark: its loss (all of it, in a 5 s outage) says the path was gone,
#: not that a queue overflowed, and cutting the bitrate for it only makes the key frame that
#: ends the outage smaller and slower, and may step the video down for STEP_UP_AFTER.
OUTAGE_REPORT_GAP: Final = 2.5


@dataclass
class LossBasedCap:
    """The video's cap from the other side's receiver reports (:func:`loss_based_cap`), applied once
    per report, and not for a report that spans an outage. Pure: report times are passed in."""

    cap: int = MAX_BITRATE_CAP
    _last_report_at: float | None = None

    def report(self, at: float | None, fraction_lost: float | None) -> int:
        """The cap, given the latest report (received at ``at``, None: none yet); the peer reads the
        latest report more often than reports come, so one already seen changes nothing."""
        if at is None or at == self._last_report_at:
            return self.cap
        previous, self._last_report_at = self._last_report_at, at
        if previous is not None and at - previous >= OUTAGE_REPORT_GAP:
            return self.cap
        self.cap = loss_based_cap(self.cap, fraction_lost)
        return self.cap


#: The video steps down (half the size, half the frame rate: an eighth of the pixels) when
#: the sender's target falls to STEP_DOWN_AT, and back up only when the target has stayed at
#: STEP_UP_AT or more for STEP_UP_AFTER. aiortc's VP8 encoder will not go below 250 kbit/s,
#: and at 640x480 its key frames overflow a 500 kbit/s link's queue; a smaller picture is what
#: a narrow link carries. The long wait to step up is because REMB, aiortc's delay-based
#: estimate, says 1 Mbit/s on a 500 kbit/s link whose queue has just drained (measured):
#: stepping up on its word froze the picture again within seconds.
STEP_DOWN_AT: Final = 320_000
STEP_UP_AT: Final = 650_000
STEP_UP_AFTER: Final = 20.0


@dataclass
class VideoStep:
    """Whether our video is stepped down, from the encoder's target bitrate over time. Pure."""

    stepped_down: bool = False
    _wide_since: float | None = None

    def observe(self, now: float, target_bps: int | None) -> bool | None:
        """The new step (True: down) if it changes now, else None. ``target_bps`` None: unknown."""
        if target_bps is None:
            return None
        if target_bps <= STEP_DOWN_AT:
            self._wide_since = None
            if not self.stepped_down:
                self.stepped_down = True
                return True
            return None
        if target_bps < STEP_UP_AT:
            self._wide_since = None
            return None
        if self._wide_since is None:
            self._wide_since = now
        if self.stepped_down and now - self._wide_since >= STEP_UP_AFTER:
            self.stepped_down = False
            return False
        return None


class LinkState(enum.StrEnum):
    GOOD = "good"
    POOR = "poor"
    LOST = "lost"


@dataclass(frozen=True)
class Counters:
    """RTP counters at one moment, summed over streams (cumulative)."""

    packets_received: int = 0
    packets_lost: int = 0
    bytes_sent: int = 0


class LinkWatch:
    """A link's state and figures from frame arrivals and counter samples. Pure: times are passed in."""

    def __init__(self, *, lost_after: float = LOST_AFTER, give_up_after: float = GIVE_UP_AFTER,
                 frozen_after: float = FROZEN_AFTER, poor_loss: float = POOR_LOSS,
                 calm_for: float = CALM_FOR) -> None:
        self.lost_after = lost_after
        self.give_up_after = give_up_after
        self.frozen_after = frozen_after
        self.poor_loss = poor_loss
        self.calm_for = calm_for
        self.state = LinkState.GOOD
        self.first_media_at: float | None = None
        self.last_media_at: float | None = None
        self.last_video_at: float | None = None
        self.outages = 0
        self.longest_outage_s = 0.0
        self.recovery_s: float | None = None  # the slowest return of video after an outage
        self.lowest_bitrate_bps: int | None = None
        self._back_at: float | None = None  # media came back here; video not yet
        self._trouble_at: float | None = None
        self._last_counters: tuple[float, Counters] | None = None
        self._observed_at: float | None = None
        self._watch_resumed_at: float | None = None  # the watch was stalled until here
        self._bitrate_from: tuple[float, int] | None = None

    # --- what arrives -------------------------------------------------------------------

    def frame(self, kind: str, at: float) -> None:
        """A remote frame (``"audio"`` or ``"video"``) arrived at ``at``."""
        if self.last_media_at is not None and at - self.last_media_at >= self.lost_after:
            self.outages += 1
            self.longest_outage_s = max(self.longest_outage_s, at - self.last_media_at)
            self._back_at = at
        if self.first_media_at is None:
            self.first_media_at = at
        self.last_media_at = max(at, self.last_media_at or at)
        if kind == "video":
            if self._back_at is not None:
                recovery = max(0.0, at - self._back_at)
                self.recovery_s = max(self.recovery_s or 0.0, recovery)
                self._back_at = None
            self.last_video_at = max(at, self.last_video_at or at)

    def observe(self, now: float, counters: Counters | None = None) -> LinkState | None:
        """Judge the link at ``now`` (with the RTP counters, if read); the new state if it changed."""
        if self._observed_at is not None and now - self._observed_at > self.lost_after:
            self._watch_resumed_at = now  # the watch itself was stalled: see the module's note
        self._observed_at = now
        loss = self._window_loss(now, counters)
        if counters is not None:
            self._track_bitrate(now, counters.bytes_sent)
        if self.last_media_at is None:
            return None  # nothing has flowed yet: set-up is the machine's business
        if self._silent_for(self.last_media_at, now) >= self.lost_after:
            state = LinkState.LOST
        else:
            frozen = (self.last_video_at is not None
                      and self._silent_for(self.last_video_at, now) >= self.frozen_after)
            back = self.state is LinkState.LOST  # back from an outage is poor before it is good
            if back or frozen or (loss is not None and loss >= self.poor_loss):
                self._trouble_at = now
            calm = self._trouble_at is None or now - self._trouble_at >= self.calm_for
            state = LinkState.GOOD if calm else LinkState.POOR
        if state is self.state:
            return None
        self.state = state
        return state

    def gave_up(self, now: float) -> bool:
        """Whether the peers have lost each other for good."""
        return (self.last_media_at is not None
                and self._silent_for(self.last_media_at, now) >= self.give_up_after)

    def record(self) -> dict[str, Any]:
        """The call record's link figures (numbers only)."""
        return {
            "outages": self.outages,
            "longest_outage_s": round(self.longest_outage_s, 3),
            "recovery_s": round(self.recovery_s, 3) if self.recovery_s is not None else None,
            "lowest_bitrate_sent_bps": self.lowest_bitrate_bps,
        }

    # --- internals ----------------------------------------------------------------------

    def _silent_for(self, last_heard: float, now: float) -> float:
        """How long nothing was heard while the watch was looking."""
        if self._watch_resumed_at is not None:
            last_heard = max(last_heard, self._watch_resumed_at)
        return now - last_heard

    def _window_loss(self, now: float, counters: Counters | None) -> float | None:
        if counters is None:
            return None
        last, self._last_counters = self._last_counters, (now, counters)
        if last is None:
            return None
        received = counters.packets_received - last[1].packets_received
        lost = counters.packets_lost - last[1].packets_lost
        expected = received + lost
        return lost / expected if expected > 0 and lost > 0 else 0.0

    def _track_bitrate(self, now: float, bytes_sent: int) -> None:
        if self.first_media_at is None or now - self.first_media_at < BITRATE_SETTLE:
            self._bitrate_from = None
            return
        if self._bitrate_from is None:
            self._bitrate_from = (now, bytes_sent)
            return
        since, sent = self._bitrate_from
        if now - since >= BITRATE_WINDOW:
            rate = int((bytes_sent - sent) * 8 / (now - since))
            if self.lowest_bitrate_bps is None or rate < self.lowest_bitrate_bps:
                self.lowest_bitrate_bps = rate
            self._bitrate_from = (now, bytes_sent)
