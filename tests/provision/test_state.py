"""Tests for kiosk.provision.state: the agent's state directory, vault, outbox and replay memory.

Real files in a temporary directory and a real identity (a P-256 key and a self-signed
certificate), no agent process.
"""

from __future__ import annotations

import datetime
import json
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from kiosk.protocol import messages as m
from kiosk.protocol import signing
from kiosk.protocol.screen_settings import ScreenSettings
from kiosk.protocol.wipe_journal import ORDER, JournalEntry, WipeStep, entry_line
from kiosk.provision.state import ServerPin, StateDir, Vault

pytestmark = pytest.mark.timeout(60)

PIN = ServerPin(url="https://kiosk.aarhus.dk", municipality="Aarhus Kommune", ca_sha256="ab" * 32,
                device_id="dev-0001")
COMMAND_KEY = ed25519.Ed25519PrivateKey.generate()


def self_signed(key: ec.EllipticCurvePrivateKey, name: str) -> str:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


@pytest.fixture
def state(tmp_path: Path) -> StateDir:
    return StateDir(tmp_path / "state").create()


@pytest.fixture
def device_key(state: StateDir) -> ec.EllipticCurvePrivateKey:
    return state.enrollment_key()


@pytest.fixture
def enrolled(state: StateDir, device_key: ec.EllipticCurvePrivateKey) -> StateDir:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    state.save_identity(
        cert_pem=self_signed(device_key, PIN.device_id),
        ca_pem=self_signed(ca_key, "Aarhus root CA"),
        command_key_pem=signing.public_key_pem(COMMAND_KEY.public_key()),
        pin=PIN,
    )
    return state


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ------------------------------------------------------------------ layout and identity


def test_create_makes_private_directories_and_is_idempotent(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "a" / "b").create()
    for directory in (state.root, state.identity, state.keys, state.citizen, state.outbox):
        assert directory.is_dir()
        assert mode(directory) == 0o700
    (state.citizen / "keep").write_text("x")
    StateDir(state.root).create()
    assert (state.citizen / "keep").read_text() == "x"


def test_identity_round_trip(enrolled: StateDir, device_key: ec.EllipticCurvePrivateKey) -> None:
    assert enrolled.enrolled
    assert enrolled.pin() == PIN
    loaded = enrolled.device_key()
    assert loaded.private_numbers() == device_key.private_numbers()
    assert mode(enrolled.identity / "device.key") == 0o600  # the key never leaves, nor is it readable by others
    assert signing.public_key_pem(enrolled.command_key()) == signing.public_key_pem(COMMAND_KEY.public_key())
    cert = enrolled.certificate()
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == PIN.device_id
    cert_key = cert.public_key()
    assert isinstance(cert_key, ec.EllipticCurvePublicKey)
    assert signing.public_key_pem(cert_key) == signing.public_key_pem(device_key.public_key())


def test_enrollment_key_is_made_once_and_kept_for_every_retry(state: StateDir) -> None:
    first = state.enrollment_key()
    assert mode(state.identity / "device.key") == 0o600
    assert not state.enrolled, "a key alone is not an enrollment"
    again = StateDir(state.root).enrollment_key()  # a new process after a power cut
    assert again.private_numbers() == first.private_numbers()


def test_server_json_is_what_makes_a_unit_enrolled(enrolled: StateDir) -> None:
    (enrolled.identity / "server.json").unlink()
    assert not enrolled.enrolled
    assert enrolled.device_state() == "unprovisioned"


# ------------------------------------------------------------------------ device state


def test_device_state_transitions(state: StateDir, device_key: ec.EllipticCurvePrivateKey) -> None:
    assert state.device_state() == "unprovisioned"
    state.save_identity(self_signed(device_key, "d"), self_signed(device_key, "ca"),
                        signing.public_key_pem(COMMAND_KEY.public_key()), PIN)
    assert state.device_state() == "enrolled-unassigned"

    Vault(state).put("assignment", {"citizen_name": "Grethe Hansen"})  # creates the assignment key
    assert state.assignment_key_path.exists()
    assert state.device_state() == "assigned"

    state.journal_path.write_text(entry_line(JournalEntry(WipeStep.INTENT, 1.0, "c-1")))
    assert state.device_state() == "wipe-pending"
    state.journal_path.write_text("".join(entry_line(JournalEntry(s, 1.0, "c-1")) for s in ORDER[:-1]))
    assert state.device_state() == "wipe-pending"  # every step but the receipt: still pending

    state.assignment_key_path.unlink()
    state.journal_path.write_text("".join(entry_line(JournalEntry(s, 1.0, "c-1")) for s in ORDER))
    assert state.device_state() == "enrolled-unassigned"  # a complete wipe: ready for the next citizen


