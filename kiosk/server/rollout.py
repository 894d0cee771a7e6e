"""OS releases and their roll-out to the fleet in waves, each step audited.

- ``release add BUNDLE``: the bundle and the ``BUNDLE.json`` that ``kiosk-image bundle``
  wrote beside it (checked against the bundle's size and SHA-256) go into DATA/releases.
  The server never needs to trust the bundle: each unit checks its signature itself.
- ``rollout start RELEASE --waves 1%,10%,50%,100%``: every enrolled unit of the release's
  architecture is placed in a wave (in a fixed order); the first wave gets the signed
  ``update`` command at once, each later one after the pause, and only if the wave before it
  passed. More than ``max_failed_share`` of a wave failed or rolled back: the roll-out halts.
- Units report their stage (``UpdateProgress``); the ``update`` command's own result says
  whether the install worked.

The wave verdicts are pure (kiosk.protocol.update); this module holds the roll-out's rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import shutil
import uuid
from pathlib import Path
from typing import Any, cast

import msgspec
import sqlalchemy as sa

from kiosk.protocol import messages as m
from kiosk.protocol import update
from kiosk.protocol.command_lifecycle import CommandState
from kiosk.server import commands
from kiosk.server.audit import SERVER
from kiosk.server.ca import Authority
from kiosk.server.store import (
    ReleaseRow,
    RolloutRow,
    RolloutUnitRow,
    Store,
    StoreUnavailable,
    devices,
    releases,
    rollout_units,
    rollouts,
)
from kiosk.server.store import commands as command_rows

log = logging.getLogger("kiosk.server.rollout")

RELEASE_DIR = "releases"
BUNDLE_URL_PREFIX = "/api/v1/releases/"
#: The update command waits this long for an offline unit (the unit may be off for a weekend).
UPDATE_TTL_SECONDS = 7 * 24 * 3600.0
DRIVE_INTERVAL_SECONDS = 2.0


class RolloutError(Exception):
    pass


class ReleaseInfo(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``BUNDLE.json`` as ``kiosk-image bundle`` writes it (kiosk.image.bundle.Release)."""

    version: str
    arch: str
    compatible: str
    bytes: int
    sha256: str


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def add_release(store: Store, data: Path, bundle: Path, actor: str) -> ReleaseRow:
    sidecar = bundle.with_name(bundle.name + ".json")
    if bundle.suffix != ".raucb" or not bundle.is_file():
        raise RolloutError(f"{bundle} is not a RAUC bundle (.raucb) made by kiosk-image bundle")
    try:
        info = msgspec.json.decode(sidecar.read_bytes(), type=ReleaseInfo)
        update.version_key(info.version)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError, update.VersionError) as exc:
        raise RolloutError(f"{sidecar}: {exc} (kiosk-image bundle writes it beside the bundle)") from None
    if bundle.stat().st_size != info.bytes or _sha256(bundle) != info.sha256:
        raise RolloutError(f"{bundle} is not the bundle {sidecar.name} describes (size or SHA-256 differ): "
                           "a partial copy?")
    with store.read() as conn:
        if conn.execute(sa.select(releases.c.version).where(releases.c.version == info.version)).first():
            raise RolloutError(f"release {info.version} exists already")
    folder = data / RELEASE_DIR
    folder.mkdir(exist_ok=True)
    name = f"{info.version}-{info.arch}.raucb"
    partial = folder / (name + ".partial")
    shutil.copyfile(bundle, partial)
    row = ReleaseRow(info.version, info.arch, info.compatible, name, info.bytes, info.sha256, store.clock(), actor)
    try:
        with store.tx() as conn:
            conn.execute(releases.insert().values(**dataclasses.asdict(row)))
            store.append_audit(conn, actor, "release-added", release=info.version, arch=info.arch,
                               bytes=info.bytes, digest=info.sha256)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(folder / name)
    return row


