"""Updates, as pure decisions shared by the unit and the server (no I/O, no clock of their own).

- Versions only grow: ``MAJOR.MINOR.PATCH+YYYYMMDD.HHMM`` (what ``kiosk-image build`` stamps);
  :func:`version_key` orders them, and RAUC's ``min-bundle-version`` refuses an older bundle.
- :func:`reboot_decision`: when a unit that has installed an update may reboot into it.
- Per unit, an update moves through :data:`STAGES`; :func:`wave_verdict` says whether a
  roll-out's wave is done, still going, or failed badly enough to halt the roll-out.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from kiosk.protocol.command_lifecycle import CommandState

#: What a unit's update went through. ``failed``: refused or not installed (nothing changed);
#: ``rolled-back``: the new slot failed to boot or failed its health check, the old one runs.
Stage = Literal["pending", "downloading", "installed", "booted", "good", "rolled-back", "failed"]
STAGES: tuple[Stage, ...] = ("pending", "downloading", "installed", "booted", "good", "rolled-back", "failed")
FINAL: frozenset[Stage] = frozenset({"good", "rolled-back", "failed"})
BAD: frozenset[Stage] = frozenset({"rolled-back", "failed"})

QUIET_BEFORE_VISIT_SECONDS = 15 * 60
#: How long a reboot takes at most, with room: a visit must not start while the unit is down.
REBOOT_ALLOWANCE_SECONDS = 5 * 60

_VERSION = re.compile(r"^(\d+)\.(\d+)\.(\d+)\+(\d{8})\.(\d{4})(-debug)?$")


class VersionError(ValueError):
    pass


def version_key(version: str) -> tuple[int, ...]:
    """Orderable form of an image version; a version not made by ``kiosk-image build`` is refused."""
    match = _VERSION.fullmatch(version)
    if not match:
        raise VersionError(f"{version!r} is not an image version (MAJOR.MINOR.PATCH+YYYYMMDD.HHMM)")
    return tuple(int(g) for g in match.groups()[:5])


def rauc_version(version: str) -> str:
    """The same version in the semantic-version form RAUC compares (``min-bundle-version``).

    The build stamp becomes the patch number's low digits, so a later build of the same
    release is a later RAUC version: 0.1.0+20261129.1015 -> 0.1.202611291015.
    """
    major, minor, patch, day, minute = version_key(version)
    return f"{major}.{minor}.{patch * 10**12 + day * 10**4 + minute}"


@dataclass(frozen=True)
class RebootNow:
    pass


@dataclass(frozen=True)
class WaitUntil:
    """Ask again at ``at`` (Unix time); ``why`` is for the unit's own log."""

    at: float
    why: str


RebootDecision = RebootNow | WaitUntil


def reboot_decision(now: float, in_call: bool, visits: Iterable[float], retry_seconds: float = 60.0) -> RebootDecision:
    """May a unit reboot into its installed update now?

    Never during a call; never within 15 minutes before a planned visit (nor so close after
    its start that the visit may still be on). ``visits`` are planned start times.
    """
    if in_call:
        return WaitUntil(now + retry_seconds, "a call is in progress")
    for at in sorted(visits):
        if at - QUIET_BEFORE_VISIT_SECONDS - REBOOT_ALLOWANCE_SECONDS <= now < at + QUIET_BEFORE_VISIT_SECONDS:
            return WaitUntil(at + QUIET_BEFORE_VISIT_SECONDS, "a visit is planned within 15 minutes")
    return RebootNow()


# ------------------------------------------------------------------------ roll-out waves


class WaveError(ValueError):
    pass


def parse_waves(text: str) -> tuple[float, ...]:
    """``"1%,10%,50%,100%"`` -> cumulative shares (0.01, 0.1, 0.5, 1.0): growing, ending at 100 %."""
    shares: list[float] = []
    for part in text.split(","):
        part = part.strip()
        if not part.endswith("%"):
            raise WaveError(f"wave {part!r} must be a percentage such as 10%")
        try:
            share = float(part[:-1]) / 100
        except ValueError:
            raise WaveError(f"wave {part!r} is not a number") from None
        if not 0 < share <= 1 or (shares and share <= shares[-1]):
            raise WaveError("waves must grow from above 0% to 100%, e.g. 1%,10%,50%,100%")
        shares.append(share)
    if not shares or shares[-1] != 1:
        raise WaveError("the last wave must be 100% (every unit)")
    return tuple(shares)


def split_waves(units: Sequence[str], shares: Sequence[float]) -> list[list[str]]:
    """Units (in a stable order) into waves; each wave takes at least one unit, empty waves fall away."""
    waves: list[list[str]] = []
    taken = 0
    for share in shares:
        upto = max(taken + 1, math.ceil(share * len(units))) if taken < len(units) else taken
        if upto > taken:
            waves.append(list(units[taken:upto]))
        taken = upto
    return waves


WaveVerdict = Literal["running", "passed", "halt"]


def wave_verdict(stages: Sequence[Stage], max_failed_share: float) -> WaveVerdict:
    """A wave halts the roll-out once more than ``max_failed_share`` of it ended badly (even
    before the rest finished: no need to wait to know it is bad); it passes when every unit
    finished and the bad share stayed within bounds."""
    if not stages:
        return "passed"
    bad = sum(stage in BAD for stage in stages)
    if bad / len(stages) > max_failed_share:
        return "halt"
    return "passed" if all(stage in FINAL for stage in stages) else "running"


#: Stages in which a unit has not yet installed anything: it still needs its update command.
WAITING_FOR_COMMAND: frozenset[Stage] = frozenset({"pending", "downloading"})


def settled_stage(stage: Stage, command: CommandState | None) -> tuple[Stage, str]:
    """A unit's stage in a wave, knowing what became of its ``update`` command.

    A command that expired before the unit installed anything (the unit stayed offline, or
    went silent mid-download) will never be carried out: the unit counts as failed, so its
    wave is judged instead of waiting for it for ever. Everything else stands as reported.
    """
    if command == CommandState.EXPIRED and stage in WAITING_FOR_COMMAND:
        return "failed", "the update command expired before the unit installed the release (offline?)"
    return stage, ""


# ------------------------------------------------------------------ on the unit, after a boot

#: How long a freshly updated slot has to prove itself (server link up, screen app alive)
#: before the unit gives up on it and falls back. Generous: emulated boots take minutes.
HEALTH_DEADLINE_SECONDS = 15 * 60


def after_boot(stage: Stage, to_slot: str | None, booted_slot: str | None, rebooted: bool = True) -> tuple[Stage, str]:
    """Where an update stands once the unit has booted: into the new slot (``booted``, on
    trial until healthy), or back in the old one before being judged healthy (``rolled-back``:
    the bootloader gave up on the new slot, or its health check failed). An agent that only
    restarted (``rebooted`` false: the same boot) finds everything as it left it."""
    if stage not in ("installed", "booted") or to_slot is None or not rebooted:
        return stage, ""
    if booted_slot == to_slot:
        return "booted", ""
    return "rolled-back", f"the unit runs slot {booted_slot or '?'}: slot {to_slot} failed to boot or was marked bad"


HealthVerdict = Literal["good", "bad", "wait"]


def health_verdict(server_connected: bool, ui_alive: bool, seconds_since_start: float,
                   deadline: float = HEALTH_DEADLINE_SECONDS) -> HealthVerdict:
    """A new slot is good once the agent reached the server and the screen app is alive;
    bad if that has not happened by the deadline."""
    if server_connected and ui_alive:
        return "good"
    return "bad" if seconds_since_start >= deadline else "wait"
