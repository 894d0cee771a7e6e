"""Call quality for the call record: bitrate, loss, jitter, RTT, frames, freezes.

No media and nothing personal: numbers only.  aiortc's ``getStats()`` gives
packet counts, loss, jitter (in RTP clock units) and round-trip time; it does
not count decoded frames, so :class:`MeteredTrack` counts the frames the UI
actually receives and feeds a :class:`FreezeCounter`.

A *freeze* is a gap of more than 500 ms between two received video frames.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from aiortc import RTCPeerConnection
from aiortc.mediastreams import MediaStreamTrack
from av.frame import Frame

FREEZE_GAP = 0.5  # seconds
CLOCK_RATES = {"video": 90000, "audio": 48000}  # Opus and every video codec we use


class FreezeCounter:
    """Counts freezes from frame arrival times (seconds, non-decreasing).  Pure."""

    def __init__(self, threshold: float = FREEZE_GAP) -> None:
        self.threshold = threshold
        self.frames = 0
        self.freezes = 0
        self.frozen_seconds = 0.0
        self.longest_gap = 0.0
        self._last: float | None = None

    def frame(self, t: float) -> None:
        if self._last is not None:
            # A clock that steps back must not invent a freeze.
            self._gap(max(0.0, t - self._last))
        self._last = t if self._last is None else max(t, self._last)
        self.frames += 1

    def close(self, t: float) -> None:
        """The call ends at ``t``: a picture frozen until then counts too."""
        if self._last is not None:
            self._gap(max(0.0, t - self._last))
            self._last = max(t, self._last)

    def _gap(self, gap: float) -> None:
        self.longest_gap = max(self.longest_gap, gap)
        if gap > self.threshold:
            self.freezes += 1
            self.frozen_seconds += gap


class MeteredTrack(MediaStreamTrack):
    """Passes a remote track's frames on, timing each one's arrival."""

    def __init__(
        self,
        track: MediaStreamTrack,
        counter: FreezeCounter | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.kind = track.kind
        self.track = track
        self.counter = counter or FreezeCounter()
        self._clock = clock

    async def recv(self) -> Frame:
        frame = await self.track.recv()
        self.counter.frame(self._clock())
        return frame  # type: ignore[return-value]

    def stop(self) -> None:
        super().stop()
        self.track.stop()


@dataclass(frozen=True)
class CallQuality:
    """One call's quality, for the call record."""

    duration_s: float
    bitrate_sent_bps: int
    bitrate_received_bps: int
    packets_received: int
    packets_lost: int  # what we should have received and did not
    loss_fraction: float
    remote_packets_lost: int  # what the other side reports missing from us
    jitter_ms: float | None  # worst inbound stream
    round_trip_time_ms: float | None
    frames_decoded: int
    freezes: int
    frozen_s: float
    longest_gap_s: float
    # The link, from the peer's watch (kiosk.media.link) and ICE:
    outages: int = 0  # media silent for 1.5 s or more, then back
    longest_outage_s: float = 0.0
    recovery_s: float | None = None  # the slowest return of video after media came back
    lowest_bitrate_sent_bps: int | None = None
    ice_path: str | None = None  # "direct" or "relay"

    def as_record(self) -> dict[str, Any]:
        return asdict(self)


def summarize(
    report: Mapping[str, Any], frames: FreezeCounter, duration_s: float
) -> CallQuality:
    """Quality from an aiortc stats report (``await pc.getStats()``).  Pure."""
    received = lost = remote_lost = sent_bytes = received_bytes = 0
    jitters: list[float] = []
    rtts: list[float] = []
    for stats in report.values():
        kind = getattr(stats, "type", None)
        if kind == "inbound-rtp":
            received += stats.packetsReceived
            lost += max(0, stats.packetsLost)
            rate = CLOCK_RATES.get(stats.kind)
            if rate:
                jitters.append(1000.0 * stats.jitter / rate)
        elif kind == "remote-inbound-rtp":
            remote_lost += max(0, stats.packetsLost)
            if stats.roundTripTime is not None:
                rtts.append(1000.0 * stats.roundTripTime)
        elif kind == "transport":
            sent_bytes += stats.bytesSent
            received_bytes += stats.bytesReceived
    expected = received + lost
    per_second = 8.0 / duration_s if duration_s > 0 else 0.0
    return CallQuality(
        duration_s=round(duration_s, 3),
        bitrate_sent_bps=int(sent_bytes * per_second),
        bitrate_received_bps=int(received_bytes * per_second),
        packets_received=received,
        packets_lost=lost,
        loss_fraction=lost / expected if expected else 0.0,
        remote_packets_lost=remote_lost,
        jitter_ms=max(jitters) if jitters else None,
        round_trip_time_ms=sum(rtts) / len(rtts) if rtts else None,
        frames_decoded=frames.frames,
        freezes=frames.freezes,
        frozen_s=round(frames.frozen_seconds, 3),
        longest_gap_s=round(frames.longest_gap, 3),
    )


async def measure(
    pc: RTCPeerConnection,
    frames: FreezeCounter,
    started_at: float,
    clock: Callable[[], float] = time.monotonic,
) -> CallQuality:
    """Quality of ``pc``'s call so far (``started_at`` on the same ``clock``)."""
    report = await pc.getStats()
    return summarize(report, frames, clock() - started_at)
