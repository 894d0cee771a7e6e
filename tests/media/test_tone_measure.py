"""The sound tests' instrument: a tone's frequency, read from sound that comes in pieces.

A call's sound on a loaded machine has gaps (the player late, packets concealed) and each
piece starts at its own phase; the tests that hear a caregiver's tone through a real call
must still read the tone, and nothing else.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.pipewire_fixture import RATE, burst_frequency


def pieces_of_tone(hz: float, seed: int, arrives_at: float) -> np.ndarray:
    """One second of recording: silence until ``arrives_at``, then ``hz`` in 20-150 ms
    pieces, each at a random phase, with gaps of up to 30 ms between them."""
    rng = np.random.default_rng(seed)
    out = np.zeros(RATE)
    at = int(arrives_at * RATE)
    while at < RATE:
        length = int(rng.integers(RATE // 50, RATE * 15 // 100))
        t = np.arange(min(length, RATE - at)) / RATE
        out[at:at + len(t)] = 0.3 * np.sin(2 * np.pi * hz * t + rng.uniform(0, 2 * np.pi))
        at += length + int(rng.integers(0, RATE * 3 // 100))
    return out


@settings(max_examples=60, deadline=None)
@given(hz=st.integers(200, 1500), seed=st.integers(0, 2**32 - 1), arrives_at=st.floats(0.0, 0.6))
def test_a_tone_in_pieces_with_gaps_is_read_within_a_hertz(hz: int, seed: int, arrives_at: float) -> None:
    assert abs(burst_frequency(pieces_of_tone(hz, seed, arrives_at), 100, 2000) - hz) <= 1


def test_clicks_beside_the_tone_do_not_move_it() -> None:
    clicks = np.zeros(RATE)
    clicks[:: RATE // 7] = 1.0  # seven clicks a second: energy over the whole band
    tone = pieces_of_tone(523, 1, 0.2) + clicks
    assert abs(burst_frequency(tone, 100, 2000) - 523) <= 1
