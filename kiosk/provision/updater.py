"""The unit's side of an OS update: install with RAUC, reboot at a quiet moment, judge the new slot.

The update journal (``update.json`` in the state directory, on the data partition) carries an
update across reboots: which release, from which slot to which, and how far it got. The
decisions are pure (kiosk.protocol.update); this module does the I/O around them:

1. ``update`` command: RAUC streams the signed bundle from the server over mutual TLS (the
   unit's own certificate) and writes it to the slot not running -> ``installed``. RAUC
   refuses a bundle signed by anyone but the update CA in the image, or older than the
   image, before it writes anything -> ``failed``, with RAUC's reason.
2. At a quiet moment (no call, no visit within 15 minutes) the unit reboots.
3. Booted into the new slot -> ``booted``; once the server link is up and the screen app is
   alive it marks the slot good (``rauc status mark-good``) -> ``good``. If that does not
   happen in time, it marks the slot bad and reboots; the bootloader then starts the old
   slot, as it does by itself after a slot failed to boot its set number of times ->
   ``rolled-back``, reported from the old slot.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from kiosk.protocol import messages as m
from kiosk.protocol import update
from kiosk.provision import files
from kiosk.provision.state import StateDir
from kiosk.provision.system_actions import SystemActions

log = logging.getLogger("kiosk.agent.update")

JOURNAL = "update.json"
#: How often a unit with an installed update looks for a quiet moment or judges its health.
CHECK_SECONDS = 5.0


class InstallFailed(Exception):
    """RAUC refused or failed the install; ``str`` is its reason, for the console."""


@dataclass(frozen=True)
class Journal:
    release: str
    stage: update.Stage
    from_slot: str | None
    from_version: str | None
    to_slot: str | None = None
    detail: str = ""
    changed_at: float = 0.0
    #: the boot in which it was written (the kernel's boot id): an agent restart is not a reboot
    boot_id: str = ""


@dataclass(frozen=True)
class Running:
    """What the unit runs now: the slot its bootloader named and the image's version."""

    slot: str | None
    version: str | None
    #: ``kiosk.health_deadline=SECONDS`` from the slot's own boot files, if they set one
    health_deadline: float | None = None
    #: this boot's id (the kernel's); empty if unknown
    boot_id: str = ""

    @classmethod
    def read(cls, cmdline: Path = Path("/proc/cmdline"), os_release: Path = Path("/etc/os-release"),
             boot_id: Path = Path("/proc/sys/kernel/random/boot_id")) -> Running:
        try:
            args = cmdline.read_text().split()
        except OSError:
            args = []
        slot = next((a.removeprefix("kiosk.slot=") for a in args if a.startswith("kiosk.slot=")), None)
        try:
            lines = os_release.read_text().splitlines()
        except OSError:
            lines = []
        fields = {k: v.strip('"') for k, sep, v in (line.partition("=") for line in lines) if sep}
        deadline = next((a.removeprefix("kiosk.health_deadline=") for a in args
                         if a.startswith("kiosk.health_deadline=")), "")
        try:
            boot = boot_id.read_text().strip()
        except OSError:
            boot = ""
        return cls(slot, fields.get("IMAGE_VERSION"), float(deadline) if deadline.isdigit() else None, boot)


#: RAUC's reason when it could not mount the streamed bundle before reading any of its payload.
#: Seen in QEMU on the first stream after a boot: "Failed to load dm table: Argument list too
#: long" (dm-verity: "Hash device is too small") on a bundle another boot streamed whole.
#: Nothing has been written then, so one more try is safe (docs/benchmarks.md, Updates).
MOUNT_FAILED = "Failed mounting bundle"


class Rauc:
    """RAUC's command line, the one way the agent touches the slots."""

    def __init__(self, identity: Path, command: str = "rauc", mount_retry_seconds: float = 10.0) -> None:
        self.identity = identity
        self.command = command
        self.mount_retry_seconds = mount_retry_seconds

    async def _run(self, *args: str) -> str:
        proc = await asyncio.create_subprocess_exec(self.command, *args, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.STDOUT)
        out, _ = await proc.communicate()
        text = out.decode(errors="replace").strip()
        if proc.returncode != 0:
            raise InstallFailed(_last_error(text) or f"rauc {args[0]} failed ({proc.returncode})")
        return text

    async def install(self, url: str) -> None:
        args = ("install", f"--tls-cert={self.identity / 'device.crt'}", f"--tls-key={self.identity / 'device.key'}",
                f"--tls-ca={self.identity / 'ca.pem'}", url)
        try:
            await self._run(*args)
        except InstallFailed as exc:
            if not str(exc).startswith(MOUNT_FAILED):
                raise
            log.warning("RAUC could not mount the streamed bundle (%s); once more in %.0f s",
                        exc, self.mount_retry_seconds)
            await asyncio.sleep(self.mount_retry_seconds)
            await self._run(*args)

    async def mark(self, verdict: str) -> None:
        await self._run("status", f"mark-{verdict}", "booted")


