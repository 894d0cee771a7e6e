"""Reconnect delays: exponential with full jitter, so a thousand units that lost the
server at once do not all come back in the same second."""

from __future__ import annotations

import random


def delay(attempt: int, base: float = 1.0, cap: float = 60.0, rng: random.Random | None = None) -> float:
    """Seconds to wait before reconnect ``attempt`` (0 = first retry)."""
    ceiling = min(cap, base * (2 ** min(attempt, 32)))
    return (rng or random).uniform(0, ceiling)
