"""A micro-batcher: many concurrent submitters, one flusher, each submitter told when its part is done.

FastStream's RabbitMQ subscriber has no batch mode, but aio-pika runs one handler task per delivered
message (up to the prefetch). So each handler submits its message here and awaits the result; the
flusher collects submissions until `max_items` are waiting, `max_delay_s` has passed since the first,
or every message the broker will hand us is already waiting — then flushes them together. The handler
acks only after its own result arrives, so a crash anywhere before that leaves the message
unacknowledged and the broker redelivers it.

Up to `max_concurrent` flushes run at once: while one batch waits for the database, the next is already
being prepared (decoded, sealed, encoded) and sent, so a database that is the slowest stage never sits
idle between two batches. Every submitter still gets the result of its own batch only, so an ack never
depends on another batch, and the order in which batches finish does not matter.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class BatcherClosed(Exception):
    """The batcher is shutting down and did not take (or could not finish) this submission."""


@dataclass(slots=True)
class _Submission(Generic[T, R]):
    items: T
    size: int
    submitted_at: float
    future: asyncio.Future[R] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


FlushFn = Callable[[Sequence[T]], Awaitable[Sequence[R]]]


class MicroBatcher(Generic[T, R]):
    """Group submissions into batches and hand each submitter its own result.

    Args:
        flush: Called with the submitted items of one batch, in order; returns one result per item.
            If it raises, every submitter of that batch gets the exception.
        max_items: Flush once this many items (the `size` of submissions) are waiting.
        max_delay_s: Flush this long after the first submission of a batch at the latest.
        max_waiting: Flush at once when this many submissions are waiting (set it to the prefetch:
            then no further message can arrive before one is acknowledged).
        max_concurrent: Flushes in progress at most.
    """

    def __init__(
        self,
        flush: FlushFn[T, R],
        *,
        max_items: int,
        max_delay_s: float,
        max_waiting: int,
        max_concurrent: int = 1,
    ) -> None:
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1")
        self._flush = flush
        self._max_items = max_items
        self._max_delay_s = max_delay_s
        self._max_waiting = max_waiting
        self._waiting: list[_Submission[T, R]] = []
        self._waiting_items = 0
        self._wakeup = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._slots = asyncio.Semaphore(max_concurrent)
        self._flushing: set[asyncio.Task[None]] = set()

    @property
    def waiting(self) -> int:
        """Submissions not yet flushed."""
        return len(self._waiting)

    def start(self) -> None:
        """Start the flusher task."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="pulseseal-flusher")

    async def submit(self, items: T, size: int) -> R:
        """Add one message's items and wait until the batch holding them was flushed.

        Raises:
            BatcherClosed: the batcher is closing and did not take the items.
            Exception: whatever the flush function raised for this batch.
        """
        if self._closing:
            raise BatcherClosed("the encryptor is shutting down")
        submission: _Submission[T, R] = _Submission(items, size, asyncio.get_running_loop().time())
        self._waiting.append(submission)
        self._waiting_items += size
        if self._waiting_items >= self._max_items or len(self._waiting) >= self._max_waiting:
            self._wakeup.set()
        elif len(self._waiting) == 1:
            self._wakeup.set()  # let the flusher start this batch's clock
        return await submission.future

    async def close(self, timeout_s: float) -> None:
        """Flush what is waiting (at once, without the delay) and stop, giving up after `timeout_s`.

        Submissions still unflushed at the deadline get `BatcherClosed`, so their messages are not
        acknowledged and will be redelivered.
        """
        self._closing = True
        self._wakeup.set()
        if self._task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._fail_waiting(BatcherClosed("the encryptor stopped before this batch was written"))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                while not self._waiting:
                    if self._closing:
                        # Whatever is still being written finishes before the batcher reports closed.
                        await asyncio.gather(*self._flushing)
                        return
                    self._wakeup.clear()
                    await self._wakeup.wait()
                # The clock of a batch starts with its oldest submission, which may have waited
                # through the previous flush already.
                deadline = self._waiting[0].submitted_at + self._max_delay_s
                while not self._full() and not self._closing:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    self._wakeup.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wakeup.wait(), remaining)
                # The batch is taken only once a flush may start: submissions that arrive while every
                # slot is busy still join it.
                await self._slots.acquire()
                batch = self._take()
                if not batch:
                    self._slots.release()
                    continue
                task = asyncio.create_task(self._flush_batch(batch), name="pulseseal-flush")
                self._flushing.add(task)
                task.add_done_callback(self._flush_done)
        except asyncio.CancelledError:
            for task in list(self._flushing):
                task.cancel()
            await asyncio.gather(*self._flushing, return_exceptions=True)
            self._fail_waiting(BatcherClosed("the encryptor stopped before this batch was written"))
            raise

    def _flush_done(self, task: asyncio.Task[None]) -> None:
        self._flushing.discard(task)
        self._slots.release()

    def _full(self) -> bool:
        return self._waiting_items >= self._max_items or len(self._waiting) >= self._max_waiting

    def _take(self) -> list[_Submission[T, R]]:
        # Take whole submissions from the front until the batch holds `max_items`: a backlog that built
        # up during a slow flush is written in bounded batches, not one huge insert.
        taken = items = 0
        while taken < len(self._waiting) and items < self._max_items:
            items += self._waiting[taken].size
            taken += 1
        batch, self._waiting = self._waiting[:taken], self._waiting[taken:]
        self._waiting_items -= items
        return batch

    async def _flush_batch(self, batch: list[_Submission[T, R]]) -> None:
        try:
            results = await self._flush([s.items for s in batch])
        except asyncio.CancelledError:
            for submission in batch:
                if not submission.future.done():
                    submission.future.set_exception(BatcherClosed("flush cancelled at shutdown"))
            raise
        except Exception as exc:  # noqa: BLE001 - handed to every submitter of the batch, who nacks its message
            for submission in batch:
                if not submission.future.done():
                    submission.future.set_exception(exc)
            return
        for submission, result in zip(batch, results, strict=True):
            if not submission.future.done():
                submission.future.set_result(result)

    def _fail_waiting(self, exc: Exception) -> None:
        waiting, self._waiting, self._waiting_items = self._waiting, [], 0
        for submission in waiting:
            if not submission.future.done():
                submission.future.set_exception(exc)