def test_wipe_pending_wins_even_without_an_assignment_key(enrolled: StateDir) -> None:
    enrolled.journal_path.write_text(entry_line(JournalEntry(WipeStep.INTENT, 1.0, None))
                                     + entry_line(JournalEntry(WipeStep.KEY_DESTROYED, 2.0, None)))
    assert enrolled.device_state() == "wipe-pending"
    assert enrolled.journal().next_step() is WipeStep.DATA_DELETED


def test_torn_journal_still_reads(enrolled: StateDir) -> None:
    enrolled.journal_path.write_text(entry_line(JournalEntry(WipeStep.INTENT, 1.0, "c")) + '{"step": "key-de')
    assert enrolled.journal().next_step() is WipeStep.KEY_DESTROYED
    assert enrolled.device_state() == "wipe-pending"


def test_missing_journal_is_an_empty_journal(state: StateDir) -> None:
    assert not state.journal().started


def test_unprovisioned_ignores_a_journal(state: StateDir) -> None:
    state.journal_path.write_text(entry_line(JournalEntry(WipeStep.INTENT, 1.0, None)))
    assert state.device_state() == "unprovisioned"


# ------------------------------------------------------------------------------ vault


def test_vault_round_trip(enrolled: StateDir) -> None:
    vault = Vault(enrolled)
    value = {"citizen_name": "Grethe Hansen", "contact_staff": ["Anne", "Bo"], "photo": None, "n": 3}
    vault.put("assignment", value)
    vault.put("schedule", [{"at": "10:30", "who": "Sygeplejerske Anne"}])
    assert vault.get("assignment") == value
    assert vault.get("schedule") == [{"at": "10:30", "who": "Sygeplejerske Anne"}]
    assert vault.get("never-written") is None
    assert mode(enrolled.assignment_key_path) == 0o600
    assert len(enrolled.assignment_key_path.read_bytes()) == 32  # AES-256


def test_vault_reuses_one_key_per_assignment(enrolled: StateDir) -> None:
    vault = Vault(enrolled)
    vault.put("a", 1)
    key = enrolled.assignment_key_path.read_bytes()
    vault.put("b", 2)
    vault.put("a", 3)
    assert enrolled.assignment_key_path.read_bytes() == key
    assert (vault.get("a"), vault.get("b")) == (3, 2)


def test_ciphertext_does_not_contain_the_plaintext(enrolled: StateDir) -> None:
    Vault(enrolled).put("assignment", {"citizen_name": "Grethe Hansen"})
    Vault(enrolled).put("assignment2", {"citizen_name": "Grethe Hansen"})
    blob = (enrolled.citizen / "assignment.bin").read_bytes()
    assert b"Grethe" not in blob and b"citizen_name" not in blob
    assert blob != (enrolled.citizen / "assignment2.bin").read_bytes()  # fresh nonce each time
    on_disk = b"".join(p.read_bytes() for p in enrolled.root.rglob("*") if p.is_file())
    assert b"Grethe" not in on_disk


def test_get_without_the_key_is_none(enrolled: StateDir) -> None:
    vault = Vault(enrolled)
    vault.put("assignment", {"citizen_name": "Grethe Hansen"})
    enrolled.assignment_key_path.unlink()  # what a wipe's crypto-erase does
    assert vault.get("assignment") is None
    assert (enrolled.citizen / "assignment.bin").exists()  # the noise is still there, unreadable


def test_tampered_ciphertext_raises(enrolled: StateDir) -> None:
    vault = Vault(enrolled)
    vault.put("assignment", {"citizen_name": "Grethe Hansen"})
    path = enrolled.citizen / "assignment.bin"
    blob = bytearray(path.read_bytes())
    blob[20] ^= 0x01
    path.write_bytes(bytes(blob))
    with pytest.raises(InvalidTag):
        vault.get("assignment")


def test_ciphertext_is_bound_to_its_name(enrolled: StateDir) -> None:
    vault = Vault(enrolled)
    vault.put("assignment", {"citizen_name": "Grethe Hansen"})
    (enrolled.citizen / "schedule.bin").write_bytes((enrolled.citizen / "assignment.bin").read_bytes())
    with pytest.raises(InvalidTag):
        vault.get("schedule")


def test_ciphertext_under_another_key_raises(enrolled: StateDir) -> None:
    vault = Vault(enrolled)
    vault.put("assignment", {"citizen_name": "Grethe Hansen"})
    enrolled.assignment_key_path.write_bytes(bytes(32))
    with pytest.raises(InvalidTag):
        vault.get("assignment")


