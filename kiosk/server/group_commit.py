"""Group commit: writes that arrive while one batch is being written go together in the next.

Written one at a time on the event loop, fifty commands sent at once queue behind each
other, each paying its own transaction, and every connected unit waits meanwhile. Here
the writes run in a worker thread, one batch at a time, and whatever was submitted while
a batch was being written becomes the next batch, written by one call (one transaction).
Items are written in the order they were submitted, so a hash-chained audit log appended
to by the writer stays one chain in that order, and a unit's acknowledgement is written
before its result. Each submitter gets its own item's outcome: one bad item does not fail
the others; an error of the write itself fails the whole batch.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Final, Generic, TypeVar

log = logging.getLogger("kiosk.server.group_commit")

T = TypeVar("T")
R = TypeVar("R")

#: Most items one write takes: bounds one transaction's length, so a huge burst still
#: commits (and answers its first submitters) in steps.
MAX_BATCH: Final = 500


class GroupCommit(Generic[T, R]):
    """``write(items)`` returns one result per item, in order: a value, or the exception for it."""

    def __init__(self, write: Callable[[Sequence[T]], Sequence[R | Exception]], max_batch: int = MAX_BATCH) -> None:
        self._write = write
        self._max_batch = max_batch
        self._waiting: list[tuple[T, asyncio.Future[R]]] = []
        self._writer: asyncio.Task[None] | None = None
        self.batches = 0  # written so far, for tests and figures

    async def submit(self, item: T) -> R:
        """Write ``item`` with whatever else is waiting; returns once it is committed."""
        (future,) = self.enqueue([item])
        return await asyncio.shield(future)  # a caller that gives up does not take the write with it

    async def submit_many(self, items: Sequence[T]) -> list[R | BaseException]:
        """:meth:`submit` for many items at once, in this order: each one's value or exception, once
        all are committed (one waiter for all of them: a mass operation's thousand commands)."""
        return await asyncio.shield(asyncio.gather(*self.enqueue(items), return_exceptions=True))

    def enqueue(self, items: Sequence[T]) -> list[asyncio.Future[R]]:
        """Submit without waiting: a future per item, kept by the writer until it is written."""
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[R]] = [loop.create_future() for _ in items]
        self._waiting.extend(zip(items, futures, strict=True))
        if self._writer is None:
            self._writer = asyncio.create_task(self._drain(), name="group-commit")
        return futures

    async def _drain(self) -> None:
        try:
            while self._waiting:
                batch = self._waiting[:self._max_batch]
                del self._waiting[:self._max_batch]
                try:
                    results = await asyncio.to_thread(self._write, [item for item, _ in batch])
                except Exception as exc:  # noqa: BLE001 (any failure of the write fails its batch, not the writer)
                    log.warning("a batch of %d writes failed: %s", len(batch), exc)
                    results = [exc] * len(batch)
                self.batches += 1
                for (_, future), result in zip(batch, results, strict=True):
                    if future.done():
                        continue
                    if isinstance(result, Exception):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        finally:
            self._writer = None

    async def drain(self) -> None:
        """Wait until everything submitted so far is written (at shutdown)."""
        while self._writer is not None:
            await asyncio.shield(self._writer)
