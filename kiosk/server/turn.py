"""Time-limited TURN credentials for coturn's REST API scheme.

coturn runs with ``use-auth-secret`` and a ``static-auth-secret`` it shares with
this server; nothing per user is stored on the TURN server. For each call the
server hands each peer (the staff browser and the device) a credential:

* username   = ``"<expiry unix time>:<opaque user id>"``
* credential = ``base64(HMAC-SHA1(secret, username))``

coturn recomputes the HMAC and refuses the username once its expiry has passed.
It checks every authenticated request, allocation *refreshes* included, so the
lifetime must outlast the longest call, not just its set-up: a credential that
expires mid-call drops the relay and the call with it.

The user id lands in coturn's logs, so it must be opaque (a device id or a
random call-leg id), never a name or a CPR number.

Pure functions: the current time is passed in, as everywhere in the protocol
code, so tests need no clock.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import math
import re
from dataclasses import dataclass
from typing import Final, Literal, TypeAlias

from kiosk.protocol.messages import IceServer

__all__ = [
    "DEFAULT_TTL",
    "TurnCredentials",
    "ice_servers",
    "issue_credentials",
    "turn_credential",
    "turn_username",
]

# A visit lasts minutes; six hours covers the longest plausible session plus a
# clock skew between this server and coturn, while a leaked credential still
# dies the same day.
DEFAULT_TTL: Final = 6 * 3600

# Opaque, log-safe ids only. ':' is coturn's separator between expiry and id.
_USER_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")

Transport: TypeAlias = Literal["udp", "tcp"]


def turn_username(user_id: str, expires_at: int) -> str:
    """The REST-API username: expiry first, so coturn can check it."""
    if not _USER_ID.fullmatch(user_id):
        raise ValueError(
            f"TURN user id {user_id!r} must be 1-128 characters of A-Z a-z 0-9 . _ - "
            "(use an opaque device or call-leg id, never personal data)"
        )
    if isinstance(expires_at, bool) or not isinstance(expires_at, int) or expires_at <= 0:
        raise ValueError(f"TURN expiry must be a positive Unix time in seconds, got {expires_at!r}")
    return f"{expires_at}:{user_id}"


def turn_credential(secret: str | bytes, username: str) -> str:
    """base64(HMAC-SHA1(secret, username)), what coturn computes to check it."""
    key = secret.encode() if isinstance(secret, str) else secret
    if not key:
        raise ValueError(
            "the TURN shared secret is empty; set the same static-auth-secret as coturn"
        )
    digest = hmac.new(key, username.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


@dataclass(frozen=True, slots=True)
class TurnCredentials:
    username: str
    credential: str
    expires_at: int  # Unix time, seconds


def issue_credentials(
    secret: str | bytes, user_id: str, now: float, ttl: int = DEFAULT_TTL
) -> TurnCredentials:
    """Credentials for ``user_id`` valid from ``now`` (Unix time) for ``ttl`` seconds."""
    if not math.isfinite(now) or now <= 0:
        raise ValueError(f"now must be the current Unix time in seconds, got {now!r}")
    if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl <= 0:
        raise ValueError(
            f"TURN credential lifetime must be a positive whole number of seconds, got {ttl!r}"
        )
    # Rounded up: a credential must never expire before the lifetime promised.
    expires_at = math.ceil(now) + ttl
    username = turn_username(user_id, expires_at)
    return TurnCredentials(username, turn_credential(secret, username), expires_at)


def _host_for_url(host: str) -> str:
    if not host or any(c in host for c in "/?#@ ") or host.startswith("["):
        raise ValueError(f"TURN host must be a bare host name or IP address, got {host!r}")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    return f"[{address}]" if address.version == 6 else host


def ice_servers(
    host: str,
    port: int,
    credentials: TurnCredentials,
    transports: tuple[Transport, ...] = ("udp", "tcp"),
    stun: bool = True,
) -> list[IceServer]:
    """The ``iceServers`` list for one peer (as the call messages carry it): our own coturn,
    never a public server.

    Give it to every peer connection: aiortc falls back to Google's public STUN
    server when given none. ``stun`` adds coturn's STUN service for
    server-reflexive (direct, NAT-traversing) candidates; the TURN URLs come in
    the order of ``transports``, UDP first, since aiortc uses only the first
    TURN URL it understands and UDP is the cheap path. TCP is for networks that
    block UDP (hospital and municipal guest Wi-Fi).
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ValueError(f"TURN port must be 1-65535, got {port!r}")
    if not transports or any(t not in ("udp", "tcp") for t in transports):
        raise ValueError(f"TURN transports must be some of 'udp', 'tcp', got {transports!r}")
    where = f"{_host_for_url(host)}:{port}"
    servers: list[IceServer] = []
    if stun:
        servers.append(IceServer(urls=[f"stun:{where}"]))
    servers.append(
        IceServer(
            urls=[f"turn:{where}?transport={t}" for t in transports],
            username=credentials.username,
            credential=credentials.credential,
        )
    )
    return servers
