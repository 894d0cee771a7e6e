"""The wipe journal: which steps of a wipe are done, so a power cut resumes it.

Pure, in the one shape of every state machine here (kiosk.protocol.machine):
``step(journal, event, now) -> Transition(journal, actions)``. The agent appends one
JSON line per finished step (fsynced) and carries out the step the machine asks for
next. A torn last line (power cut mid-write) counts as not written, which is safe
because every step is idempotent.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from typing import TypeAlias

from kiosk.protocol.machine import Transition


class WipeStep(enum.StrEnum):
    INTENT = "intent"              # the decision to wipe is durable before anything is erased
    KEY_DESTROYED = "key-destroyed"  # crypto-erase: the per-assignment key is gone
    DATA_DELETED = "data-deleted"    # the (now unreadable) citizen data files are removed
    SETTINGS_RESET = "settings-reset"
    RECEIPT_SIGNED = "receipt-signed"  # receipt is in the outbox; the wipe is complete


ORDER: tuple[WipeStep, ...] = tuple(WipeStep)


@dataclass(frozen=True)
class JournalEntry:
    step: WipeStep
    at: float
    command_id: str | None


@dataclass(frozen=True)
class Journal:
    entries: tuple[JournalEntry, ...] = ()

    @property
    def started(self) -> bool:
        return bool(self.entries)

    @property
    def done(self) -> frozenset[WipeStep]:
        return frozenset(e.step for e in self.entries)

    @property
    def complete(self) -> bool:
        return WipeStep.RECEIPT_SIGNED in self.done

    @property
    def intent(self) -> JournalEntry | None:
        return next((e for e in self.entries if e.step is WipeStep.INTENT), None)

    def next_step(self) -> WipeStep | None:
        """The first step not yet done, or None when there is nothing to do."""
        if not self.started:
            return None
        for step in ORDER:
            if step not in self.done:
                return step
        return None


# --- events in ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Begin:
    """A wipe command arrived: a new journal starts with the intent (an old one is done with)."""

    command_id: str


@dataclass(frozen=True, slots=True)
class Resume:
    """Carry on with whatever the journal says is left (at start, or after :class:`Begin`)."""


@dataclass(frozen=True, slots=True)
class Finished:
    """The agent carried out this step."""

    step: WipeStep


WipeEvent: TypeAlias = Begin | Resume | Finished


# --- actions out -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StartJournal:
    """Replace the journal file by one holding only this entry, durably."""

    entry: JournalEntry


@dataclass(frozen=True, slots=True)
class Record:
    """Append this entry to the journal, durably."""

    entry: JournalEntry


@dataclass(frozen=True, slots=True)
class Perform:
    """Carry out this step (every step is idempotent), then feed :class:`Finished`."""

    step: WipeStep


WipeAction: TypeAlias = StartJournal | Record | Perform


def step(journal: Journal, event: WipeEvent, now: float) -> Transition[Journal, WipeAction]:
    """Feed one event. Never raises; an event that makes no sense now changes nothing."""
    if isinstance(event, Begin):
        intent = JournalEntry(WipeStep.INTENT, now, event.command_id)
        return Transition(Journal((intent,)), (StartJournal(intent),))
    following = journal.next_step()
    if isinstance(event, Resume):
        return Transition(journal, (Perform(following),) if following is not None else ())
    if event.step is not following:  # a step finished twice, or out of order
        return Transition(journal)
    began = journal.intent
    entry = JournalEntry(event.step, now, began.command_id if began is not None else None)
    done = Journal((*journal.entries, entry))
    after = done.next_step()
    return Transition(done, (Record(entry),) + ((Perform(after),) if after is not None else ()))


def entry_line(entry: JournalEntry) -> str:
    return json.dumps({"step": str(entry.step), "at": entry.at, "command_id": entry.command_id}) + "\n"


def parse(text: str) -> Journal:
    entries: list[JournalEntry] = []
    for line in text.splitlines():
        try:
            obj = json.loads(line)
            entry = JournalEntry(WipeStep(obj["step"]), float(obj["at"]), obj.get("command_id"))
        except (ValueError, KeyError, TypeError, RecursionError):
            continue  # a torn or foreign line: the step it describes will simply be redone
        entries.append(entry)
    return Journal(tuple(entries))
