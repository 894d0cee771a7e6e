"""Carrying out a wipe, step by step, as the journal in kiosk.protocol.wipe_journal says.

Every step is idempotent and recorded once done, so a power cut anywhere resumes the
wipe at the next start (before the UI shows anything) and ends with the same receipt.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from collections import deque

from kiosk.protocol import messages as m
from kiosk.protocol import signing
from kiosk.protocol import wipe_journal as wj
from kiosk.provision import failpoints
from kiosk.provision.files import append_line, atomic_write
from kiosk.provision.state import StateDir

#: What a wipe erases, as named in the receipt.
ERASED = ["assignment-key", "citizen-data", "call-history", "wifi-credentials", "settings", "logs", "screenshots"]


def begin(state: StateDir, command_id: str) -> None:
    """Make the decision durable before anything is erased."""
    for action in wj.step(state.journal(), wj.Begin(command_id), time.time()).actions:
        if isinstance(action, wj.StartJournal):
            state.journal_path.unlink(missing_ok=True)  # an old, completed wipe's journal
            _record(state, action.entry)


def _record(state: StateDir, entry: wj.JournalEntry) -> None:
    append_line(state.journal_path, wj.entry_line(entry))
    failpoints.hit(f"wipe:{entry.step}")


def run(state: StateDir, device_id: str, resumed: bool) -> str | None:
    """Finish the wipe in the journal; returns the command id whose receipt is now in the outbox."""
    journal = state.journal()
    intent = journal.intent
    if intent is None:
        return None
    transition = wj.step(journal, wj.Resume(), time.time())
    journal, actions = transition.state, deque(transition.actions)
    while actions:
        action = actions.popleft()
        if isinstance(action, wj.Perform):
            _perform(state, action.step, intent, device_id, resumed)
            transition = wj.step(journal, wj.Finished(action.step), time.time())
            journal = transition.state
            actions.extend(transition.actions)
        else:
            _record(state, action.entry)
    return intent.command_id


def _perform(state: StateDir, step: wj.WipeStep, intent: wj.JournalEntry, device_id: str, resumed: bool) -> None:
    if step is wj.WipeStep.KEY_DESTROYED:
        holder = state.assignment_key()
        if (key := holder.load()) is not None:
            atomic_write(state.root / "wiped-key.sha256", hashlib.sha256(key).hexdigest().encode())
        holder.destroy()  # with a TPM: its key-encryption key too, so no stale copy of the file opens
    elif step is wj.WipeStep.DATA_DELETED:
        shutil.rmtree(state.citizen, ignore_errors=True)
        state.citizen.mkdir(mode=0o700, exist_ok=True)
        for leftover in (state.root / "screenshots", state.root / "calls"):
            shutil.rmtree(leftover, ignore_errors=True)
        state.log_path.unlink(missing_ok=True)  # logs may name times of visits
    elif step is wj.WipeStep.SETTINGS_RESET:
        state.settings_path.unlink(missing_ok=True)
    elif step is wj.WipeStep.RECEIPT_SIGNED:
        receipt = m.WipeReceipt(erased=ERASED + list(state.assignment_key().erases),
                                key_fingerprint=_stored_fingerprint(state), intent_at=intent.at,
                                finished_at=time.time(), resumed_after_interruption=resumed)
        result = m.CommandResult(command_id=intent.command_id or "", device_id=device_id, kind="wipe",
                                 outcome="ok", finished_at=receipt.finished_at,
                                 detail=m.to_builtins(receipt))
        state.outbox_put(result.command_id, signing.seal(state.device_key(), result))
        (state.root / "wiped-key.sha256").unlink(missing_ok=True)
        # before the step is recorded: a cut here repeats the entry rather than lose it
        state.audit("wiped", command_id=intent.command_id, resumed=resumed)


def _stored_fingerprint(state: StateDir) -> str | None:
    try:
        return (state.root / "wiped-key.sha256").read_text().strip() or None
    except FileNotFoundError:
        return None
