"""A roll-out's waves in-process, on a clock the test sets: what the pure wave logic decides
(kiosk.protocol.update) applied to the store's rows, without agents or waiting."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from kiosk.protocol import messages as m
from kiosk.server import rollout
from kiosk.server.ca import Authority
from kiosk.server.store import Store
from tests.server.fakes import FakeClock, FakeDevice, open_store
from tests.server.test_hub import authority, clock  # noqa: F401  (the same CA and clock)

pytestmark = pytest.mark.timeout(60)

VERSION = "0.1.0+20261129.1200"
ONLINE, OFFLINE = "00000000-0000-4000-8000-000000000001", "00000000-0000-4000-8000-000000000002"


@pytest.fixture
def store(tmp_path: Path, clock: FakeClock) -> Store:  # noqa: F811
    store = open_store(tmp_path / "server", clock)
    bundle = tmp_path / "release.raucb"
    bundle.write_bytes(b"a bundle; the server never needs to trust it, each unit checks its signature")
    bundle.with_name(bundle.name + ".json").write_text(json.dumps({
        "version": VERSION, "arch": "amd64", "compatible": "skaermbesoeg-kiosk-amd64",
        "bytes": bundle.stat().st_size, "sha256": hashlib.sha256(bundle.read_bytes()).hexdigest()}))
    rollout.add_release(store, tmp_path / "server", bundle, "cli:test")
    return store


def test_an_update_that_expired_on_an_offline_unit_fails_it_and_its_wave_is_judged(
        store: Store, clock: FakeClock, authority: Authority) -> None:  # noqa: F811
    for name in (ONLINE, OFFLINE):
        FakeDevice(store, name)
    ro = rollout.start(store, VERSION, "100%", 3600, 0.1, "cli:test", [ONLINE, OFFLINE])
    rollout.drive(store, authority)  # the wave is sent; neither unit has answered
    rollout.on_progress(store, ONLINE, m.UpdateProgress(release=VERSION, stage="good"))
    clock.advance(rollout.UPDATE_TTL_SECONDS - 1)
    store.expire_commands()
    rollout.drive(store, authority)
    view = rollout.status(store, ro.id)
    assert view["state"] == "running" and view["waves"][0]["pending"] == 1  # still time to come online
    clock.advance(2)
    store.expire_commands()
    rollout.drive(store, authority)
    view = rollout.status(store, ro.id)
    assert view["waves"][0]["pending"] == 0 and view["waves"][0]["failed"] == 1, view
    assert view["waves"][0]["problems"] == [{"device_id": OFFLINE, "stage": "failed", "detail": (
        "the update command expired before the unit installed the release (offline?)")}]
    assert view["state"] == "halted" and "1 of 2 units failed" in view["reason"], view

