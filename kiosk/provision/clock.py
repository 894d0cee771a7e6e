"""Telling a wrong clock from a wrong server, and saying so in plain words.

A Raspberry Pi has no real-time clock: until time sync succeeds, its clock is whatever
the image carried, often days behind. TLS then finds the server's certificate "not yet
valid" (or "expired" when the clock runs ahead). That is no impostor: the chain still
leads to the pinned root. So on such an error the agent reads the server's clock over
a pinned connection that ignores dates, and reports a clock problem, never a pin
mismatch. It is retried until the time is right.
"""

from __future__ import annotations

import ssl
import time

from kiosk.protocol.signing import CLOCK_SKEW_SECONDS
from kiosk.provision import pinned

#: OpenSSL's X509_V_ERR_CERT_NOT_YET_VALID and X509_V_ERR_CERT_HAS_EXPIRED, in words.
_DATE_ERRORS = {9: "not yet valid", 10: "expired"}


def is_date_error(exc: BaseException) -> bool:
    """A certificate refused only for its validity dates: a matter of clocks, not of trust."""
    return isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_code in _DATE_ERRORS


def date_problem(exc: ssl.SSLCertVerificationError) -> str:
    return _DATE_ERRORS.get(exc.verify_code, "out of date")


def stamp(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


def span(seconds: float) -> str:
    """3 days 2 h, 5 h 10 min, 7 min, 40 s (rounded to the minute from an hour up)."""
    s = round(abs(seconds))
    if s < 3600:
        return f"{s // 60} min" if s >= 60 else f"{s} s"
    minutes = round(abs(seconds) / 60)
    days, hours, minutes = minutes // 1440, minutes % 1440 // 60, minutes % 60
    if days:
        return f"{days} day{'s' if days != 1 else ''}" + (f" {hours} h" if hours else "")
    return f"{hours} h" + (f" {minutes} min" if minutes else "")


def offset_words(offset: float) -> str:
    """``offset`` is the unit's clock minus the server's."""
    return f"this unit's clock is {span(offset)} {'ahead of' if offset > 0 else 'behind'} the server's"


def describe(local: float, server: float | None, problem: str) -> str:
    """Why a certificate's dates failed, from the two clocks; ``problem`` is OpenSSL's words."""
    if server is None:
        return (f"clock problem: the server's certificate is {problem} by this unit's clock "
                f"({stamp(local)}), and the server's own time could not be read. The unit's clock is "
                "probably wrong (no time sync yet); it retries until the time is right.")
    offset = local - server
    if abs(offset) <= CLOCK_SKEW_SECONDS:
        return (f"clock problem at the server: this unit's clock ({stamp(local)}) agrees with the server's "
                f"({stamp(server)}), but the server's certificate is {problem}. The municipality's IT must "
                "renew it; the unit retries meanwhile.")
    return (f"clock problem: {offset_words(offset)} (unit {stamp(local)}, server {stamp(server)}), so the "
            f"server's certificate seems {problem}. The unit retries until time sync corrects its clock; "
            "check that it can reach a time server (NTP).")


def diagnose(url: str, ca_pem: str, exc: ssl.SSLCertVerificationError) -> str:
    """For a date error on a pinned connection: whose clock is wrong, in words (blocking)."""
    return describe(time.time(), pinned.server_time(url, ca_pem), date_problem(exc))
