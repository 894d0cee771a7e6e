"""Carrying out a wipe, step by step, as the journal in kiosk.protocol.wipe_journal says.

Every step is idempotent and recorded once done, so a power cut anywhere resumes the
wipe at the next start (before the UI shows anything) and ends with the same receipt.
"""

from __future__ import annotations

import hashlib
import shutil
import time

from kiosk.protocol import messages as m
from kiosk.protocol import signing
from kiosk.protocol.wipe_journal import Step, entry_line
from kiosk.provision import failpoints
from kiosk.provision.files import append_line, atomic_write, shred
from kiosk.provision.state import StateDir

#: What a wipe erases, as named in the receipt.
ERASED = ["assignment-key", "citizen-data", "call-history", "wifi-credentials", "settings", "logs", "screenshots"]


def begin(state: StateDir, command_id: str) -> None:
    """Make the decision durable before anything is erased."""
    state.journal_path.unlink(missing_ok=True)  # an old, completed wipe's journal
    _record(state, Step.INTENT, command_id)


def _record(state: StateDir, step: Step, command_id: str | None) -> None:
    append_line(state.journal_path, entry_line(step, time.time(), command_id))
    failpoints.hit(f"wipe:{step}")


def run(state: StateDir, device_id: str, resumed: bool) -> str | None:
    """Finish the wipe in the journal; returns the command id whose receipt is now in the outbox."""
    journal = state.journal()
    intent = journal.intent
    if intent is None:
        return None
    key_path = state.assignment_key_path
    key_fp = _stored_fingerprint(state)
    while (step := state.journal().next_step()) is not None:
        if step is Step.KEY_DESTROYED:
            if key_path.exists():
                key_fp = hashlib.sha256(key_path.read_bytes()).hexdigest()
                atomic_write(state.root / "wiped-key.sha256", key_fp.encode())
            shred(key_path)
        elif step is Step.DATA_DELETED:
            shutil.rmtree(state.citizen, ignore_errors=True)
            state.citizen.mkdir(mode=0o700, exist_ok=True)
            for leftover in (state.root / "screenshots", state.root / "calls"):
                shutil.rmtree(leftover, ignore_errors=True)
            state.log_path.unlink(missing_ok=True)  # logs may name times of visits
        elif step is Step.SETTINGS_RESET:
            state.settings_path.unlink(missing_ok=True)
        elif step is Step.RECEIPT_SIGNED:
            receipt = m.WipeReceipt(erased=ERASED, key_fingerprint=key_fp, intent_at=intent.at,
                                    finished_at=time.time(), resumed_after_interruption=resumed)
            result = m.CommandResult(command_id=intent.command_id or "", device_id=device_id, kind="wipe",
                                     outcome="ok", finished_at=receipt.finished_at,
                                     detail=m.to_builtins(receipt))
            state.outbox_put(result.command_id, signing.seal(state.device_key(), result))
            (state.root / "wiped-key.sha256").unlink(missing_ok=True)
            # before the step is recorded: a cut here repeats the entry rather than lose it
            state.audit("wiped", command_id=intent.command_id, resumed=resumed)
        _record(state, step, intent.command_id)
    return intent.command_id


def _stored_fingerprint(state: StateDir) -> str | None:
    try:
        return (state.root / "wiped-key.sha256").read_text().strip() or None
    except FileNotFoundError:
        return None
