"""Group commit on its own: what is submitted at once is written together, in order, and each
submitter gets its own item's outcome."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import pytest

from kiosk.server.group_commit import GroupCommit

pytestmark = pytest.mark.timeout(30)


class Ledger:
    """A write that keeps what it was given, batch by batch, and refuses negative numbers."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.threads: set[int] = set()
        self.broken = False

    def write(self, items: Sequence[int]) -> list[int | Exception]:
        self.threads.add(threading.get_ident())
        if self.broken:
            raise OSError("disk full")
        self.batches.append(list(items))
        return [ValueError(f"{n} is negative") if n < 0 else n * 10 for n in items]


async def test_what_is_submitted_at_once_is_written_together_in_order_off_the_loop() -> None:
    ledger = Ledger()
    writer = GroupCommit(ledger.write, max_batch=40)
    results = await asyncio.gather(*(writer.submit(n) for n in range(100)))
    assert results == [n * 10 for n in range(100)]
    assert [n for batch in ledger.batches for n in batch] == list(range(100))  # each once, in order
    assert max(len(batch) for batch in ledger.batches) == 40 and writer.batches == len(ledger.batches) < 100
    assert threading.get_ident() not in ledger.threads


async def test_a_bad_item_fails_alone_and_a_failed_write_fails_its_whole_batch() -> None:
    ledger = Ledger()
    writer = GroupCommit(ledger.write)
    outcomes = await asyncio.gather(writer.submit(1), writer.submit(-2), writer.submit(3), return_exceptions=True)
    assert outcomes[0] == 10 and outcomes[2] == 30
    assert isinstance(outcomes[1], ValueError) and "negative" in str(outcomes[1])

    ledger.broken = True
    failed = await asyncio.gather(writer.submit(4), writer.submit(5), return_exceptions=True)
    assert all(isinstance(f, OSError) for f in failed)
    ledger.broken = False
    assert await writer.submit(6) == 60  # the writer goes on after a failed batch


async def test_a_submitter_that_gives_up_does_not_take_the_write_with_it() -> None:
    ledger = Ledger()
    writer = GroupCommit(ledger.write)
    impatient = asyncio.ensure_future(writer.submit(7))
    await asyncio.sleep(0)  # submitted
    impatient.cancel()
    await writer.drain()
    assert [7] in ledger.batches
