"""The link keeps the server's clock, measured over the authenticated connection."""

from __future__ import annotations

import logging
import ssl
import time

import pytest

from kiosk.protocol import messages as m
from kiosk.protocol.signing import CLOCK_SKEW_SECONDS
from kiosk.provision.link import ServerLink


async def _nothing(*_: object) -> None:
    return None


def _link() -> ServerLink:
    return ServerLink("wss://127.0.0.1:1/api/v1/socket", ssl.create_default_context, _nothing, _nothing,
                      lambda: None, lambda: m.Hello(agent_version="t", state="enrolled-unassigned", ui_alive=False),
                      lambda seq: m.Heartbeat(seq=seq, sent_at=0.0, state="enrolled-unassigned", ui_alive=False))


def test_a_small_difference_keeps_the_units_own_clock() -> None:
    link = _link()
    link.measure_clock(CLOCK_SKEW_SECONDS - 1)
    assert not link.clock_wrong
    assert abs(link.server_now() - time.time()) < 1


def test_a_unit_hours_ahead_judges_by_the_servers_clock_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    link = _link()
    with caplog.at_level(logging.INFO, "kiosk.agent.link"):
        link.measure_clock(3 * 3600.0)
        link.measure_clock(3 * 3600.0 + 0.2)  # every heartbeat measures again; it is said once
        assert link.clock_wrong
        assert abs(link.server_now() - (time.time() - 3 * 3600)) < 1
        link.measure_clock(0.1)  # time sync corrected the clock
    messages = [r.getMessage() for r in caplog.records]
    assert [t for t in messages if "clock problem" in t] == [
        "clock problem: this unit's clock is 3 h ahead of the server's; commands are judged by the server's "
        "clock until time sync corrects it (check that the unit reaches a time server, NTP)"]
    assert any("clock corrected" in t for t in messages)
    assert not link.clock_wrong
