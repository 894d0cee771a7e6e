"""The pre-visit check's judgement: what stands in the way of a visit, most fundamental first."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from kiosk.server import ca
from kiosk.server.hub import Hub
from kiosk.server.previsit import Sweep, UnitFacts, reasons
from kiosk.server.store import CitizenRow, Store, StoreUnavailable

READY = UnitFacts(assigned=True, online=True, ui_alive=True, last_seen=1.0,
                  checks={"camera": "OK", "microphone": "OK", "ui": "OK"})


def test_a_ready_screen_gives_no_reason() -> None:
    assert reasons(READY) == ()
    assert reasons(UnitFacts(True, True, True, 1.0, None)) == (), "no fresh diagnostics yet is not a fault"


def test_no_screen_and_offline_say_all_there_is_to_say() -> None:
    assert reasons(UnitFacts(False, False, None, None, None)) == ("no-screen",)
    assert reasons(UnitFacts(True, False, None, 1.0, {"camera": "FAIL"})) == ("offline",)


def test_each_missing_part_is_named() -> None:
    broken = UnitFacts(True, True, False, 1.0, {"camera": "FAIL", "microphone": "FAIL", "ui": "OK"})
    assert reasons(broken) == ("screen-app-down", "no-camera", "no-microphone")
    assert reasons(UnitFacts(True, True, True, 1.0, {"ui": "FAIL", "camera": "WARN"})) == ("screen-app-down",)


def test_a_database_outage_is_waited_out_without_a_traceback(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Found in CI: PostgreSQL restarting while the sweep ran put a traceback in the server's log."""
    store = Store.in_directory(tmp_path)
    sweep = Sweep(store, ca.load_or_create(tmp_path / "ca", "Testkommune"), Hub(store))

    def database_gone(*_: object, **__: object) -> list[CitizenRow]:
        raise StoreUnavailable("the database is not answering (the database system is starting up)")

    monkeypatch.setattr(Store, "citizens_of", database_gone)  # the loop's store is another instance

    async def one_sweep() -> None:
        sweep.start()
        await asyncio.sleep(0.2)
        await sweep.stop()
        await store.aclose()

    with caplog.at_level(logging.DEBUG, logger="kiosk.server.previsit"):
        asyncio.run(one_sweep())
    # Only the sweep's own lines: an earlier test in the same worker may have opened the root
    # logger to INFO, and then the schema migration's lines are captured too (seen in CI).
    sweep_lines = [r for r in caplog.records if r.name == "kiosk.server.previsit"]
    assert [r.levelno for r in sweep_lines] == [logging.DEBUG], caplog.text
    assert "wait for the database" in sweep_lines[0].getMessage()
    assert not any(r.exc_info for r in caplog.records), caplog.text
