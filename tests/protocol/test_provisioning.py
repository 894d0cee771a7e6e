"""Tests for kiosk.protocol.provisioning: the YAML file logistics staff write when flashing.

A unit with a bad provisioning file must say clearly what is wrong (the agent turns the
ProtocolError's detail into its "bad-provisioning" refusal), and no input whatsoever
may crash the parser with anything but a ProtocolError.
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kiosk.protocol import provisioning
from kiosk.protocol.errors import ProtocolError
from kiosk.protocol.provisioning import MAX_FILE_BYTES, Provisioning

pytestmark = pytest.mark.timeout(120)

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

PIN = hashlib.sha256(b"municipality root CA").hexdigest()
TOKEN = "k3V9_xQ-" * 5  # 40 characters
FIELDS: dict[str, Any] = {
    "server_url": "https://kiosk.aarhus.dk",
    "ca_sha256": PIN,
    "token": TOKEN,
    "municipality": "Aarhus Kommune",
}


def file_text(**changes: Any) -> str:
    """A provisioning file; a value of ``...`` drops the key."""
    data = {k: v for k, v in {**FIELDS, **changes}.items() if v is not ...}
    return str(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


def refusal(text: str | bytes) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        provisioning.parse(text)
    assert info.value.detail
    return info.value


# ------------------------------------------------------------------------------ valid


def test_parse_a_valid_file() -> None:
    text = (
        "# written by logistics\n"
        "server_url: https://kiosk.aarhus.dk\n"
        f"ca_sha256: {PIN}\n"
        f"token: {TOKEN}\n"
        "municipality: Aarhus Kommune\n"
    )
    assert provisioning.parse(text) == Provisioning(**FIELDS)
    assert provisioning.parse(text.encode()) == Provisioning(**FIELDS)


def test_colon_separated_uppercase_fingerprint_as_openssl_prints_it() -> None:
    openssl = ":".join(PIN[i : i + 2] for i in range(0, 64, 2)).upper()
    assert len(openssl) == 95
    assert provisioning.parse(file_text(ca_sha256=openssl)).ca_sha256 == PIN
    spaced = " ".join(PIN[i : i + 2] for i in range(0, 64, 2)).upper()
    assert provisioning.parse(file_text(ca_sha256=spaced)).ca_sha256 == PIN


def test_normalise_fingerprint() -> None:
    assert provisioning.normalise_fingerprint(" AB:cd:EF ") == "abcdef"
    assert provisioning.normalise_fingerprint(PIN) == PIN


def test_consumed_token_is_null() -> None:
    assert provisioning.parse(file_text(token=None)).token is None


def test_url_with_port_and_path_and_unicode_municipality() -> None:
    prov = provisioning.parse(file_text(server_url="https://10.0.0.5:8443/kiosk", municipality="Ærø Kommune"))
    assert (prov.server_url, prov.municipality) == ("https://10.0.0.5:8443/kiosk", "Ærø Kommune")


@pytest.mark.parametrize("length", [32, 128])
def test_token_length_limits_are_inclusive(length: int) -> None:
    assert provisioning.parse(file_text(token="a" * length)).token == "a" * length


def test_render_parse_round_trip() -> None:
    prov = Provisioning(**FIELDS)
    text = provisioning.render(prov)
    assert text.startswith("# Skærmbesøg kiosk provisioning file")
    assert provisioning.parse(text) == prov
    assert provisioning.parse(provisioning.render(Provisioning(**{**FIELDS, "token": None}))).token is None


hosts = st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z][a-z0-9-]{0,10}){0,3}", fullmatch=True)
valid_provisionings = st.builds(
    Provisioning,
    server_url=st.builds(
        lambda host, port, path: f"https://{host}{port}{path}",
        hosts,
        st.sampled_from(["", ":443", ":8443"]),
        st.sampled_from(["", "/", "/kiosk", "/a/b?c=d"]),
    ),
    ca_sha256=st.binary(min_size=32, max_size=32).map(bytes.hex),
    token=st.none() | st.from_regex(r"[A-Za-z0-9_-]{32,128}", fullmatch=True),
    # Any printable text a person might type, as long as it is not blank (control characters
    # are refused: see test_municipality_with_a_control_character_is_refused).
    municipality=st.text(st.characters(), min_size=1, max_size=60).filter(lambda s: s.isprintable()).filter(
        lambda s: s.strip() != ""
    ),
)


@FAST
@given(valid_provisionings)
def test_render_parse_round_trip_property(prov: Provisioning) -> None:
    assert provisioning.parse(provisioning.render(prov)) == prov


def test_municipality_with_a_control_character_is_refused() -> None:
    # found by the round-trip property: YAML reads U+0085 back as a line break
    prov = Provisioning(**{**FIELDS, "municipality": "Aarhus\x85"})
    with pytest.raises(ProtocolError, match="printable"):
        provisioning.render(prov)
    with pytest.raises(ProtocolError, match="printable"):
        # a hand-edited file: YAML's double-quoted escape turns \x07 into a bell character
        provisioning.parse(provisioning.render(Provisioning(**FIELDS)).replace(
            "municipality: Aarhus Kommune", 'municipality: "Aarhus\\x07"'))


# ---------------------------------------------------------------------------- refused


@pytest.mark.parametrize("text", ["server_url: [unclosed\n", "a: b: c\n", "key: 'open\n", "\tbad: tab\n"])
def test_not_yaml(text: str) -> None:
    error = refusal(text)
    assert error.reason == "malformed"
    assert "not valid YAML" in error.detail


@pytest.mark.parametrize("text", ["", "# only a comment\n", "- a\n- b\n", "just words\n", "42\n", "null\n"])
def test_not_a_mapping(text: str) -> None:
    error = refusal(text)
    assert error.reason == "malformed"
    assert "mapping" in error.detail


@pytest.mark.parametrize(
    "url", ["http://kiosk.aarhus.dk", "ftp://kiosk.aarhus.dk", "kiosk.aarhus.dk", "https://", "https:///path", ""]
)
def test_server_url_must_be_https_with_a_host(url: str) -> None:
    error = refusal(file_text(server_url=url))
    assert error.reason == "invalid"
    assert "https://" in error.detail and "server_url" in error.detail


@pytest.mark.parametrize("key", sorted(FIELDS))
def test_missing_key(key: str) -> None:
    error = refusal(file_text(**{key: ...}))
    assert error.reason == "invalid"
    assert key in error.detail


def test_unknown_key() -> None:
    error = refusal(file_text(wifi_password="hunter2"))
    assert error.reason == "invalid"
    assert "wifi_password" in error.detail


@pytest.mark.parametrize(
    "fingerprint",
    [PIN[:-1], PIN + "0", "", "g" * 64, hashlib.sha1(b"x").hexdigest(), PIN[:62] + ":"],
    ids=["63", "65", "empty", "not-hex", "sha1", "trailing-colon"],
)
def test_bad_fingerprint(fingerprint: str) -> None:
    error = refusal(file_text(ca_sha256=fingerprint))
    assert error.reason == "invalid"
    assert "ca_sha256" in error.detail and "64-hex-digit" in error.detail


@pytest.mark.parametrize(
    "token", ["a" * 31, "", "a" * 129, "a" * 31 + "!", "a" * 31 + " ", "æ" * 40], ids=["short", "empty", "long",
                                                                                         "bang", "space", "non-ascii"]
)
def test_bad_token(token: str) -> None:
    error = refusal(file_text(token=token))
    assert error.reason == "invalid"
    assert "token" in error.detail and "32-128" in error.detail


@pytest.mark.parametrize("municipality", ["", "   ", "\t\n"])
def test_empty_municipality(municipality: str) -> None:
    error = refusal(file_text(municipality=municipality))
    assert error.reason == "invalid"
    assert "municipality" in error.detail


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("server_url", 443),
        ("server_url", ["https://a"]),
        ("ca_sha256", 12345),
        ("token", 12345678901234567890123456789012345),
        ("municipality", None),
        ("municipality", {"name": "Aarhus"}),
    ],
)
def test_wrong_value_types(key: str, value: Any) -> None:
    error = refusal(file_text(**{key: value}))
    assert error.reason == "invalid"
    assert key in error.detail


def test_dates_and_binary_are_not_strings() -> None:
    assert refusal(file_text().replace("Aarhus Kommune", "2024-01-01")).reason == "invalid"
    assert refusal(file_text().replace("Aarhus Kommune", "!!binary aGVsbG8=")).reason == "invalid"


def test_python_tags_are_not_constructed() -> None:
    error = refusal("municipality: !!python/object/apply:os.system ['true']\n")
    assert error.reason == "malformed"


def test_oversized() -> None:
    padded = file_text() + "#" * (MAX_FILE_BYTES + 1)
    error = refusal(padded)
    assert error.reason == "oversized"
    assert str(MAX_FILE_BYTES) in error.detail
    # The limit counts bytes, and a file of exactly the limit is fine.
    base = file_text().encode()
    exact = base + b"#" * (MAX_FILE_BYTES - len(base))
    assert len(exact) == MAX_FILE_BYTES
    assert provisioning.parse(exact) == Provisioning(**FIELDS)
    assert refusal(exact.decode() + "æ").reason == "oversized"


def test_invalid_utf8_is_malformed() -> None:
    assert refusal(file_text().encode() + b"# \xff\xfe\n").reason == "malformed"


@pytest.mark.parametrize("url", ["https://[oops", "https://[::1/kiosk", "https://a\u2100b@kiosk.dk"])
def test_unparsable_url_is_a_protocol_error(url: str) -> None:
    with pytest.raises(ProtocolError):
        provisioning.parse(file_text(server_url=url))


@pytest.mark.parametrize("text", ["[" * 1000, "- " * 4000, "{a: " * 2000])
def test_deeply_nested_yaml_is_a_protocol_error(text: str) -> None:
    assert len(text.encode()) <= MAX_FILE_BYTES
    with pytest.raises(ProtocolError):
        provisioning.parse(text)


# ------------------------------------------------------------------------- properties


def parse_or_refuse(data: str | bytes) -> None:
    try:
        prov = provisioning.parse(data)
    except ProtocolError as exc:
        assert exc.reason in {"malformed", "oversized", "invalid", "unknown-type"}
        assert exc.detail
        return
    assert isinstance(prov, Provisioning)
    assert prov.server_url.startswith("https://")
    assert len(prov.ca_sha256) == 64


@FAST
@given(st.binary(max_size=400))
def test_random_bytes_give_protocol_error_or_provisioning(data: bytes) -> None:
    parse_or_refuse(data)


@FAST
@given(st.text(max_size=400))
def test_random_text_gives_protocol_error_or_provisioning(text: str) -> None:
    parse_or_refuse(text)


yaml_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30)
yaml_values = st.recursive(
    yaml_scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3), max_leaves=8
)


@FAST
@given(
    st.dictionaries(st.sampled_from([*FIELDS, "extra"]) | st.text(max_size=10), yaml_values, max_size=6),
    st.booleans(),
)
def test_random_mappings_give_protocol_error_or_provisioning(data: dict[str, Any], start_valid: bool) -> None:
    mapping = {**FIELDS, **data} if start_valid else data
    parse_or_refuse(yaml.safe_dump(mapping, allow_unicode=True))


@FAST
@given(st.data())
def test_every_truncation_of_a_valid_file_gives_protocol_error_or_provisioning(data: st.DataObject) -> None:
    text = provisioning.render(Provisioning(**FIELDS)).encode()
    parse_or_refuse(text[: data.draw(st.integers(0, len(text)), label="cut")])


def test_provisioning_struct_matches_the_documented_keys() -> None:
    assert Provisioning.__struct_fields__ == ("server_url", "ca_sha256", "token", "municipality")
    assert msgspec.structs.asdict(provisioning.parse(file_text())) == FIELDS