def release(store: Store, version: str) -> ReleaseRow | None:
    with store.read() as conn:
        row = conn.execute(sa.select(releases).where(releases.c.version == version)).first()
    return ReleaseRow(**row._mapping) if row else None


def release_list(store: Store) -> list[ReleaseRow]:
    with store.read() as conn:
        return [ReleaseRow(**r._mapping) for r in conn.execute(sa.select(releases).order_by(releases.c.added_at))]


def start(store: Store, version: str, waves: str, pause_seconds: float, max_failed_share: float,
          actor: str, device_ids: list[str] | None = None) -> RolloutRow:
    """A roll-out of ``version`` to every unit (or to ``device_ids``), the first wave at once."""
    rel = release(store, version)
    if rel is None:
        raise RolloutError(f"no release {version}; add it with `kiosk-server release add BUNDLE`")
    try:
        shares = update.parse_waves(waves)
    except update.WaveError as exc:
        raise RolloutError(str(exc)) from None
    if not 0 <= max_failed_share < 1 or pause_seconds < 0:
        raise RolloutError("the failure share must be from 0% to below 100%, and the pause not negative")
    now = store.clock()
    with store.tx() as conn:
        if conn.execute(sa.select(rollouts.c.id).where(rollouts.c.state == "running")).first():
            raise RolloutError("a roll-out is running already; wait for it, or halt it first")
        query = sa.select(devices.c.id).where(devices.c.revoked_at.is_(None)).order_by(devices.c.enrolled_at,
                                                                                      devices.c.id)
        fleet = [r.id for r in conn.execute(query)]
        if device_ids is not None:
            unknown = set(device_ids) - set(fleet)
            if unknown:
                raise RolloutError(f"not enrolled (or revoked): {', '.join(sorted(unknown))}")
            fleet = [d for d in fleet if d in set(device_ids)]
        if not fleet:
            raise RolloutError("no enrolled units to update")
        row = RolloutRow(str(uuid.uuid4()), version, json.dumps(shares), pause_seconds, max_failed_share,
                         "running", 0, now, None, now, actor)
        conn.execute(rollouts.insert().values(**dataclasses.asdict(row)))
        for wave, units in enumerate(update.split_waves(fleet, shares)):
            conn.execute(rollout_units.insert(), [
                {"rollout_id": row.id, "device_id": d, "wave": wave, "stage": "pending", "detail": "",
                 "changed_at": now} for d in units])
        store.append_audit(conn, actor, "rollout-started", rollout_id=row.id, release=version, waves=waves,
                           units=len(fleet), pause_seconds=pause_seconds, max_failed_share=max_failed_share)
    return row


def halt(store: Store, rollout_id: str, actor: str, reason: str) -> bool:
    with store.tx() as conn:
        done = conn.execute(rollouts.update().where(rollouts.c.id == rollout_id, rollouts.c.state == "running")
                            .values(state="halted", reason=reason)).rowcount
        if done:
            store.append_audit(conn, actor, "rollout-halted", rollout_id=rollout_id, reason=reason)
    return bool(done)


def _units(conn: sa.Connection, rollout_id: str) -> list[RolloutUnitRow]:
    q = sa.select(rollout_units).where(rollout_units.c.rollout_id == rollout_id).order_by(rollout_units.c.wave)
    return [RolloutUnitRow(**r._mapping) for r in conn.execute(q)]


