"""When a missing video packet is asked for (kiosk.media.nack), and aiortc's generator wrapped around it."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from aiortc.rtp import RtpPacket

from kiosk.media.keyframes import SILENCE, RepeatingNackGenerator, follow_round_trip
from kiosk.media.nack import NACK_ECHO, NACK_RETRY_MARGIN, SENDER_HISTORY, NackSchedule

RTT = 0.3
ROUND = RTT + NACK_RETRY_MARGIN  # a new round starts this long after the last


def asks_over_time(schedule: NackSchedule, lost: int, until: float, step: float = 0.01) -> list[float]:
    """Packets arrive every ``step`` s from 0 (``lost`` never does): when ``lost`` is NACKed."""
    asked = []
    for i in range(int(until / step)):
        seq = i + 1
        if seq != lost and lost in schedule.arrived(seq, i * step):
            asked.append(i * step)
    return asked


def test_a_missing_packet_is_asked_for_twice_at_once_and_again_each_round_trip_while_it_can_be_filled() -> None:
    # Hole wait 1.2 s: rounds at 0 and 0.35 s and 0.70 s have their copies back by 1.0 s;
    # a round at 1.05 s would bring its copy at 1.35 s, after the buffer gave the hole up.
    schedule = NackSchedule(round_trip=RTT, hole_wait=1.2)
    asked = asks_over_time(schedule, lost=5, until=2.0)
    found = 0.05  # packet 6 arrives at 0.05 s: the gap is seen then
    rounds = [found, found + ROUND, found + 2 * ROUND]
    expected = sorted([*rounds, *(r + NACK_ECHO for r in rounds)])
    assert asked == pytest.approx(expected, abs=0.0101)  # at the first packet due
    assert schedule.given_up == 1 and list(schedule) == []


def test_today_aiortc_would_ask_only_when_a_new_gap_came_so_a_quiet_stream_repeats_here_by_itself() -> None:
    # The case of the traced 1.5 s freezes: the NACK (or its copy) lost, and no new gap
    # for a while. Here the packet is asked for again within a round trip and a margin.
    schedule = NackSchedule(round_trip=RTT, hole_wait=0.75)
    asked = asks_over_time(schedule, lost=5, until=1.0)
    assert len(asked) == 4  # two rounds of two; a third round's copy would come after 0.75 s
    assert asked[2] - asked[0] >= ROUND - 0.011


def test_a_packet_asked_for_is_not_asked_again_when_a_new_gap_appears() -> None:
    schedule = NackSchedule(round_trip=RTT, hole_wait=0.75)
    assert schedule.arrived(1, 0.0) == []
    assert schedule.arrived(3, 0.01) == [2]
    assert schedule.arrived(4, 0.05) == [2]  # the round's second NACK
    assert schedule.arrived(6, 0.10) == [5]  # a new gap: only the new packet, 2's copies are on their way
    assert schedule.arrived(2, 0.32) == [5]  # 2's copy came; 5's second NACK is due
    assert schedule.arrived(7, 0.33) == []
    assert list(schedule) == [5]
    assert schedule.asked == 4 and schedule.repeats == 2


def test_packets_the_sender_no_longer_holds_are_not_asked_for() -> None:
    schedule = NackSchedule(round_trip=0.05, hole_wait=1.5)
    schedule.arrived(1, 0.0)
    assert schedule.arrived(3, 0.01) == [2]
    for i in range(SENDER_HISTORY):  # a fast stream: 2 falls out of the sender's history
        schedule.arrived(4 + i, 0.02 + i * 0.001)
    assert 2 not in list(schedule) and schedule.given_up == 1
    # a gap wider than the sender's history: only what it still holds is asked for
    first = schedule.arrived(4 + SENDER_HISTORY + 500, 0.5)
    assert len(first) == SENDER_HISTORY and max(first) == 3 + SENDER_HISTORY + 500


def test_sequence_numbers_wrap() -> None:
    schedule = NackSchedule(round_trip=RTT, hole_wait=0.75)
    schedule.arrived(65534, 0.0)
    assert schedule.arrived(1, 0.01) == [0, 65535]
    assert schedule.arrived(65535, 0.02) == [] and list(schedule) == [0]


def test_follow_sets_the_round_and_the_wait() -> None:
    schedule = NackSchedule(round_trip=0.4, hole_wait=1.0)
    schedule.follow(0.1, 0.3)
    asked = asks_over_time(schedule, lost=5, until=1.0)
    assert len(asked) == 4  # rounds at 0.05 and 0.2; the next (0.35) would end after the 0.3 s wait


def nack_generator() -> tuple[RepeatingNackGenerator, Callable[[int, float], set[int]]]:
    """A generator on a 300 ms link with a 0.75 s hole wait, and ``arrives(seq, at)``: what aiortc then NACKs."""
    now = [0.0]
    generator = RepeatingNackGenerator(hole_wait_floor=0.3, clock=lambda: now[0])
    generator.follow_round_trip(RTT)

    def arrives(seq: int, at: float) -> set[int]:
        now[0] = at
        return set(generator.missing) if generator.add(RtpPacket(sequence_number=seq)) else set()

    return generator, arrives


def test_aiortc_is_told_to_nack_only_the_packets_due() -> None:
    generator, arrives = nack_generator()
    assert arrives(1, 0.00) == set()
    assert arrives(3, 0.02) == {2}
    assert arrives(4, 0.03) == set()  # too soon for the second NACK
    assert arrives(5, 0.06) == {2}
    assert arrives(7, 0.10) == {6}  # aiortc's own would send {2, 6}
    assert arrives(8, 0.20) == {6}
    assert arrives(9, 0.38) == {2} and generator.repeats == 3  # no copy of 2 within the round: ask again
    assert arrives(2, 0.60) == set() and arrives(6, 0.61) == set()
    assert arrives(10, 2.00) == set() and list(generator.schedule) == []


def test_packets_lost_in_the_dark_are_not_nacked() -> None:
    generator, arrives = nack_generator()
    assert arrives(1, 0.0) == set() and arrives(2, 0.05) == set()
    assert arrives(400, 0.05 + SILENCE) == set() and list(generator.schedule) == []  # a key frame is asked for
    assert arrives(401, 1.6) == set() and arrives(402, 2.2) == set()  # nor asked for later
    assert arrives(404, 2.25) == {403}  # a new loss is NACKed as ever


def test_follow_round_trip_reaches_the_generators_of_receivers() -> None:
    class Receiver:
        def __init__(self) -> None:
            self._RTCRtpReceiver__nack_generator = RepeatingNackGenerator(hole_wait_floor=0.3)

    receiver = Receiver()
    follow_round_trip([receiver], 0.2)
    schedule = receiver._RTCRtpReceiver__nack_generator.schedule
    assert (schedule.round_trip, schedule.hole_wait) == (0.2, 0.5)
    follow_round_trip([receiver], None)  # not measured: kept
    assert (schedule.round_trip, schedule.hole_wait) == (0.2, 0.5)
