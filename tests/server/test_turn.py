"""Tests for TURN REST-API credentials (kiosk.server.turn).

The expected credentials below were computed outside Python, with
``printf '%s' USERNAME | openssl dgst -sha1 -hmac SECRET -binary | base64``,
and the HMAC itself is checked against RFC 2202. That coturn accepts them is
shown by tests/e2e/test_turn_relay.py against a real coturn.
"""

from __future__ import annotations

import math

import pytest

from kiosk.protocol import messages as m
from kiosk.protocol.messages import IceServer
from kiosk.server.turn import (
    DEFAULT_TTL,
    TurnCredentials,
    ice_servers,
    issue_credentials,
    turn_credential,
    turn_username,
)

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize(
    ("secret", "username", "expected"),
    [
        ("north-jutland-turn-secret", "1700000000:device-0042", "+3xGtAsEu4pIwbxfLLQJQuXtnAU="),
        # A secret with Danish letters is taken as its UTF-8 bytes, as coturn reads it.
        ("æøå-secret", "1700003600:staff.leg-7", "2/dZN07s7MuvoyOwcint8uomcVQ="),
    ],
)
def test_credential_matches_openssl(secret: str, username: str, expected: str) -> None:
    assert turn_credential(secret, username) == expected


def test_credential_is_hmac_sha1_rfc2202_case_1() -> None:
    # RFC 2202 test case 1: key 0x0b * 20, data "Hi There",
    # digest b617318655057264e28bc0b6fb378c8ef146be00 (here in base64).
    assert turn_credential(b"\x0b" * 20, "Hi There") == "thcxhlUFcmTii8C2+zeMjvFGvgA="


def test_bytes_and_str_secret_agree() -> None:
    username = "1700000000:device-0042"
    assert turn_credential(b"north-jutland-turn-secret", username) == turn_credential(
        "north-jutland-turn-secret", username
    )


def test_empty_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="static-auth-secret"):
        turn_credential("", "1700000000:device-0042")


def test_username_puts_the_expiry_first() -> None:
    assert turn_username("device-0042", 1700000000) == "1700000000:device-0042"


@pytest.mark.parametrize(
    "user_id",
    ["", "a:b", "Jens Jensen", "010203-1234\n", "x" * 129, "anne@viborg.dk", "æ"],
)
def test_user_ids_that_could_break_the_scheme_or_leak_data_are_refused(user_id: str) -> None:
    with pytest.raises(ValueError, match="opaque"):
        turn_username(user_id, 1700000000)


@pytest.mark.parametrize("expires_at", [0, -5, 1.5, True, "1700000000"])
def test_expiry_must_be_positive_whole_seconds(expires_at: object) -> None:
    with pytest.raises(ValueError, match="Unix time"):
        turn_username("device-0042", expires_at)  # type: ignore[arg-type]


def test_issue_credentials_from_a_given_time() -> None:
    creds = issue_credentials(
        "north-jutland-turn-secret", "device-0042", now=1699999000.0, ttl=1000
    )
    assert creds == TurnCredentials(
        username="1700000000:device-0042",
        credential="+3xGtAsEu4pIwbxfLLQJQuXtnAU=",
        expires_at=1700000000,
    )


def test_expiry_rounds_up_never_short_of_the_lifetime() -> None:
    creds = issue_credentials("s", "device-0042", now=1699999999.01, ttl=1)
    assert creds.expires_at == 1700000001
    assert creds.expires_at - 1699999999.01 >= 1


def test_default_lifetime_outlasts_a_long_visit() -> None:
    creds = issue_credentials("s", "device-0042", now=1700000000.0)
    assert creds.expires_at - 1700000000 == DEFAULT_TTL >= 2 * 3600


@pytest.mark.parametrize("now", [math.nan, math.inf, 0.0, -1.0])
def test_issue_refuses_a_nonsense_clock(now: float) -> None:
    with pytest.raises(ValueError, match="Unix time"):
        issue_credentials("s", "device-0042", now=now)


@pytest.mark.parametrize("ttl", [0, -60, 1.5, True])
def test_issue_refuses_a_nonsense_lifetime(ttl: object) -> None:
    with pytest.raises(ValueError, match="lifetime"):
        issue_credentials("s", "device-0042", now=1700000000.0, ttl=ttl)  # type: ignore[arg-type]


CREDS = TurnCredentials(
    username="1700000000:device-0042", credential="c2VjcmV0", expires_at=1700000000
)


def test_ice_servers_point_only_at_our_turn_server() -> None:
    servers = ice_servers("turn.viborg.example", 3478, CREDS)
    assert servers == [
        IceServer(urls=["stun:turn.viborg.example:3478"]),
        IceServer(
            urls=[
                "turn:turn.viborg.example:3478?transport=udp",
                "turn:turn.viborg.example:3478?transport=tcp",
            ],
            username="1700000000:device-0042",
            credential="c2VjcmV0",
        ),
    ]
    for server in servers:
        for url in server.urls:
            assert url.split(":")[1] == "turn.viborg.example"  # never a public server


def test_ice_servers_as_webrtc_json() -> None:
    entries = m.to_builtins(ice_servers("127.0.0.1", 3478, CREDS, transports=("udp",)))
    assert entries == [
        {"urls": ["stun:127.0.0.1:3478"], "username": None, "credential": None},
        {
            "urls": ["turn:127.0.0.1:3478?transport=udp"],
            "username": "1700000000:device-0042",
            "credential": "c2VjcmV0",
        },
    ]


def test_ice_servers_without_stun_and_tcp_first() -> None:
    servers = ice_servers("127.0.0.1", 3478, CREDS, transports=("tcp", "udp"), stun=False)
    assert [s.urls for s in servers] == [
        ["turn:127.0.0.1:3478?transport=tcp", "turn:127.0.0.1:3478?transport=udp"]
    ]


def test_ipv6_hosts_are_bracketed() -> None:
    servers = ice_servers("::1", 3478, CREDS, stun=False)
    assert servers[0].urls[0] == "turn:[::1]:3478?transport=udp"


def test_ice_servers_are_usable_by_aiortc() -> None:
    aiortc = pytest.importorskip("aiortc")
    from aiortc.rtcicetransport import connection_kwargs

    servers = ice_servers("127.0.0.1", 3478, CREDS)
    kwargs = connection_kwargs(
        [
            aiortc.RTCIceServer(urls=list(s.urls), username=s.username, credential=s.credential)
            for s in servers
        ]
    )
    assert kwargs["stun_server"] == ("127.0.0.1", 3478)
    assert kwargs["turn_server"] == ("127.0.0.1", 3478)
    assert kwargs["turn_transport"] == "udp"
    assert (kwargs["turn_username"], kwargs["turn_password"]) == (CREDS.username, CREDS.credential)


@pytest.mark.parametrize(
    ("host", "port", "transports"),
    [
        ("", 3478, ("udp",)),
        ("turn.example/x", 3478, ("udp",)),
        ("[::1]", 3478, ("udp",)),
        ("127.0.0.1", 0, ("udp",)),
        ("127.0.0.1", 65536, ("udp",)),
        ("127.0.0.1", True, ("udp",)),
        ("127.0.0.1", 3478, ()),
        ("127.0.0.1", 3478, ("tls",)),
    ],
)
def test_ice_servers_refuse_bad_settings(host: str, port: int, transports: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="TURN"):
        ice_servers(host, port, CREDS, transports=transports)  # type: ignore[arg-type]