def drive(store: Store, authority: Authority) -> None:
    """One step of every running roll-out: send a due wave, judge the wave under way."""
    now = store.clock()
    with store.read() as conn:
        running = [RolloutRow(**r._mapping) for r in conn.execute(sa.select(rollouts)
                                                                  .where(rollouts.c.state == "running"))]
    for ro in running:
        with store.tx() as conn:
            units = [u for u in _units(conn, ro.id) if u.wave == ro.wave]
            if not units:
                continue
            if now >= ro.wave_starts_at and all(u.command_id is None for u in units):
                _send_wave(store, conn, authority, ro, units)
                continue
            units = _settle(store, conn, ro, units)
            verdict = update.wave_verdict([cast(update.Stage, u.stage) for u in units], ro.max_failed_share)
            waves = max(u.wave for u in _units(conn, ro.id)) + 1
            if verdict == "halt":
                bad = sum(u.stage in update.BAD for u in units)
                reason = (f"wave {ro.wave + 1}: {bad} of {len(units)} units failed or rolled back "
                          f"(more than {ro.max_failed_share:.0%})")
                conn.execute(rollouts.update().where(rollouts.c.id == ro.id).values(state="halted", reason=reason))
                store.append_audit(conn, SERVER, "rollout-halted", rollout_id=ro.id, reason=reason)
                log.warning("roll-out %s halted: %s", ro.id, reason)
            elif verdict == "passed" and ro.wave + 1 >= waves:
                conn.execute(rollouts.update().where(rollouts.c.id == ro.id).values(state="done"))
                store.append_audit(conn, SERVER, "rollout-done", rollout_id=ro.id, release=ro.release)
            elif verdict == "passed":
                conn.execute(rollouts.update().where(rollouts.c.id == ro.id)
                             .values(wave=ro.wave + 1, wave_starts_at=now + ro.pause_seconds))
                store.append_audit(conn, SERVER, "rollout-wave-passed", rollout_id=ro.id, wave=ro.wave + 1,
                                   next_wave_at=now + ro.pause_seconds)


def _send_wave(store: Store, conn: sa.Connection, authority: Authority, ro: RolloutRow,
               units: list[RolloutUnitRow]) -> None:
    rel = conn.execute(sa.select(releases).where(releases.c.version == ro.release)).one()
    action = m.Update(release=ro.release, path=BUNDLE_URL_PREFIX + rel.file)
    for unit in units:
        command = commands.queue_in(conn, store, authority, unit.device_id, action, SERVER, UPDATE_TTL_SECONDS)
        conn.execute(rollout_units.update().where(rollout_units.c.rollout_id == ro.id,
                                                  rollout_units.c.device_id == unit.device_id)
                     .values(command_id=command.id, changed_at=store.clock()))
    store.append_audit(conn, SERVER, "rollout-wave-sent", rollout_id=ro.id, wave=ro.wave + 1, units=len(units))


def _settle(store: Store, conn: sa.Connection, ro: RolloutRow, units: list[RolloutUnitRow]) -> list[RolloutUnitRow]:
    """The wave's units as their update commands left them (kiosk.protocol.update.settled_stage):
    a unit whose command expired unheard counts as failed."""
    waiting = {u.command_id: u for u in units if u.command_id and u.stage in update.WAITING_FOR_COMMAND}
    if not waiting:
        return units
    query = sa.select(command_rows.c.id, command_rows.c.state).where(command_rows.c.id.in_(sorted(waiting)))
    states = {row.id: row.state for row in conn.execute(query)}
    settled: dict[str, RolloutUnitRow] = {}
    for command_id, unit in waiting.items():
        stage, detail = update.settled_stage(cast(update.Stage, unit.stage), CommandState(states[command_id]))
        if stage != unit.stage:
            _write_stage(store, conn, ro.id, ro.release, unit.device_id, stage, detail)
            settled[unit.device_id] = dataclasses.replace(unit, stage=stage, detail=detail)
    return [settled.get(u.device_id, u) for u in units]


def _write_stage(store: Store, conn: sa.Connection, rollout_id: str, release_version: str, device_id: str,
                 stage: update.Stage, detail: str) -> None:
    conn.execute(rollout_units.update().where(rollout_units.c.rollout_id == rollout_id,
                                              rollout_units.c.device_id == device_id)
                 .values(stage=stage, detail=detail, changed_at=store.clock()))
    store.append_audit(conn, f"device:{device_id}", "update-" + stage, device_id, rollout_id=rollout_id,
                       release=release_version, reason=detail or None)


