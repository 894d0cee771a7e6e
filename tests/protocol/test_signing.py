"""Tests for kiosk.protocol.signing: sealed commands, their refusals, and signed results.

verify_command is pure, so every refusal is exercised with an explicit clock and replay
memory. The property tests hold the promise the agent relies on: whatever envelope
arrives, the answer is a Command or a Refused, never an exception.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, x25519
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kiosk.protocol import messages as m
from kiosk.protocol import signing
from kiosk.protocol.errors import ProtocolError
from kiosk.protocol.signing import (
    CLOCK_SKEW_SECONDS,
    MAX_COMMAND_LIFETIME_SECONDS,
    Refusal,
    Refused,
    ReplayGuard,
)

pytestmark = pytest.mark.timeout(120)

FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

NOW = 1_750_000_000.0
DEVICE = "dev-0001"
SERVER_KEY = ed25519.Ed25519PrivateKey.generate()
OTHER_SERVER_KEY = ed25519.Ed25519PrivateKey.generate()
DEVICE_KEY = ec.generate_private_key(ec.SECP256R1())
OTHER_DEVICE_KEY = ec.generate_private_key(ec.SECP256R1())


BASE_COMMAND = m.Command(
    id="3f1c2e7a-0000-4000-8000-000000000001",
    device_id=DEVICE,
    issued_at=NOW - 10,
    expires_at=NOW + 3600,
    action=m.Diagnostics(),
)
BASE_RESULT = m.CommandResult(
    command_id=BASE_COMMAND.id,
    device_id=DEVICE,
    kind="wipe",
    outcome="ok",
    finished_at=NOW,
    detail={"receipt": {"erased": ["citizen"], "key_fingerprint": "ab" * 32}},
)


def command(**changes: Any) -> m.Command:
    return msgspec.structs.replace(BASE_COMMAND, **changes)


def verify(envelope: m.SignedEnvelope, now: float = NOW, guard: ReplayGuard | None = None) -> m.Command | Refused:
    return signing.verify_command(envelope, SERVER_KEY.public_key(), DEVICE, now, guard or ReplayGuard())


def refused(outcome: m.Command | Refused, reason: Refusal) -> Refused:
    assert isinstance(outcome, Refused), outcome
    assert outcome.reason is reason, outcome
    assert outcome.detail
    return outcome


def result(**changes: Any) -> m.CommandResult:
    return msgspec.structs.replace(BASE_RESULT, **changes)


def flip_bit(data: bytes, bit: int) -> bytes:
    buf = bytearray(data)
    buf[bit // 8] ^= 1 << (bit % 8)
    return bytes(buf)


# ----------------------------------------------------------------------- accepted


@pytest.mark.parametrize("action", [m.Ping(), m.Logs(lines=5), m.Assign(citizen_name="Grethe"), m.Wipe()])
def test_sealed_command_is_accepted(action: Any) -> None:
    sent = command(action=action)
    envelope = signing.seal(SERVER_KEY, sent)
    assert envelope.payload == m.encode(sent)
    assert verify(envelope) == sent


def test_sealed_envelope_survives_the_wire() -> None:
    envelope = signing.seal(SERVER_KEY, command())
    delivered = m.SERVER_TO_DEVICE.decode(m.encode(m.CommandDelivery(envelope=envelope)))
    assert isinstance(delivered, m.CommandDelivery)
    assert verify(delivered.envelope) == command()


def test_boundaries_that_are_still_accepted() -> None:
    at_expiry = command(expires_at=NOW)
    assert verify(signing.seal(SERVER_KEY, at_expiry)) == at_expiry
    within_skew = command(issued_at=NOW + CLOCK_SKEW_SECONDS, expires_at=NOW + CLOCK_SKEW_SECONDS + 60)
    assert verify(signing.seal(SERVER_KEY, within_skew)) == within_skew
    full_lifetime = command(issued_at=NOW - 1, expires_at=NOW - 1 + MAX_COMMAND_LIFETIME_SECONDS)
    assert verify(signing.seal(SERVER_KEY, full_lifetime)) == full_lifetime


# ------------------------------------------------------------------------ refused


def test_tampered_payload_is_a_bad_signature() -> None:
    envelope = signing.seal(SERVER_KEY, command(action=m.Ping()))
    forged = envelope.payload.replace(b'"ping"', b'"wipe"')
    assert forged != envelope.payload
    outcome = refused(verify(m.SignedEnvelope(payload=forged, signature=envelope.signature)), Refusal.BAD_SIGNATURE)
    assert outcome.command_id is None and outcome.kind is None  # nothing from a forged payload is trusted


def test_signature_from_another_ed25519_key_is_a_bad_signature() -> None:
    outcome = refused(verify(signing.seal(OTHER_SERVER_KEY, command())), Refusal.BAD_SIGNATURE)
    assert outcome.command_id is None


def test_signature_from_the_device_key_is_a_bad_signature() -> None:
    refused(verify(signing.seal(DEVICE_KEY, command())), Refusal.BAD_SIGNATURE)


def test_empty_signature_is_a_bad_signature() -> None:
    envelope = signing.seal(SERVER_KEY, command())
    refused(verify(m.SignedEnvelope(payload=envelope.payload, signature=b"")), Refusal.BAD_SIGNATURE)


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"{}",
        b'{"id":"c","device_id":"dev-0001","issued_at":1,"expires_at":2,"action":{"type":"format-disk"}}',
        m.encode(result()),
        b"\xff" * 10,
    ],
)
def test_genuinely_signed_garbage_is_malformed(payload: bytes) -> None:
    envelope = m.SignedEnvelope(payload=payload, signature=signing.sign(SERVER_KEY, payload))
    outcome = refused(verify(envelope), Refusal.MALFORMED)
    assert "not a command" in outcome.detail
    assert outcome.command_id is None


def test_another_devices_command_is_refused() -> None:
    envelope = signing.seal(SERVER_KEY, command(device_id="dev-9999", action=m.Wipe()))
    outcome = refused(verify(envelope), Refusal.WRONG_DEVICE)
    assert "dev-9999" in outcome.detail
    assert (outcome.command_id, outcome.kind) == (command().id, "wipe")


def test_expired_command_is_refused() -> None:
    envelope = signing.seal(SERVER_KEY, command(issued_at=NOW - 600, expires_at=NOW - CLOCK_SKEW_SECONDS - 1))
    outcome = refused(verify(envelope), Refusal.EXPIRED)
    assert outcome.kind == "diagnostics" and outcome.command_id == command().id
    assert "clock difference of 300 s" in outcome.detail
    # Still fine a moment earlier: expiry is judged with the clock the caller passes.
    assert isinstance(verify(envelope, now=NOW - 1), m.Command)


def test_expiry_tolerates_the_stated_clock_skew() -> None:
    """A unit whose clock runs a little ahead still obeys a command that is just due."""
    envelope = signing.seal(SERVER_KEY, command(issued_at=NOW - 60, expires_at=NOW - CLOCK_SKEW_SECONDS))
    assert isinstance(verify(envelope), m.Command)


def test_command_from_the_future_beyond_clock_skew_is_not_yet_valid() -> None:
    issued = NOW + CLOCK_SKEW_SECONDS + 1
    envelope = signing.seal(SERVER_KEY, command(issued_at=issued, expires_at=issued + 60))
    refused(verify(envelope), Refusal.NOT_YET_VALID)


def test_lifetime_beyond_thirty_days_is_refused() -> None:
    assert MAX_COMMAND_LIFETIME_SECONDS == 30 * 24 * 3600
    long_lived = command(issued_at=NOW - 1, expires_at=NOW - 1 + MAX_COMMAND_LIFETIME_SECONDS + 1)
    outcome = refused(verify(signing.seal(SERVER_KEY, long_lived)), Refusal.MALFORMED)
    assert "30 days" in outcome.detail


def test_replay_after_remember_is_refused() -> None:
    guard = ReplayGuard()
    envelope = signing.seal(SERVER_KEY, command())
    first = verify(envelope, guard=guard)
    assert isinstance(first, m.Command)
    assert isinstance(verify(envelope, guard=guard), m.Command)  # the caller has not remembered it yet
    guard.remember(first)
    assert guard.has_seen(first.id)
    outcome = refused(verify(envelope, guard=guard), Refusal.REPLAY)
    assert outcome.command_id == first.id
    # A re-signed copy with the same id is the same command.
    refused(verify(signing.seal(SERVER_KEY, command(action=m.Reboot())), guard=guard), Refusal.REPLAY)
    # Another id is not a replay.
    assert isinstance(verify(signing.seal(SERVER_KEY, command(id="other")), guard=guard), m.Command)


def test_forget_expired_drops_only_expired_ids() -> None:
    guard = ReplayGuard()
    edge = NOW - CLOCK_SKEW_SECONDS  # still acceptable at NOW, thanks to the tolerated skew
    for cid, expires in [("past", edge - 1), ("edge", edge), ("later", NOW + 1)]:
        guard.remember(command(id=cid, issued_at=edge - 60, expires_at=expires))
    guard.forget_expired(NOW)
    assert guard.seen == {"edge": edge, "later": NOW + 1}
    # "edge" is still acceptable at NOW, so it must still be remembered: a replay is refused.
    replayed = command(id="edge", issued_at=edge - 60, expires_at=edge)
    refused(verify(signing.seal(SERVER_KEY, replayed), guard=guard), Refusal.REPLAY)


@FAST
@given(
    st.dictionaries(st.text(max_size=8), st.floats(allow_nan=False), max_size=20),
    st.floats(allow_nan=False),
)
def test_forget_expired_property(seen: dict[str, float], now: float) -> None:
    guard = ReplayGuard(dict(seen))
    guard.forget_expired(now)
    assert guard.seen == {cid: exp for cid, exp in seen.items() if exp + CLOCK_SKEW_SECONDS >= now}


# ---------------------------------------------------------------------- properties


@FAST
@given(st.binary(max_size=300), st.binary(max_size=100))
def test_random_envelopes_are_refused_never_raise(payload: bytes, signature: bytes) -> None:
    outcome = verify(m.SignedEnvelope(payload=payload, signature=signature))
    assert isinstance(outcome, Refused)
    assert outcome.reason is Refusal.BAD_SIGNATURE


@FAST
@given(st.binary(max_size=300) | st.text(max_size=200).map(str.encode))
def test_genuinely_signed_random_payloads_never_raise(payload: bytes) -> None:
    envelope = m.SignedEnvelope(payload=payload, signature=signing.sign(SERVER_KEY, payload))
    outcome = verify(envelope)
    assert isinstance(outcome, (m.Command, Refused))
    if isinstance(outcome, Refused):
        assert outcome.reason in set(Refusal)


json_scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(
    max_size=10
)
times = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12) | st.sampled_from(
    [NOW, NOW - 1, NOW + CLOCK_SKEW_SECONDS, NOW + MAX_COMMAND_LIFETIME_SECONDS]
)


@FAST
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "id": st.text(max_size=8) | json_scalars,
            "device_id": st.sampled_from([DEVICE, "dev-0002", ""]) | json_scalars,
            "issued_at": times | json_scalars,
            "expires_at": times | json_scalars,
            "action": st.fixed_dictionaries({"type": st.sampled_from([*m.COMMAND_KINDS, "nope"])}) | json_scalars,
        },
    ),
    st.booleans(),
)
def test_genuinely_signed_command_like_objects_never_raise(fields: dict[str, Any], remembered: bool) -> None:
    payload = msgspec.json.encode(fields)
    envelope = m.SignedEnvelope(payload=payload, signature=signing.sign(SERVER_KEY, payload))
    guard = ReplayGuard()
    if remembered and isinstance(fields.get("id"), str):
        guard.seen[fields["id"]] = float("inf")
    outcome = verify(envelope, guard=guard)
    assert isinstance(outcome, (m.Command, Refused))
    if isinstance(outcome, m.Command):
        assert outcome.device_id == DEVICE
        assert outcome.issued_at <= NOW + CLOCK_SKEW_SECONDS
        assert outcome.expires_at >= NOW
        assert outcome.expires_at - outcome.issued_at <= MAX_COMMAND_LIFETIME_SECONDS
        assert not guard.has_seen(outcome.id)


SEALED = signing.seal(SERVER_KEY, command(action=m.Assign(citizen_name="Grethe Hansen", contact_staff=["Anne"])))


@FAST
@given(st.data())
def test_any_bit_flip_in_payload_or_signature_is_a_bad_signature(data: st.DataObject) -> None:
    in_payload = data.draw(st.booleans(), label="in_payload")
    target = SEALED.payload if in_payload else SEALED.signature
    bit = data.draw(st.integers(min_value=0, max_value=len(target) * 8 - 1), label="bit")
    flipped = flip_bit(target, bit)
    envelope = (
        m.SignedEnvelope(payload=flipped, signature=SEALED.signature)
        if in_payload
        else m.SignedEnvelope(payload=SEALED.payload, signature=flipped)
    )
    refused(verify(envelope), Refusal.BAD_SIGNATURE)


def test_genuinely_signed_deeply_nested_payload_is_refused() -> None:
    payload = (
        b'{"id":"c","device_id":"dev-0001","issued_at":1,"expires_at":2,"action":{"x":'
        + b"[" * 5000 + b"]" * 5000 + b',"type":"ping"}}'
    )
    envelope = m.SignedEnvelope(payload=payload, signature=signing.sign(SERVER_KEY, payload))
    refused(verify(envelope), Refusal.MALFORMED)


# ------------------------------------------------------------------------- results


def test_open_result_with_the_device_key() -> None:
    sent = result()
    envelope = signing.seal(DEVICE_KEY, sent)
    assert signing.open_result(envelope, DEVICE_KEY.public_key()) == sent
    # Via the PEM the server keeps, too.
    pem_key = signing.load_public_key(signing.public_key_pem(DEVICE_KEY.public_key()))
    assert signing.open_result(envelope, pem_key) == sent


def test_open_result_refuses_a_tampered_payload() -> None:
    envelope = signing.seal(DEVICE_KEY, result(outcome="failed"))
    forged = envelope.payload.replace(b'"failed"', b'"ok"')
    with pytest.raises(ProtocolError) as info:
        signing.open_result(m.SignedEnvelope(payload=forged, signature=envelope.signature), DEVICE_KEY.public_key())
    assert info.value.reason == "bad-signature"


@pytest.mark.parametrize("signer", [OTHER_DEVICE_KEY, SERVER_KEY], ids=["other-device", "server-key"])
def test_open_result_refuses_another_keys_signature(signer: signing.PrivateKey) -> None:
    with pytest.raises(ProtocolError) as info:
        signing.open_result(signing.seal(signer, result()), DEVICE_KEY.public_key())
    assert info.value.reason == "bad-signature"


RESULT_SEALED = signing.seal(DEVICE_KEY, result())  # once: ECDSA signatures vary in length


@FAST
@given(st.data())
def test_open_result_refuses_any_bit_flip(data: st.DataObject) -> None:
    envelope = RESULT_SEALED
    in_payload = data.draw(st.booleans(), label="in_payload")
    target = envelope.payload if in_payload else envelope.signature
    flipped = flip_bit(target, data.draw(st.integers(0, len(target) * 8 - 1), label="bit"))
    envelope = (
        m.SignedEnvelope(payload=flipped, signature=envelope.signature)
        if in_payload
        else m.SignedEnvelope(payload=envelope.payload, signature=flipped)
    )
    with pytest.raises(ProtocolError) as info:
        signing.open_result(envelope, DEVICE_KEY.public_key())
    assert info.value.reason == "bad-signature"


def test_open_result_refuses_a_genuinely_signed_non_result() -> None:
    payload = m.encode(command())
    envelope = m.SignedEnvelope(payload=payload, signature=signing.sign(DEVICE_KEY, payload))
    with pytest.raises(ProtocolError) as info:
        signing.open_result(envelope, DEVICE_KEY.public_key())
    assert info.value.reason == "invalid"


@FAST
@given(st.binary(max_size=200), st.binary(max_size=100))
def test_open_result_random_envelopes_raise_only_protocol_errors(payload: bytes, signature: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        signing.open_result(m.SignedEnvelope(payload=payload, signature=signature), DEVICE_KEY.public_key())
    assert info.value.reason == "bad-signature"


# ----------------------------------------------------------------------- key helpers


@pytest.mark.parametrize("key", [SERVER_KEY, DEVICE_KEY], ids=["ed25519", "p256"])
def test_public_key_pem_round_trip(key: signing.PrivateKey) -> None:
    pem = signing.public_key_pem(key.public_key())
    assert pem.startswith("-----BEGIN PUBLIC KEY-----")
    loaded = signing.load_public_key(pem)
    assert signing.public_key_pem(loaded) == pem
    assert signing.load_public_key(pem.encode()) is not None
    payload = b"proof"
    assert signing.signature_valid(loaded, signing.sign(key, payload), payload)


@pytest.mark.parametrize("pem", ["", "not a key", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"])
def test_load_public_key_refuses_garbage(pem: str) -> None:
    with pytest.raises(ProtocolError) as info:
        signing.load_public_key(pem)
    assert info.value.reason == "invalid"
    assert "PEM" in info.value.detail


def test_load_public_key_refuses_unsupported_key_types() -> None:
    pem = x25519.X25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(ProtocolError) as info:
        signing.load_public_key(pem)
    assert info.value.reason == "invalid"
    assert "unsupported" in info.value.detail


def test_fingerprint_is_sha256_hex() -> None:
    assert signing.fingerprint(b"") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_refusal_codes_are_stable() -> None:
    assert [str(r) for r in Refusal] == [
        "malformed", "bad-signature", "wrong-device", "expired", "not-yet-valid", "replay",
    ]
