"""A wrong clock is told from a wrong server, in plain words."""

from __future__ import annotations

import ssl

import pytest

from kiosk.protocol.signing import CLOCK_SKEW_SECONDS
from kiosk.provision import clock

SERVER = 1_795_000_000.0  # 2026-11-18 11:06:40 UTC


@pytest.mark.parametrize(("seconds", "words"), [
    (40, "40 s"), (-40, "40 s"), (7 * 60 + 10, "7 min"), (5 * 3600 + 600, "5 h 10 min"), (3 * 3600, "3 h"),
    (3 * 86400, "3 days"), (3 * 86400 - 0.6, "3 days"), (86400 + 2 * 3600, "1 day 2 h"),
])
def test_span(seconds: float, words: str) -> None:
    assert clock.span(seconds) == words


def test_unit_clock_days_behind_is_named_with_both_clocks() -> None:
    text = clock.describe(SERVER - 3 * 86400, SERVER, "not yet valid")
    assert text.startswith("clock problem: this unit's clock is 3 days behind the server's")
    assert "unit 2026-11-15 11:06:40 UTC" in text and "server 2026-11-18 11:06:40 UTC" in text
    assert "retries" in text and "NTP" in text
    assert "pin" not in text


def test_unit_clock_ahead() -> None:
    assert "3 h ahead of the server's" in clock.describe(SERVER + 3 * 3600, SERVER, "expired")


def test_clocks_that_agree_blame_the_servers_certificate() -> None:
    text = clock.describe(SERVER + CLOCK_SKEW_SECONDS / 2, SERVER, "expired")
    assert "clock problem at the server" in text and "renew" in text


def test_unknown_server_time_still_says_clock() -> None:
    text = clock.describe(SERVER, None, "not yet valid")
    assert text.startswith("clock problem:") and "could not be read" in text


def test_only_date_errors_are_clock_errors() -> None:
    def error(code: int) -> ssl.SSLCertVerificationError:
        exc = ssl.SSLCertVerificationError("verify failed")
        exc.verify_code = code
        return exc

    assert clock.is_date_error(error(9)) and clock.is_date_error(error(10))
    assert not clock.is_date_error(error(19))  # self-signed certificate in chain: an impostor
    assert not clock.is_date_error(OSError("reset"))