def _last_error(text: str) -> str:
    """RAUC's reason: its ``LastError:`` line (its last line only says "Installing ... failed")."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    reasons = [line.removeprefix("LastError:").strip() for line in lines if line.startswith("LastError:")]
    errors = [line for line in lines if "error" in line.lower() or "fail" in line.lower()]
    if reasons:
        return reasons[-1][-500:]
    return (" | ".join(errors[-3:]) if errors else lines[-1] if lines else "")[-500:]


class Updater:
    def __init__(self, state: StateDir, rauc: Rauc, actions: SystemActions, server_url: str,
                 report: Callable[[m.UpdateProgress], Awaitable[None]],
                 running: Running | None = None, health_deadline: float = update.HEALTH_DEADLINE_SECONDS) -> None:
        self.state = state
        self.rauc = rauc
        self.actions = actions
        self.server_url = server_url.rstrip("/")
        self.report = report
        self.running = running or Running.read()
        self.health_deadline = self.running.health_deadline or health_deadline
        self.started = time.monotonic()
        self.path = state.root / JOURNAL

    # ---------------------------------------------------------------- journal
    def journal(self) -> Journal | None:
        raw = files.read_json(self.path, None)
        if not isinstance(raw, dict):
            return None
        try:
            return Journal(**raw)
        except TypeError:
            log.warning("ignoring an unreadable update journal")
            return None

    def _save(self, journal: Journal) -> Journal:
        journal = replace(journal, changed_at=time.time(), boot_id=self.running.boot_id)
        files.atomic_write(self.path, json.dumps(asdict(journal)).encode())
        self.state.audit("update-" + journal.stage, release=journal.release, slot=self.running.slot,
                         detail=journal.detail or None)
        return journal

    def progress(self) -> m.UpdateProgress | None:
        journal = self.journal()
        if journal is None:
            return None
        return m.UpdateProgress(release=journal.release, stage=journal.stage, slot=self.running.slot,
                                version=self.running.version, detail=journal.detail)

    async def _advance(self, journal: Journal) -> Journal:
        journal = self._save(journal)
        progress = self.progress()
        if progress:
            await self.report(progress)
        return journal

    # ---------------------------------------------------------------- steps
    def on_start(self) -> None:
        """At agent start: did the boot land in the new slot, or back in the old one?"""
        journal = self.journal()
        if journal is None:
            return
        if journal.stage == "downloading":  # the agent never returns to that step by itself
            self._save(replace(journal, stage="failed", detail="the install was interrupted (a power cut or a "
                               f"restart); slot {self.running.slot or '?'} runs as before: send the update again"))
            return
        rebooted = not self.running.boot_id or journal.boot_id != self.running.boot_id
        stage, why = update.after_boot(journal.stage, journal.to_slot, self.running.slot, rebooted)
        if stage != journal.stage:
            self._save(replace(journal, stage=stage, detail=journal.detail or why))

    async def install(self, release: str, path: str) -> dict[str, str]:
        """The ``update`` command: returns the detail of its result, or raises InstallFailed."""
        current = self.journal()
        if current and current.release == release and current.stage in ("installed", "booted", "good"):
            return {"stage": current.stage, "release": release}  # a repeated command: nothing to do again
        if self.running.slot is None:
            raise InstallFailed("this system was not booted from an A/B slot; it cannot be updated")
        other = "b" if self.running.slot == "a" else "a"
        journal = await self._advance(Journal(release, "downloading", self.running.slot, self.running.version))
        try:
            await self.rauc.install(self.server_url + path)
        except InstallFailed as exc:
            await self._advance(replace(journal, stage="failed", detail=str(exc)))
            raise
        await self._advance(replace(journal, stage="installed", to_slot=other))
        return {"stage": "installed", "release": release, "slot": other}

    async def watch(self, in_call: Callable[[], bool], visits: Callable[[], Iterable[float]],
                    server_connected: Callable[[], bool], ui_alive: Callable[[], bool]) -> None:
        """Forever: reboot into an installed update at a quiet moment; judge a new slot's health."""
        while True:
            journal = self.journal()
            if journal and journal.stage == "installed" and journal.from_slot == self.running.slot:
                decision = update.reboot_decision(time.time(), in_call(), visits())
                if isinstance(decision, update.RebootNow):
                    log.info("rebooting into the update %s (slot %s)", journal.release, journal.to_slot)
                    self.state.audit("update-reboot", release=journal.release)
                    await self.actions.reboot()
                    return
            elif journal and journal.stage == "booted":
                verdict = update.health_verdict(server_connected(), ui_alive(), time.monotonic() - self.started,
                                                self.health_deadline)
                if verdict == "good":
                    try:
                        await self.rauc.mark("good")
                    except InstallFailed as exc:  # RAUC's service not up yet: ask again next round
                        log.warning("could not mark the slot good yet: %s", exc)
                    else:
                        await self._advance(replace(journal, stage="good"))
                elif verdict == "bad":
                    why = (f"health check failed: server link {'up' if server_connected() else 'down'}, "
                           f"screen app {'alive' if ui_alive() else 'not alive'} after "
                           f"{self.health_deadline:.0f} s")
                    self._save(replace(journal, detail=why))
                    try:
                        await self.rauc.mark("bad")
                    except InstallFailed as exc:  # the bootloader's try counter still falls back
                        log.warning("could not mark the slot bad: %s", exc)
                    log.warning("%s; falling back to slot %s", why, journal.from_slot)
                    await self.actions.reboot()
                    return
            await asyncio.sleep(CHECK_SECONDS)