def _set_stage(store: Store, device_id: str, stage: update.Stage, detail: str, *,
               release_version: str | None = None, command_id: str | None = None) -> None:
    """The unit's row in the latest roll-out of that release (or of that update command)."""
    with store.tx() as conn:
        q = (sa.select(rollout_units, rollouts.c.release).join(rollouts, rollouts.c.id == rollout_units.c.rollout_id)
             .where(rollout_units.c.device_id == device_id)
             .order_by(rollouts.c.created_at.desc()).limit(1))
        if command_id is not None:
            q = q.where(rollout_units.c.command_id == command_id)
        else:
            q = q.where(rollouts.c.release == release_version)
        row = conn.execute(q).first()
        if row is None or (row.stage == stage and row.detail == detail):
            return
        _write_stage(store, conn, row.rollout_id, row.release, device_id, stage, detail)


def on_progress(store: Store, device_id: str, progress: m.UpdateProgress) -> None:
    _set_stage(store, device_id, progress.stage, progress.detail, release_version=progress.release)


def on_result(store: Store, device_id: str, result: m.CommandResult) -> None:
    """The update command's own result: installed, or failed (refused before anything was written)."""
    if result.outcome == "ok":
        stage = result.detail.get("stage", "installed")
        _set_stage(store, device_id, stage if stage in update.STAGES else "installed", "",
                   command_id=result.command_id)
    else:
        _set_stage(store, device_id, "failed", result.reason or result.outcome, command_id=result.command_id)


def status(store: Store, rollout_id: str | None = None) -> dict[str, Any]:
    """A roll-out (the latest if none is named) with its units counted per wave and stage."""
    with store.read() as conn:
        q = sa.select(rollouts).order_by(rollouts.c.created_at.desc()).limit(1)
        if rollout_id:
            q = sa.select(rollouts).where(rollouts.c.id == rollout_id)
        found = conn.execute(q).first()
        if found is None:
            raise RolloutError("no such roll-out" if rollout_id else "no roll-out yet")
        ro = RolloutRow(**found._mapping)
        units = _units(conn, ro.id)
    waves: list[dict[str, Any]] = []
    for wave in sorted({u.wave for u in units}):
        mine = [u for u in units if u.wave == wave]
        counts: dict[str, int] = {stage: sum(u.stage == stage for u in mine) for stage in update.STAGES}
        waves.append({"wave": wave + 1, "units": len(mine), "sent": any(u.command_id for u in mine),
                      **counts,
                      "problems": [{"device_id": u.device_id, "stage": u.stage, "detail": u.detail}
                                   for u in mine if u.stage in update.BAD]})
    return {"id": ro.id, "release": ro.release, "state": ro.state, "wave": ro.wave + 1, "reason": ro.reason,
            "next_wave_at": ro.wave_starts_at if ro.state == "running" else None,
            "max_failed_share": ro.max_failed_share, "pause_seconds": ro.pause_seconds, "waves": waves}


async def drive_forever(store: Store, authority: Authority) -> None:
    while True:
        try:
            await asyncio.to_thread(drive, store, authority)
        except StoreUnavailable as exc:  # the hub's sweep says so in plain words already
            log.debug("roll-outs wait for the database: %s", exc)
        except Exception:  # a bad step must not stop later ones
            log.exception("roll-out step failed")
        await asyncio.sleep(DRIVE_INTERVAL_SECONDS)


def bundle_path(data: Path, name: str) -> Path | None:
    """The stored bundle a unit asks for, or None (a name is never a path)."""
    if "/" in name or name.startswith(".") or not name.endswith(".raucb"):
        return None
    path = data / RELEASE_DIR / name
    with contextlib.suppress(OSError):
        if path.is_file():
            return path
    return None
