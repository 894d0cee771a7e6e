"""The provisioning file logistics staff write into a unit's boot partition.

YAML with four keys: ``server_url``, ``ca_sha256`` (the pin), ``token`` and
``municipality``. Parsing is pure and strict: anything else is a clear error.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import msgspec
import yaml

from kiosk.protocol import messages as m
from kiosk.protocol.errors import ProtocolError

MAX_FILE_BYTES = 8 * 1024
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{32,128}$")


class Provisioning(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    server_url: str
    ca_sha256: str
    token: str | None  # None once enrollment has consumed it
    municipality: str


def normalise_fingerprint(text: str) -> str:
    """Accept ``AB:CD:..`` (as openssl prints it) or plain hex; return lowercase hex."""
    return text.replace(":", "").replace(" ", "").strip().lower()


def parse(text: str | bytes) -> Provisioning:
    raw = text.encode() if isinstance(text, str) else text
    if len(raw) > MAX_FILE_BYTES:
        raise ProtocolError("oversized", f"provisioning file is {len(raw)} bytes; at most {MAX_FILE_BYTES}")
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ProtocolError("malformed", f"provisioning file is not valid YAML: {exc}") from None
    except RecursionError:
        raise ProtocolError("malformed", "provisioning file is nested too deeply to be one") from None
    if not isinstance(data, dict):
        raise ProtocolError("malformed", "provisioning file must be a YAML mapping of keys to values")
    if "ca_sha256" in data and isinstance(data["ca_sha256"], str):
        data = {**data, "ca_sha256": normalise_fingerprint(data["ca_sha256"])}
    prov: Provisioning = m.convert(data, Provisioning)
    try:
        url = urlsplit(prov.server_url)
        hostname = url.hostname
    except ValueError as exc:
        raise ProtocolError("invalid", f"server_url is not a valid URL ({exc}): {prov.server_url!r}") from None
    if url.scheme != "https" or not hostname:
        raise ProtocolError("invalid", f"server_url must be an https:// URL, got {prov.server_url!r}")
    if not _HEX64.match(prov.ca_sha256):
        raise ProtocolError("invalid", "ca_sha256 must be the 64-hex-digit SHA-256 of the root CA certificate")
    if prov.token is not None and not _TOKEN.match(prov.token):
        raise ProtocolError("invalid", "token has the wrong form (32-128 letters, digits, - or _)")
    _check_municipality(prov.municipality)
    return prov


def _check_municipality(name: str) -> None:
    # printable only: YAML would turn some control characters (U+0085) into line breaks
    if not name.strip() or not name.isprintable():
        raise ProtocolError("invalid", "municipality must be a non-empty name of printable characters")


def render(prov: Provisioning) -> str:
    _check_municipality(prov.municipality)
    header = (
        "# Skærmbesøg kiosk provisioning file. Copy to the boot partition as kiosk-provision.yaml.\n"
        "# The token works once and expires; the unit deletes it after enrolling.\n"
    )
    return header + yaml.safe_dump(m.to_builtins(prov), sort_keys=False, allow_unicode=True)
