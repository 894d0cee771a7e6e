"""Tests for kiosk.protocol.wipe_journal: what a wipe still has to do after a power cut.

The journal is append-only, one JSON line per finished step. A power cut can tear the
last line; whatever is on disk, parse() must answer, and next_step() must name the
first step not yet done so the wipe resumes there.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kiosk.protocol import wipe_journal
from kiosk.protocol.machine import Transition
from kiosk.protocol.wipe_journal import (
    ORDER,
    Begin,
    Finished,
    Journal,
    JournalEntry,
    Perform,
    Record,
    Resume,
    StartJournal,
    WipeEvent,
    WipeStep,
    entry_line,
    step,
)

pytestmark = pytest.mark.timeout(120)

FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

CMD = "5b0e9f1e-1111-4000-8000-00000000abcd"


def journal_text(steps: list[WipeStep], command_id: str | None = CMD, start: float = 1000.0) -> str:
    return "".join(entry_line(JournalEntry(step, start + i, command_id)) for i, step in enumerate(steps))


def test_order_is_the_documented_sequence() -> None:
    assert ORDER == (
        WipeStep.INTENT, WipeStep.KEY_DESTROYED, WipeStep.DATA_DELETED, WipeStep.SETTINGS_RESET,
        WipeStep.RECEIPT_SIGNED,
    )
    assert [str(s) for s in ORDER] == ["intent", "key-destroyed", "data-deleted", "settings-reset", "receipt-signed"]


def test_empty_journal_has_nothing_to_do() -> None:
    for journal in (Journal(), wipe_journal.parse("")):
        assert not journal.started
        assert not journal.complete
        assert journal.intent is None
        assert journal.next_step() is None


def test_next_step_follows_the_order() -> None:
    for done in range(1, len(ORDER)):
        journal = wipe_journal.parse(journal_text(list(ORDER[:done])))
        assert journal.started and not journal.complete
        assert journal.next_step() is ORDER[done]
        assert journal.done == frozenset(ORDER[:done])


def test_complete_journal() -> None:
    journal = wipe_journal.parse(journal_text(list(ORDER)))
    assert journal.complete
    assert journal.next_step() is None
    assert journal.done == frozenset(ORDER)


def test_entries_keep_time_and_command_id() -> None:
    journal = wipe_journal.parse(journal_text([WipeStep.INTENT, WipeStep.KEY_DESTROYED], start=42.5))
    assert journal.entries == (
        JournalEntry(WipeStep.INTENT, 42.5, CMD),
        JournalEntry(WipeStep.KEY_DESTROYED, 43.5, CMD),
    )
    assert journal.intent == JournalEntry(WipeStep.INTENT, 42.5, CMD)


def test_wipe_without_a_command_id() -> None:
    # A wipe started locally (factory reset) has no command to answer.
    journal = wipe_journal.parse(journal_text([WipeStep.INTENT], command_id=None))
    assert journal.intent is not None and journal.intent.command_id is None
    assert journal.next_step() is WipeStep.KEY_DESTROYED


def test_entry_line_is_one_json_line() -> None:
    line = entry_line(JournalEntry(WipeStep.DATA_DELETED, 12.0, "c-1"))
    assert line.endswith("\n") and line.count("\n") == 1
    assert json.loads(line) == {"step": "data-deleted", "at": 12.0, "command_id": "c-1"}
    assert "\n" not in entry_line(JournalEntry(WipeStep.INTENT, 1.0, "evil\nid\u2028"))[:-1]


def test_torn_last_line_is_ignored() -> None:
    done = journal_text([WipeStep.INTENT, WipeStep.KEY_DESTROYED])
    next_line = entry_line(JournalEntry(WipeStep.DATA_DELETED, 2000.0, CMD))
    for cut in range(len(next_line) - 1):  # every tear short of the whole object
        journal = wipe_journal.parse(done + next_line[:cut])
        assert journal.done == {WipeStep.INTENT, WipeStep.KEY_DESTROYED}, cut
        assert journal.next_step() is WipeStep.DATA_DELETED


def test_line_written_but_newline_lost_still_counts() -> None:
    text = journal_text([WipeStep.INTENT]) + entry_line(JournalEntry(WipeStep.KEY_DESTROYED, 2.0, CMD)).rstrip("\n")
    assert wipe_journal.parse(text).next_step() is WipeStep.DATA_DELETED


@pytest.mark.parametrize(
    "line",
    [
        "hello",
        "{}",
        "[]",
        "null",
        '"intent"',
        "42",
        '{"step": "format-disk", "at": 1}',
        '{"step": "intent"}',
        '{"at": 1}',
        '{"step": "intent", "at": "noon"}',
        '{"step": "intent", "at": null}',
        '{"step": "intent", "at": [1]}',
        '{"step": ["intent"], "at": 1}',
        '{"step": null, "at": 1}',
        '{"step": "INTENT", "at": 1}',
        "\x00\x01\x02",
        '{"step": "intent", "at": 1',
    ],
)
def test_foreign_lines_are_ignored(line: str) -> None:
    text = journal_text([WipeStep.INTENT]) + line + "\n" + entry_line(JournalEntry(WipeStep.KEY_DESTROYED, 3.0, CMD))
    journal = wipe_journal.parse(text)
    assert [e.step for e in journal.entries] == [WipeStep.INTENT, WipeStep.KEY_DESTROYED]
    assert journal.next_step() is WipeStep.DATA_DELETED


def test_steps_out_of_order_resume_at_the_first_missing() -> None:
    journal = wipe_journal.parse(journal_text([WipeStep.INTENT, WipeStep.DATA_DELETED]))
    assert journal.next_step() is WipeStep.KEY_DESTROYED


def test_repeated_steps_count_once() -> None:
    steps = [WipeStep.INTENT, WipeStep.KEY_DESTROYED, WipeStep.KEY_DESTROYED, WipeStep.INTENT]
    journal = wipe_journal.parse(journal_text(steps))
    assert journal.done == {WipeStep.INTENT, WipeStep.KEY_DESTROYED}
    assert journal.next_step() is WipeStep.DATA_DELETED
    assert journal.intent is not None and journal.intent.at == 1000.0  # the first intent


def test_crlf_line_endings() -> None:
    text = journal_text([WipeStep.INTENT, WipeStep.KEY_DESTROYED]).replace("\n", "\r\n")
    assert wipe_journal.parse(text).next_step() is WipeStep.DATA_DELETED


def test_deeply_nested_foreign_line_is_ignored() -> None:
    text = journal_text([WipeStep.INTENT]) + "[" * 100_000 + "\n"
    assert wipe_journal.parse(text).next_step() is WipeStep.KEY_DESTROYED


# ------------------------------------------------------------------------- properties

command_ids = st.none() | st.text(max_size=40)
times = st.floats(allow_nan=False, allow_infinity=False, min_value=0, max_value=4e9)


@st.composite
def garbage_tails(draw: st.DrawFn, next_line: str) -> str:
    """What a power cut can leave after the last whole line: nothing, a torn line, or junk."""
    kind = draw(st.sampled_from(["none", "torn", "junk"]))
    if kind == "none":
        return ""
    if kind == "torn":
        return next_line[: draw(st.integers(0, len(next_line) - 2))]
    junk = draw(st.text(max_size=80) | st.binary(max_size=80).map(lambda b: b.decode("latin-1")))
    # Junk that happens to spell a valid entry line is not junk.
    return junk if not wipe_journal.parse(junk).entries else ""


@FAST
@given(st.integers(0, len(ORDER)), command_ids, times, st.data())
def test_next_step_is_the_first_missing_step(done: int, command_id: str | None, at: float, data: st.DataObject) -> None:
    lines = [entry_line(JournalEntry(step, at + i, command_id)) for i, step in enumerate(ORDER[:done])]
    next_line = entry_line(JournalEntry(ORDER[done], at + done, command_id)) if done < len(ORDER) else "{}\n"
    tail = data.draw(garbage_tails(next_line), label="tail")
    journal = wipe_journal.parse("".join(lines) + tail)
    assert [e.step for e in journal.entries] == list(ORDER[:done])
    assert all(e.command_id == command_id for e in journal.entries)
    expected = ORDER[done] if 0 < done < len(ORDER) else None
    assert journal.next_step() is expected
    assert journal.complete is (done == len(ORDER))
    assert journal.started is (done > 0)


@FAST
@given(st.text(max_size=300))
def test_parse_never_raises_on_random_text(text: str) -> None:
    journal = wipe_journal.parse(text)
    assert journal.next_step() is None or journal.next_step() in ORDER


# ------------------------------------------------------------------------- the machine


def test_begin_starts_a_new_journal_with_the_intent() -> None:
    old = wipe_journal.parse(journal_text(list(ORDER)))  # an old, completed wipe
    intent = JournalEntry(WipeStep.INTENT, 50.0, CMD)
    assert step(old, Begin(CMD), 50.0) == Transition(Journal((intent,)), (StartJournal(intent),))


def test_a_whole_wipe_asks_for_each_step_in_order_and_records_it() -> None:
    journal = step(Journal(), Begin(CMD), 0.0).state
    transition = step(journal, Resume(), 1.0)
    performed: list[WipeStep] = []
    while transition.actions:
        assert isinstance(transition.actions[-1], Perform)
        performed.append(transition.actions[-1].step)
        transition = step(transition.state, Finished(performed[-1]), float(len(performed)))
        assert transition.actions[0] == Record(JournalEntry(performed[-1], float(len(performed)), CMD))
        transition = Transition(transition.state, transition.actions[1:])
    assert performed == list(ORDER[1:])
    assert transition.state.complete


def test_resume_after_a_power_cut_asks_for_the_first_missing_step() -> None:
    journal = wipe_journal.parse(journal_text([WipeStep.INTENT, WipeStep.KEY_DESTROYED]))
    assert step(journal, Resume(), 9.0) == Transition(journal, (Perform(WipeStep.DATA_DELETED),))


@pytest.mark.parametrize("journal", [Journal(), wipe_journal.parse(journal_text(list(ORDER)))])
def test_nothing_to_resume_without_a_wipe_in_progress(journal: Journal) -> None:
    assert step(journal, Resume(), 1.0) == Transition(journal)


def test_a_step_finished_twice_or_out_of_order_changes_nothing() -> None:
    journal = wipe_journal.parse(journal_text([WipeStep.INTENT, WipeStep.KEY_DESTROYED]))
    assert step(journal, Finished(WipeStep.KEY_DESTROYED), 5.0) == Transition(journal)
    assert step(journal, Finished(WipeStep.RECEIPT_SIGNED), 5.0) == Transition(journal)
    assert step(Journal(), Finished(WipeStep.INTENT), 5.0) == Transition(Journal())


wipe_events = st.one_of(
    st.builds(Begin, st.text(max_size=8)), st.just(Resume()), st.builds(Finished, st.sampled_from(WipeStep)),
)


@FAST
@given(st.lists(st.tuples(wipe_events, times), max_size=30))
def test_any_events_keep_the_journal_what_its_file_says(events: list[tuple[WipeEvent, float]]) -> None:
    """The I/O layer writes exactly what the actions say; reading the file back gives the same journal."""
    journal, text = Journal(), ""
    for event, now in events:
        transition = step(journal, event, now)  # never raises
        for action in transition.actions:
            if isinstance(action, StartJournal):
                text = entry_line(action.entry)
            elif isinstance(action, Record):
                text += entry_line(action.entry)
        journal = transition.state
        assert wipe_journal.parse(text) == journal
        assert [a.step for a in transition.actions if isinstance(a, Perform)] == (
            [journal.next_step()] if isinstance(event, Resume | Finished) and transition.actions
            and journal.next_step() is not None else []
        )
