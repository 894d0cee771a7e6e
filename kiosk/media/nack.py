"""When to ask (NACK) for a missing video packet, and when to stop. Pure: the caller passes the time.

Each packet found missing is asked for in *rounds*; a round is two NACKs :data:`NACK_ECHO`
apart, and a new round starts when a round trip and :data:`NACK_RETRY_MARGIN` have passed since
the last began without the copy. Asking stops when the copy could no longer arrive before the
jitter buffer gives the hole up (its hole wait), or when the sender no longer holds the packet.

Why rounds of two: at 5 % loss each way, one NACK-and-copy in ten fails (the NACK or the copy is
lost), and each failed round costs another round trip of frozen picture, which over a 300 ms
round trip is a freeze on its own; when the round fails again, the hole wait runs out and only a
key frame (another round trip and the largest frame of all) repairs the picture: 1.5 s and more.
Two NACKs make two copies from aiortc (the unit and the Python caregiver send with it), so a
round fails about one time in a hundred, for one copy more of each lost packet (about 5 % more
video at 5 % loss). Chromium resends a packet at most once a round trip (libwebrtc's packet
history), so from a browser the second NACK covers a lost NACK, not a lost copy; the next round,
a round trip later, is one it does answer. Why no NACK for a packet already asked for
when a *new* gap appears (aiortc's own generator lists every missing packet each time): its copy
may be on its way, and a copy asked for twice in flight is sent twice for nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from aiortc.rtp import RTP_HISTORY_SIZE
from aiortc.utils import uint16_add, uint16_gt

#: The second NACK of a round follows the first by at least this (a packet later: loss on a
#: mobile link comes in short bursts, and a NACK right behind a lost one would share its fate).
NACK_ECHO: Final = 0.03
#: A new round starts this long after the round trip: the sender's turnaround, the link's
#: jitter and a frame's worth of queue. A copy later than that is likelier lost than late.
NACK_RETRY_MARGIN: Final = 0.05
#: aiortc's sender keeps the last 128 packets it sent, and its own NACK generator tracks as far
#: back: a packet further behind the newest is gone. At 60-90 video packets a second that is
#: 1.4-2.1 s, beyond the hole wait at a 4G round trip (0.83 s at 0.33 s), not always beyond
#: its 1.5 s cap.
SENDER_HISTORY: Final = RTP_HISTORY_SIZE


@dataclass
class _Hole:
    found: float  # when the gap was seen
    round_at: float  # when its latest round's first NACK went
    echoed: bool  # whether that round's second NACK went too


class NackSchedule:
    """The missing packets of one video stream and when each is next asked for.

    :meth:`arrived` is called for every packet (a copy too); it returns the sequence numbers
    to NACK now. ``round_trip`` and ``hole_wait`` follow the link (:meth:`follow`)."""

    def __init__(self, round_trip: float, hole_wait: float) -> None:
        self.round_trip = round_trip
        self.hole_wait = hole_wait
        self.newest: int | None = None
        self.holes: dict[int, _Hole] = {}
        self.asked = 0  # sequence numbers NACKed, counting each time
        self.repeats = 0  # ... of those, asked before (the echo or a later round)
        self.given_up = 0  # holes no longer asked for, their copy never having come

    def follow(self, round_trip: float, hole_wait: float) -> None:
        self.round_trip, self.hole_wait = round_trip, hole_wait

    def restart(self, seq: int) -> None:
        """Forget every hole and go on from ``seq`` (media back after a silence: what was lost
        in the dark is repaired by a key frame, not by NACKs)."""
        self.holes.clear()
        self.newest = seq

    def arrived(self, seq: int, now: float) -> list[int]:
        """Packet ``seq`` arrived at ``now``: the sequence numbers to NACK now."""
        if self.newest is None:
            self.newest = seq
            return []
        new: list[int] = []
        if uint16_gt(seq, self.newest):
            missing = (seq - self.newest - 1) % 65536
            new = [uint16_add(seq, -gap) for gap in range(min(missing, SENDER_HISTORY), 0, -1)]
            self.newest = seq
        else:
            self.holes.pop(seq, None)  # a copy, or late
        due = [s for s in list(self.holes) if self._due(s, now)]
        for s in new:
            self.holes[s] = _Hole(found=now, round_at=now, echoed=False)
        self.asked += len(due) + len(new)
        self.repeats += len(due)
        return sorted(due + new)

    def _due(self, seq: int, now: float) -> bool:
        """Whether hole ``seq`` is asked for again now; drops it when it never will be."""
        hole = self.holes[seq]
        assert self.newest is not None
        if ((self.newest - seq) % 65536 >= SENDER_HISTORY
                or now + self.round_trip > hole.found + self.hole_wait):
            del self.holes[seq]  # the sender has let it go, or its copy would come too late
            self.given_up += 1
            return False
        if not hole.echoed:
            if now - hole.round_at < NACK_ECHO:
                return False
            hole.echoed = True
            return True
        if now - hole.round_at < self.round_trip + NACK_RETRY_MARGIN:
            return False
        hole.round_at, hole.echoed = now, False
        return True

    def __iter__(self) -> Iterator[int]:
        """The packets still asked for."""
        return iter(self.holes)
