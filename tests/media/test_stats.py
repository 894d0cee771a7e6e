"""Call quality: the freeze counter, and the summary of aiortc's stats."""

from __future__ import annotations

import datetime
import itertools

import pytest
from aiortc.stats import (
    RTCInboundRtpStreamStats,
    RTCOutboundRtpStreamStats,
    RTCRemoteInboundRtpStreamStats,
    RTCStatsReport,
    RTCTransportStats,
)
from hypothesis import given
from hypothesis import strategies as st

from kiosk.media.stats import FREEZE_GAP, FreezeCounter, summarize


def counted(times: list[float]) -> FreezeCounter:
    counter = FreezeCounter()
    for t in times:
        counter.frame(t)
    return counter


def test_a_gap_over_half_a_second_is_one_freeze() -> None:
    steady = [i / 30 for i in range(30)]
    assert counted(steady).freezes == 0
    counter = counted([*steady, 1.0 + 0.6, 1.0 + 0.6 + 1 / 30])
    assert (counter.freezes, counter.frames) == (1, 32)
    assert counter.frozen_seconds == pytest.approx(1.6 - 29 / 30)
    assert counter.longest_gap == pytest.approx(1.6 - 29 / 30)


def test_exactly_half_a_second_is_not_a_freeze() -> None:
    assert counted([0.0, 0.5]).freezes == 0
    assert counted([0.0, 0.5 + 1e-6]).freezes == 1


def test_a_picture_frozen_until_hang_up_counts() -> None:
    counter = counted([0.0, 0.03])
    counter.close(2.0)
    assert counter.freezes == 1 and counter.frozen_seconds == pytest.approx(1.97)
    empty = FreezeCounter()
    empty.close(5.0)  # no video at all is not a "freeze": there was no picture
    assert empty.freezes == 0


def test_a_clock_stepping_back_invents_nothing() -> None:
    counter = counted([10.0, 9.0, 10.2])
    assert counter.freezes == 0 and counter.frozen_seconds == 0.0


arrivals = st.lists(st.floats(min_value=0, max_value=1e5, allow_nan=False), max_size=60).map(sorted)


@given(arrivals)
def test_freezes_are_exactly_the_gaps_over_the_threshold(times: list[float]) -> None:
    counter = counted(times)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert counter.frames == len(times)
    assert counter.freezes == sum(1 for g in gaps if g > FREEZE_GAP)
    assert counter.frozen_seconds == pytest.approx(sum(g for g in gaps if g > FREEZE_GAP))
    assert counter.longest_gap == pytest.approx(max(gaps, default=0.0))
    if times:
        assert counter.frozen_seconds <= times[-1] - times[0] + 1e-6


# Multiples of 1/64 s add and subtract exactly in floating point, so a gap of
# exactly 0.5 s stays exactly 0.5 s wherever the call started.
ticks = st.integers(min_value=0, max_value=64 * 3600).map(lambda n: n / 64)


@given(st.lists(ticks, max_size=60).map(sorted), st.integers(-64 * 3600, 64 * 3600).map(lambda n: n / 64))
def test_only_gaps_matter_not_when_the_call_started(times: list[float], shift: float) -> None:
    a, b = counted(times), counted([t + shift for t in times])
    assert (a.freezes, a.frames, a.frozen_seconds) == (b.freezes, b.frames, b.frozen_seconds)


@given(st.lists(st.floats(min_value=0, max_value=1e4, allow_nan=False), max_size=60))
def test_any_order_of_arrivals_keeps_the_counts_sane(times: list[float]) -> None:
    counter = counted(times)
    assert 0 <= counter.freezes <= max(0, len(times) - 1)
    assert counter.frozen_seconds >= 0


def test_summary_reads_aiortc_stats_in_the_units_a_record_wants() -> None:
    now = datetime.datetime.now(datetime.UTC)
    report = RTCStatsReport()
    report.add(RTCInboundRtpStreamStats(type="inbound-rtp", id="iv", ssrc=1, kind="video",
                                        packetsReceived=950, packetsLost=50, jitter=900,
                                        timestamp=now, transportId="t"))
    report.add(RTCInboundRtpStreamStats(type="inbound-rtp", id="ia", ssrc=2, kind="audio",
                                        packetsReceived=500, packetsLost=0, jitter=96, timestamp=now, transportId="t"))
    report.add(RTCOutboundRtpStreamStats(type="outbound-rtp", id="o", ssrc=3, kind="video",
                                         packetsSent=10, bytesSent=1000, trackId="x", timestamp=now, transportId="t"))
    report.add(RTCRemoteInboundRtpStreamStats(type="remote-inbound-rtp", id="r", ssrc=3, kind="video",
                                              packetsReceived=9, packetsLost=1, jitter=0,
                                              roundTripTime=0.08, fractionLost=0.1, timestamp=now, transportId="t"))
    report.add(RTCTransportStats(timestamp=now, type="transport", id="t", packetsSent=10,
                                 packetsReceived=1450, bytesSent=250_000, bytesReceived=500_000,
                                 iceRole="controlling", dtlsState="connected"))
    quality = summarize(report, counted([0.0, 0.7, 0.73]), duration_s=4.0)
    assert quality.packets_received == 1450 and quality.packets_lost == 50
    assert quality.loss_fraction == pytest.approx(50 / 1500)
    assert quality.jitter_ms == pytest.approx(10.0)  # 900 ticks of 90 kHz
    assert quality.round_trip_time_ms == pytest.approx(80.0)
    assert quality.remote_packets_lost == 1
    assert (quality.bitrate_sent_bps, quality.bitrate_received_bps) == (500_000, 1_000_000)
    assert (quality.frames_decoded, quality.freezes) == (3, 1)
    record = quality.as_record()
    assert set(record) >= {"bitrate_received_bps", "loss_fraction", "round_trip_time_ms", "freezes"}


def test_summary_of_a_call_with_no_reports_yet_is_honest() -> None:
    quality = summarize(RTCStatsReport(), FreezeCounter(), duration_s=0.0)
    assert quality.round_trip_time_ms is None and quality.jitter_ms is None
    assert quality.loss_fraction == 0.0 and quality.bitrate_sent_bps == 0
