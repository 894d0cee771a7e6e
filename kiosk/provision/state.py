"""The agent's state directory: one place for identity, settings, citizen data and queues.

    identity/      device.key (never leaves), device.crt, ca.pem, command.pub, server.json
    keys/          assignment.key: the per-assignment key (destroyed by a wipe)
    citizen/       everything personal, AES-GCM encrypted under the assignment key
    ui.json        the screen's settings, from set-config (reset by a wipe)
    replay.json    ids of accepted commands, until they expire
    outbox/        signed results not yet acknowledged by the server
    wipe.journal   steps of a wipe in progress
    audit.jsonl    the device's own trail: enrollment, refusals with reasons, wipes
    agent.log      the agent's log (no personal data)
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kiosk.protocol import agent_socket, screen_settings, signing, wipe_journal
from kiosk.protocol import messages as m
from kiosk.protocol.errors import ProtocolError
from kiosk.provision.files import append_line, atomic_write, read_json


@dataclass(frozen=True)
class ServerPin:
    url: str
    municipality: str
    ca_sha256: str
    device_id: str


class StateDir:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.identity = root / "identity"
        self.keys = root / "keys"
        self.citizen = root / "citizen"
        self.outbox = root / "outbox"
        self.journal_path = root / "wipe.journal"
        self.audit_path = root / "audit.jsonl"
        self.log_path = root / "agent.log"
        self.settings_path = root / screen_settings.UI_FILE  # the screen reads it: one definition
        self.replay_path = root / "replay.json"
        self.socket_path = agent_socket.socket_path(root)

    def create(self) -> StateDir:
        for d in (self.root, self.identity, self.keys, self.citizen, self.outbox):
            d.mkdir(parents=True, exist_ok=True)
            os.chmod(d, 0o700)
        return self

    # ------------------------------------------------------------------ identity
    @property
    def enrolled(self) -> bool:
        return (self.identity / "device.crt").exists() and (self.identity / "server.json").exists()

    def pin(self) -> ServerPin:
        return ServerPin(**json.loads((self.identity / "server.json").read_text()))

    def enrollment_key(self) -> ec.EllipticCurvePrivateKey:
        """The unit's key: made once, on disk (fsync'd) before the first enrollment request,
        and the same on every retry, so the server can recognise a retry whose answer was lost."""
        path = self.identity / "device.key"
        if not path.exists():
            key = ec.generate_private_key(ec.SECP256R1())
            atomic_write(path, key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        return self.device_key()

    def save_identity(self, cert_pem: str, ca_pem: str, command_key_pem: str, pin: ServerPin) -> None:
        """What the server answered; the key is on disk already (``enrollment_key``)."""
        atomic_write(self.identity / "ca.pem", ca_pem.encode(), 0o644)
        atomic_write(self.identity / "command.pub", command_key_pem.encode(), 0o644)
        atomic_write(self.identity / "device.crt", cert_pem.encode(), 0o644)
        # server.json last: its presence is what "enrolled" means
        atomic_write(self.identity / "server.json", json.dumps(pin.__dict__).encode(), 0o644)

    def device_key(self) -> ec.EllipticCurvePrivateKey:
        key = serialization.load_pem_private_key((self.identity / "device.key").read_bytes(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return key

    def command_key(self) -> signing.PublicKey:
        return signing.load_public_key((self.identity / "command.pub").read_bytes())

    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate((self.identity / "device.crt").read_bytes())

    # --------------------------------------------------------------------- state
    def journal(self) -> wipe_journal.Journal:
        try:
            return wipe_journal.parse(self.journal_path.read_text())
        except FileNotFoundError:
            return wipe_journal.Journal()

    @property
    def assignment_key_path(self) -> Path:
        return self.keys / "assignment.key"

    def device_state(self) -> m.DeviceState:
        if not self.enrolled:
            return "unprovisioned"
        journal = self.journal()
        if journal.started and not journal.complete:
            return "wipe-pending"
        if self.assignment_key_path.exists():
            return "assigned"
        return "enrolled-unassigned"

    # ------------------------------------------------------------------- settings
    def ui_settings(self) -> screen_settings.ScreenSettings:
        """The screen's settings as the unit has them (the defaults if none, or a broken file)."""
        try:
            return screen_settings.decode(self.settings_path.read_bytes())
        except (OSError, ProtocolError):
            return screen_settings.ScreenSettings()

    def save_ui_settings(self, settings: screen_settings.ScreenSettings) -> None:
        # Readable by the screen's user through the group it shares with the agent.
        atomic_write(self.settings_path, screen_settings.encode(settings), mode=0o640)

    # ---------------------------------------------------------------- replay memory
    def replay_guard(self) -> signing.ReplayGuard:
        seen = read_json(self.replay_path, {})
        return signing.ReplayGuard({str(k): float(v) for k, v in seen.items()} if isinstance(seen, dict) else {})

    def save_replay_guard(self, guard: signing.ReplayGuard) -> None:
        atomic_write(self.replay_path, json.dumps(guard.seen).encode())

    # --------------------------------------------------------------------- outbox
    def outbox_put(self, command_id: str, envelope: m.SignedEnvelope) -> None:
        atomic_write(self.outbox / f"{_safe(command_id)}.json", m.encode(envelope))

    def outbox_items(self) -> list[tuple[str, m.SignedEnvelope]]:
        items: list[tuple[str, m.SignedEnvelope]] = []
        for path in sorted(self.outbox.glob("*.json"), key=lambda p: p.stat().st_mtime):
            try:
                items.append((path.stem, m.Codec(m.SignedEnvelope).decode(path.read_bytes())))
            except (ProtocolError, OSError):
                path.unlink(missing_ok=True)  # torn by a crash before its rename; never sent
        return items

    def outbox_has(self, command_id: str) -> bool:
        return (self.outbox / f"{_safe(command_id)}.json").exists()

    def outbox_remove(self, command_id: str) -> None:
        (self.outbox / f"{_safe(command_id)}.json").unlink(missing_ok=True)

    # ---------------------------------------------------------------- audit trail
    def audit(self, event: str, **detail: Any) -> None:
        append_line(self.audit_path, json.dumps({"at": time.time(), "event": event, **detail}) + "\n")

    def audit_entries(self) -> list[dict[str, Any]]:
        try:
            lines = self.audit_path.read_text().splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except (ValueError, RecursionError):
                continue
        return out


def _safe(command_id: str) -> str:
    return "".join(c for c in command_id if c.isalnum() or c == "-")[:64]


class Vault:
    """Citizen data, encrypted under the per-assignment key; without the key it is noise."""

    def __init__(self, state: StateDir) -> None:
        self.state = state

    def _key(self, create: bool) -> bytes | None:
        path = self.state.assignment_key_path
        if not path.exists():
            if not create:
                return None
            atomic_write(path, AESGCM.generate_key(bit_length=256))
        return path.read_bytes()

    def put(self, name: str, value: Any) -> None:
        key = self._key(create=True)
        assert key is not None
        nonce = os.urandom(12)
        blob = nonce + AESGCM(key).encrypt(nonce, json.dumps(value).encode(), name.encode())
        atomic_write(self.state.citizen / f"{name}.bin", blob)

    def get(self, name: str) -> Any:
        key = self._key(create=False)
        path = self.state.citizen / f"{name}.bin"
        if key is None or not path.exists():
            return None
        blob = path.read_bytes()
        return json.loads(AESGCM(key).decrypt(blob[:12], blob[12:], name.encode()))
