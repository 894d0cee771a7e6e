"""Mass operations through the command desk: a burst of commands is written in few transactions,
each command is delivered exactly once, the audit log stays one verifiable chain in the order
the commands were sent, and signed results (and refusals) go through the same batches."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from kiosk.protocol import messages as m
from kiosk.protocol import signing
from kiosk.protocol.command_lifecycle import CommandState
from kiosk.protocol.errors import ProtocolError
from kiosk.server import commands
from kiosk.server.ca import Authority, load_or_create
from kiosk.server.commands import CommandDesk, CommandError
from kiosk.server.hub import DeviceLink, Hub
from kiosk.server.store import Store
from tests.server.fakes import FakeClock, FakeDevice, Inbox, open_store

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> Authority:
    return load_or_create(tmp_path_factory.mktemp("ca"), "Testby Kommune", ["localhost"])


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return open_store(tmp_path / "server", FakeClock())


def delivered(inbox: Inbox) -> list[str]:
    return [m.Codec(m.Command).decode(d.envelope.payload).id for d in inbox.of(m.CommandDelivery)]


def queued_order(store: Store) -> list[str]:
    return [e.detail["command_id"] for e in store.audit_entries(limit=10_000) if e.action == "command-queued"]


async def test_a_burst_is_delivered_exactly_once_each_and_audited_in_order(
        store: Store, authority: Authority) -> None:
    hub = Hub(store)
    desk = CommandDesk(store, authority, hub)
    devices = [FakeDevice(store, f"device-{i}") for i in range(40)]
    for device in devices[:30]:  # ten are offline: theirs wait as pending
        await device.connect(hub)
    targets = [devices[i % 40] for i in range(200)]

    sent = await asyncio.gather(*(desk.send(d.id, m.Ping(), "cli:test") for d in targets))
    await hub.sweep()  # the sweep sees the same commands pending: nothing goes twice
    await hub.sweep()

    assert desk.writer.batches < 20  # 200 commands, not 200 transactions
    assert queued_order(store) == [c.id for c in sent]  # the chain holds them in the order sent
    assert store.verify_audit_chain() is None
    for device in devices:
        mine = [c.id for c, t in zip(sent, targets, strict=True) if t is device]
        assert delivered(device.inbox) == (mine if device in devices[:30] else [])
    later = devices[35]
    await later.connect(hub)
    await hub.deliver_pending(later.id)
    assert sorted(delivered(later.inbox)) == sorted(c.id for c, t in zip(sent, targets, strict=True) if t is later)


async def test_a_refused_command_in_a_burst_leaves_the_others_written(store: Store, authority: Authority) -> None:
    hub = Hub(store)
    desk = CommandDesk(store, authority, hub)
    device = FakeDevice(store, "device-1")
    await device.connect(hub)
    outcomes = await asyncio.gather(
        desk.send(device.id, m.Ping(), "cli:test"), desk.send("no-such-device", m.Ping(), "cli:test"),
        desk.send(device.id, m.Ping(), "cli:test", ttl_seconds=-1), desk.send(device.id, m.Ping(), "cli:test"),
        return_exceptions=True)
    good = [o for o in outcomes if isinstance(o, m.Command)]
    refused = [o for o in outcomes if isinstance(o, CommandError)]
    assert len(good) == 2 and [r.code for r in refused] == ["unknown-device", "invalid-expiry"]
    assert delivered(device.inbox) == [c.id for c in good] and queued_order(store) == [c.id for c in good]
    assert store.verify_audit_chain() is None


class KeyedDevice:
    """A unit with a real key and a certificate from the authority, as enrollment gives it."""

    def __init__(self, store: Store, authority: Authority, device_id: str) -> None:
        self.id, self.key = device_id, ec.generate_private_key(ec.SECP256R1())
        self.device_key = self.key.public_key()
        csr = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)]))
               .sign(self.key, hashes.SHA256()))
        cert = authority.issue_device_certificate(csr.public_bytes(serialization.Encoding.PEM).decode(),
                                                  device_id, store.clock())
        self.cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
        with store.tx() as conn:
            store.add_device(conn, device_id, format(cert.serial_number, "x"), self.cert_pem, "test")
        self.inbox = Inbox()
        self.link = DeviceLink(device_id, self.cert_pem, self.inbox.send, self.inbox.close)

    def result(self, command_id: str, outcome: m.Outcome = "ok") -> m.SignedEnvelope:
        return signing.seal(self.key, m.CommandResult(command_id=command_id, device_id=self.id, kind="ping",
                                                      outcome=outcome, finished_at=1.0))


async def test_acknowledgements_and_results_of_a_burst_are_recorded_once_each(
        store: Store, authority: Authority) -> None:
    hub = Hub(store)
    desk = CommandDesk(store, authority, hub)
    units = [KeyedDevice(store, authority, f"0000000{i}-0000-4000-8000-000000000000") for i in range(5)]
    for unit in units:
        await hub.attach(unit.link)
    sent = await asyncio.gather(*(desk.send(u.id, m.Ping(), "cli:test") for u in units for _ in range(4)))
    for command in sent:
        desk.acknowledged(command.id)
    owner = {c.id: next(u for u in units if u.id == c.device_id) for c in sent}
    results = await asyncio.gather(*(desk.report(owner[c.id].id, owner[c.id].device_key, owner[c.id].result(c.id))
                                     for c in sent))
    again = await desk.report(owner[sent[0].id].id, owner[sent[0].id].device_key, owner[sent[0].id].result(sent[0].id))

    assert [r.command_id for r in results] == [c.id for c in sent] and again.command_id == sent[0].id
    for command in sent:
        row = store.command(command.id)
        assert row is not None and row.state is CommandState.DONE and row.delivered_at is not None
        assert commands.view(row, owner[command.id].cert_pem)["result_verified"]
    recorded = [e for e in store.audit_entries(limit=10_000) if e.action == "command-result"]
    assert sorted(e.detail["command_id"] for e in recorded) == sorted(c.id for c in sent)  # the repeat: not twice
    assert store.verify_audit_chain() is None


async def test_a_forged_result_is_refused_and_its_batch_neighbours_are_kept(
        store: Store, authority: Authority) -> None:
    hub = Hub(store)
    desk = CommandDesk(store, authority, hub)
    unit, other = (KeyedDevice(store, authority, f"0000000{i}-0000-4000-8000-000000000000") for i in (1, 2))
    first, second = [await desk.send(unit.id, m.Ping(), "cli:test") for _ in range(2)]
    forged = other.result(first.id)  # another unit's key, claiming this unit's command
    forged = m.SignedEnvelope(payload=unit.result(first.id).payload, signature=forged.signature)
    outcomes = await asyncio.gather(desk.report(unit.id, unit.device_key, forged),
                                    desk.report(unit.id, unit.device_key, unit.result(second.id, "failed")),
                                    return_exceptions=True)
    assert isinstance(outcomes[0], ProtocolError)
    assert isinstance(outcomes[1], m.CommandResult)
    first_row, second_row = store.command(first.id), store.command(second.id)
    assert first_row is not None and first_row.state is CommandState.PENDING
    assert second_row is not None and second_row.state is CommandState.FAILED
    assert json.loads(second_row.result or "{}")["outcome"] == "failed"
    assert store.verify_audit_chain() is None
