"""The agent's updater across reboots: its journal on real files, RAUC's command line as a
script that records what it was asked (RAUC itself cannot install on this machine; the image
tests run the real one in QEMU), reboots recorded by RecordingActions."""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
from pathlib import Path

import pytest

from kiosk.protocol import messages as m
from kiosk.provision.state import StateDir
from kiosk.provision.system_actions import RecordingActions
from kiosk.provision.updater import InstallFailed, Journal, Rauc, Running, Updater

pytestmark = pytest.mark.timeout(60)


def fake_rauc(tmp_path: Path, fails_with: str = "", times: int = 1_000_000) -> Rauc:
    """RAUC's command line, failing its first ``times`` calls with ``fails_with`` if given."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    script = tmp_path / "rauc"
    asked_path = str(tmp_path / "asked")
    body = (f'if sum(1 for _ in open({asked_path!r})) <= {times}: print("LastError: {fails_with}"); sys.exit(1)\n'
            if fails_with else "") + 'print("ok")'
    script.write_text(f"#!{sys.executable}\nimport json, sys\n"
                      f"open({asked_path!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n{body}\n")
    script.chmod(0o755)
    return Rauc(tmp_path / "identity", str(script), mount_retry_seconds=0)


def asked(tmp_path: Path) -> list[list[str]]:
    path = tmp_path / "asked"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


BOOTS = itertools.count(1)


def _last_boot(tmp_path: Path) -> str:
    return (tmp_path / "boot").read_text()


def make(tmp_path: Path, slot: str, rauc: Rauc, deadline: float = 0.2,
         new_boot: bool = True) -> tuple[Updater, list[m.UpdateProgress]]:
    """The agent started in ``slot``: after a boot, or (``new_boot`` false) restarted in the same one."""
    sent: list[m.UpdateProgress] = []

    async def report(progress: m.UpdateProgress) -> None:
        sent.append(progress)

    state = StateDir(tmp_path / "state").create()
    boot = f"boot-{next(BOOTS)}" if new_boot else _last_boot(tmp_path)
    (tmp_path / "boot").write_text(boot)
    updater = Updater(state, rauc, RecordingActions(tmp_path / "actions"), "https://server:8443", report,
                      Running(slot, "0.1.0+20261101.0900" if slot == "a" else "0.1.0+20261129.1200", None, boot),
                      deadline)
    updater.on_start()
    return updater, sent


async def run_watch(updater: Updater, healthy: bool) -> None:
    await asyncio.wait_for(updater.watch(lambda: False, list, lambda: healthy, lambda: healthy), 30)


def test_install_then_reboot_then_good(tmp_path: Path) -> None:
    rauc = fake_rauc(tmp_path)
    updater, sent = make(tmp_path, "a", rauc)
    detail = asyncio.run(updater.install("R2", "/api/v1/releases/R2-amd64.raucb"))
    assert detail == {"stage": "installed", "release": "R2", "slot": "b"}
    assert asked(tmp_path)[0][0] == "install" and asked(tmp_path)[0][-1] == \
        "https://server:8443/api/v1/releases/R2-amd64.raucb"
    assert any(a.startswith("--tls-cert=") for a in asked(tmp_path)[0])
    asyncio.run(run_watch(updater, healthy=True))  # no call, no visit: it reboots
    assert "reboot" in (tmp_path / "actions").read_text()
    updater, sent = make(tmp_path, "b", rauc)     # the bootloader started slot B
    assert updater.progress() == m.UpdateProgress(release="R2", stage="booted", slot="b",
                                                  version="0.1.0+20261129.1200")
    asyncio.run(run_watch_until(updater, "good"))
    assert ["status", "mark-good", "booted"] in asked(tmp_path)
    assert sent[-1].stage == "good"


async def run_watch_until(updater: Updater, stage: str) -> None:
    task = asyncio.create_task(updater.watch(lambda: False, list, lambda: True, lambda: True))
    for _ in range(200):
        journal = updater.journal()
        if journal and journal.stage == stage:
            break
        await asyncio.sleep(0.05)
    task.cancel()


def test_a_failed_health_check_marks_the_slot_bad_and_the_old_slot_reports_the_fall_back(tmp_path: Path) -> None:
    rauc = fake_rauc(tmp_path)
    updater, _ = make(tmp_path, "a", rauc)
    asyncio.run(updater.install("R2", "/p"))
    updater, _ = make(tmp_path, "b", rauc, deadline=0.0)  # in the new slot, never healthy
    asyncio.run(run_watch(updater, healthy=False))
    assert ["status", "mark-bad", "booted"] in asked(tmp_path)
    assert (tmp_path / "actions").read_text().count("reboot") == 1
    updater, _ = make(tmp_path, "a", rauc)                # the bootloader passed B over
    progress = updater.progress()
    assert progress is not None and progress.stage == "rolled-back" and progress.slot == "a"
    assert "health check failed" in progress.detail and "screen app not alive" in progress.detail


def test_a_refused_bundle_fails_with_raucs_reason_and_nothing_is_pending(tmp_path: Path) -> None:
    updater, _ = make(tmp_path, "a", fake_rauc(tmp_path, "signature verification failed"))
    with pytest.raises(InstallFailed, match="signature verification failed"):
        asyncio.run(updater.install("R2", "/p"))
    journal = updater.journal()
    assert journal is not None and journal.stage == "failed"
    asyncio.run(asyncio.wait_for(_one_round(updater), 5))
    assert not (tmp_path / "actions").exists()           # no reboot for a refused update


def test_a_streamed_bundle_that_would_not_mount_is_tried_once_more(tmp_path: Path) -> None:
    mount_failed = "Failed mounting bundle: Failed to load dm table: Argument list too long"
    updater, _ = make(tmp_path, "a", fake_rauc(tmp_path, mount_failed, times=1))
    assert asyncio.run(updater.install("R2", "/p"))["stage"] == "installed"
    assert [a[0] for a in asked(tmp_path)] == ["install", "install"]


def test_a_bundle_that_never_mounts_fails_after_the_second_try_and_a_refusal_is_not_retried(tmp_path: Path) -> None:
    updater, _ = make(tmp_path / "1", "a", fake_rauc(tmp_path / "1", "Failed mounting bundle: no such device"))
    with pytest.raises(InstallFailed, match="Failed mounting bundle"):
        asyncio.run(updater.install("R2", "/p"))
    assert len(asked(tmp_path / "1")) == 2
    updater, _ = make(tmp_path / "2", "a", fake_rauc(tmp_path / "2", "signature verification failed"))
    with pytest.raises(InstallFailed, match="signature"):
        asyncio.run(updater.install("R2", "/p"))
    assert len(asked(tmp_path / "2")) == 1


async def _one_round(updater: Updater) -> None:
    task = asyncio.create_task(updater.watch(lambda: False, list, lambda: True, lambda: True))
    await asyncio.sleep(0.2)
    task.cancel()


def test_no_reboot_during_a_call_and_an_interrupted_install_is_reported_after_the_restart(tmp_path: Path) -> None:
    rauc = fake_rauc(tmp_path)
    updater, _ = make(tmp_path, "a", rauc)
    asyncio.run(updater.install("R2", "/p"))

    async def in_a_call() -> None:
        task = asyncio.create_task(updater.watch(lambda: True, list, lambda: True, lambda: True))
        await asyncio.sleep(0.3)
        assert not task.done()
        task.cancel()
    asyncio.run(in_a_call())
    assert not (tmp_path / "actions").exists()
    # a power cut while RAUC was writing: the journal says "downloading" at the next start
    updater._save(Journal("R3", "downloading", "a", None))  # as the install step wrote it
    updater, _ = make(tmp_path, "a", rauc)
    progress = updater.progress()
    assert progress is not None and progress.stage == "failed" and "interrupted" in progress.detail


def test_a_unit_not_booted_from_a_slot_refuses_to_update(tmp_path: Path) -> None:
    updater, _ = make(tmp_path, "a", fake_rauc(tmp_path))
    updater.running = Running(None, None)
    with pytest.raises(InstallFailed, match="not booted from an A/B slot"):
        asyncio.run(updater.install("R2", "/p"))


def test_running_is_read_from_the_command_line_and_os_release(tmp_path: Path) -> None:
    (tmp_path / "cmdline").write_text("ro kiosk.slot=b rauc.slot=b kiosk.health_deadline=90 quiet\n")
    (tmp_path / "os-release").write_text('PRETTY_NAME="Debian"\nIMAGE_VERSION="0.1.0+20261129.1200"\n')
    (tmp_path / "boot_id").write_text("5e1f0c6a-0d9b-4c53-9f5c-2b7e0c1d2a3b\n")
    assert Running.read(tmp_path / "cmdline", tmp_path / "os-release", tmp_path / "boot_id") == \
        Running("b", "0.1.0+20261129.1200", 90.0, "5e1f0c6a-0d9b-4c53-9f5c-2b7e0c1d2a3b")
    assert Running.read(tmp_path / "nothing", tmp_path / "nothing", tmp_path / "nothing") == \
        Running(None, None, None, "")


def test_raucs_reason_is_its_last_error_line_not_its_closing_words() -> None:
    from kiosk.provision.updater import _last_error
    out = ("installing\n  0% Installing\n 40% Checking bundle failed.\n100% Installing failed.\n"
           "LastError: Failed to check bundle signature: signature verification failed: unable to get "
           "local issuer certificate\nInstalling `https://s/b.raucb` failed\n")
    assert _last_error(out).startswith("Failed to check bundle signature")
    assert "failed" in _last_error("a\nsomething failed\nInstalling `x` failed\n")


def test_an_agent_restart_while_an_update_waits_for_its_reboot_is_not_a_fall_back(tmp_path: Path) -> None:
    rauc = fake_rauc(tmp_path)
    updater, _ = make(tmp_path, "a", rauc)
    asyncio.run(updater.install("R2", "/p"))
    updater, _ = make(tmp_path, "a", rauc, new_boot=False)  # the agent restarted (a crash, the watchdog)
    progress = updater.progress()
    assert progress is not None and progress.stage == "installed", progress
    asyncio.run(run_watch(updater, healthy=True))          # and still reboots into the update
    assert "reboot" in (tmp_path / "actions").read_text()
    updater, _ = make(tmp_path, "b", rauc)
    assert updater.progress() == m.UpdateProgress(release="R2", stage="booted", slot="b",
                                                  version="0.1.0+20261129.1200")
