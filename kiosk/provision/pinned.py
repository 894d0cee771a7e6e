"""HTTPS that trusts exactly one root, the municipality's, and nothing from the system store.

Also the one tolerant variant: the same root and host name, but without the validity
dates, used only to read the server's clock when ours may be wrong (see ``clock``).
"""

from __future__ import annotations

import email.utils
import http.client
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

TIMEOUT_SECONDS = 15.0
ANSWER_LIMIT = 256 * 1024
#: OpenSSL's X509_V_FLAG_NO_CHECK_TIME (Python's ssl module has no name for it).
_NO_CHECK_TIME = 0x200000


def pinned_context(ca_pem: str) -> ssl.SSLContext:
    """Client TLS that trusts exactly one root: the municipality's."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_verify_locations(cadata=ca_pem)
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def dateless_context(ca_pem: str) -> ssl.SSLContext:
    """The pinned root and host name, validity dates ignored: for reading the server's clock only."""
    ctx = pinned_context(ca_pem)
    ctx.verify_flags |= _NO_CHECK_TIME
    return ctx


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    date: str | None  # the server's clock, as its Date header says


def request(url: str, method: str, path: str, ctx: ssl.SSLContext, body: bytes | None = None,
            sent: Callable[[], None] = lambda: None) -> Answer:
    """One request on its own connection; ``sent`` runs once the request has left."""
    parts = urlsplit(url)
    conn = http.client.HTTPSConnection(parts.hostname or "", parts.port or 443, context=ctx, timeout=TIMEOUT_SECONDS)
    headers = {"Connection": "close"} | ({"Content-Type": "application/json"} if body else {})
    try:
        conn.request(method, path, body=body, headers=headers)
        sent()
        resp = conn.getresponse()
        return Answer(resp.status, resp.read(ANSWER_LIMIT), resp.getheader("Date"))
    finally:
        conn.close()


def server_time(url: str, ca_pem: str) -> float | None:
    """The server's clock over a pinned connection that ignores dates, or None if it cannot be read."""
    try:
        answer = request(url, "HEAD", "/ca.pem", dateless_context(ca_pem))
    except (OSError, http.client.HTTPException):
        return None
    if answer.date is None:
        return None
    try:
        return email.utils.parsedate_to_datetime(answer.date).timestamp()
    except (TypeError, ValueError):
        return None
