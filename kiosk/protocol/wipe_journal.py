"""The wipe journal: which steps of a wipe are done, so a power cut resumes it.

Pure: the agent appends one JSON line per finished step (fsynced) and asks this module
what to do next. A torn last line (power cut mid-write) counts as not written, which is
safe because every step is idempotent.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass


class Step(enum.StrEnum):
    INTENT = "intent"              # the decision to wipe is durable before anything is erased
    KEY_DESTROYED = "key-destroyed"  # crypto-erase: the per-assignment key is gone
    DATA_DELETED = "data-deleted"    # the (now unreadable) citizen data files are removed
    SETTINGS_RESET = "settings-reset"
    RECEIPT_SIGNED = "receipt-signed"  # receipt is in the outbox; the wipe is complete


ORDER: tuple[Step, ...] = tuple(Step)


@dataclass(frozen=True)
class JournalEntry:
    step: Step
    at: float
    command_id: str | None


@dataclass(frozen=True)
class Journal:
    entries: tuple[JournalEntry, ...] = ()

    @property
    def started(self) -> bool:
        return bool(self.entries)

    @property
    def done(self) -> frozenset[Step]:
        return frozenset(e.step for e in self.entries)

    @property
    def complete(self) -> bool:
        return Step.RECEIPT_SIGNED in self.done

    @property
    def intent(self) -> JournalEntry | None:
        return next((e for e in self.entries if e.step is Step.INTENT), None)

    def next_step(self) -> Step | None:
        """The first step not yet done, or None when there is nothing to do."""
        if not self.started:
            return None
        for step in ORDER:
            if step not in self.done:
                return step
        return None


def entry_line(step: Step, at: float, command_id: str | None) -> str:
    return json.dumps({"step": str(step), "at": at, "command_id": command_id}) + "\n"


def parse(text: str) -> Journal:
    entries: list[JournalEntry] = []
    for line in text.splitlines():
        try:
            obj = json.loads(line)
            entry = JournalEntry(Step(obj["step"]), float(obj["at"]), obj.get("command_id"))
        except (ValueError, KeyError, TypeError, RecursionError):
            continue  # a torn or foreign line: the step it describes will simply be redone
        entries.append(entry)
    return Journal(tuple(entries))