# ----------------------------------------------------------------------------- outbox


def envelope(n: int) -> m.SignedEnvelope:
    return m.SignedEnvelope(payload=f'{{"n":{n}}}'.encode(), signature=bytes([n]) * 64)


def test_outbox_put_items_remove(state: StateDir) -> None:
    ids = ["0b6c1d2e-0000-4000-8000-000000000001", "0b6c1d2e-0000-4000-8000-000000000002"]
    assert state.outbox_items() == []
    for n, cid in enumerate(ids):
        state.outbox_put(cid, envelope(n))
    assert dict(state.outbox_items()) == {ids[0]: envelope(0), ids[1]: envelope(1)}
    assert state.outbox_has(ids[0])
    state.outbox_remove(ids[0])
    assert not state.outbox_has(ids[0])
    assert state.outbox_items() == [(ids[1], envelope(1))]
    state.outbox_remove(ids[0])  # removing twice is fine (a duplicate ack)
    state.outbox_put(ids[1], envelope(9))  # re-put replaces
    assert state.outbox_items() == [(ids[1], envelope(9))]


def test_outbox_file_names_are_safe(state: StateDir) -> None:
    state.outbox_put("../../etc/passwd", envelope(1))
    assert [p.parent for p in state.root.rglob("*.json")] == [state.outbox]
    assert state.outbox_has("../../etc/passwd")


def test_torn_outbox_file_is_dropped(state: StateDir) -> None:
    state.outbox_put("good", envelope(1))
    encoded = m.encode(envelope(2))
    (state.outbox / "torn.json").write_bytes(encoded[: len(encoded) // 2])
    (state.outbox / "wrong.json").write_bytes(b'{"payload": 1, "signature": 2}')
    assert state.outbox_items() == [("good", envelope(1))]
    assert not (state.outbox / "torn.json").exists()
    assert not (state.outbox / "wrong.json").exists()


# ---------------------------------------------------------------------- replay memory


def test_replay_guard_persistence_round_trip(state: StateDir) -> None:
    assert state.replay_guard().seen == {}
    guard = signing.ReplayGuard()
    guard.remember(m.Command(id="c-1", device_id="d", issued_at=1.0, expires_at=100.0, action=m.Ping()))
    guard.remember(m.Command(id="c-2", device_id="d", issued_at=1.0, expires_at=200.5, action=m.Wipe()))
    state.save_replay_guard(guard)
    loaded = state.replay_guard()
    assert loaded.seen == {"c-1": 100.0, "c-2": 200.5}
    assert loaded.has_seen("c-1") and not loaded.has_seen("c-3")
    loaded.forget_expired(150.0 + signing.CLOCK_SKEW_SECONDS)  # expired, beyond the tolerated skew
    state.save_replay_guard(loaded)
    assert state.replay_guard().seen == {"c-2": 200.5}


@pytest.mark.parametrize("content", ['{"c-1": 10', "[1, 2]", '"x"', ""])
def test_torn_or_foreign_replay_file_reads_as_empty(state: StateDir, content: str) -> None:
    state.replay_path.write_text(content)
    assert state.replay_guard().seen == {}


# --------------------------------------------------------------------- settings, audit


def test_ui_settings_are_saved_for_the_screen_and_survive_a_torn_file(state: StateDir) -> None:
    defaults = ScreenSettings()
    assert state.ui_settings() == defaults
    state.save_ui_settings(ScreenSettings(volume=7, language="en"))
    assert state.ui_settings() == ScreenSettings(volume=7, language="en")
    assert json.loads(state.settings_path.read_text()) == {"volume": 7, "language": "en"}  # what differs
    assert state.settings_path.name == "ui.json" and state.settings_path.stat().st_mode & 0o777 == 0o640
    for torn in ('{"volume": ', "[1]", '{"volume": 99}'):
        state.settings_path.write_text(torn)
        assert state.ui_settings() == defaults


def test_audit_trail_skips_torn_lines(state: StateDir) -> None:
    assert state.audit_entries() == []
    state.audit("refused", reason="replay", command_id="c-1")
    with state.audit_path.open("a") as f:
        f.write('{"event": "tor')
    entries = state.audit_entries()
    assert len(entries) == 1
    assert entries[0]["event"] == "refused" and entries[0]["reason"] == "replay"
    assert isinstance(entries[0]["at"], float)
    assert json.loads(state.audit_path.read_text().splitlines()[0])["command_id"] == "c-1"
