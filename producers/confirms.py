"""Pipelined publisher confirms, settled in order: the one confirm window of the importer and the redrive.

Up to `max_in_flight` publishes wait for their confirms at once (throughput), but an item counts as done
only when it *and every item before it* are confirmed — the importer's checkpoint and the redrive's acks
of dead letters both depend on that order. A failed publish goes to `on_failed`, which may publish it
again (the importer retries) or raise (the redrive stops; what was settled stays settled).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Generic, TypeVar

from producers.publisher import PublishFailed

T = TypeVar("T")


class InOrderConfirms(Generic[T]):
    """Publishes items with many confirms outstanding and settles them in submission order.

    Args:
        publish: Publishes one item and returns once the broker confirmed it (raises `PublishFailed`).
        max_in_flight: Unconfirmed items at most; `submit` waits for the oldest while the window is full.
        on_confirmed: Called with each item, in submission order, once it and all before it are in.
        on_failed: Called with an item whose publish failed, before anything after it settles; returns
            once the item is in after all, or raises (default: re-raise the failure).
    """

    def __init__(
        self,
        publish: Callable[[T], Coroutine[Any, Any, None]],
        *,
        max_in_flight: int,
        on_confirmed: Callable[[T], Awaitable[None]],
        on_failed: Callable[[T, PublishFailed], Awaitable[None]] | None = None,
    ) -> None:
        self._publish = publish
        self._max_in_flight = max_in_flight
        self._on_confirmed = on_confirmed
        self._on_failed = on_failed
        self._pending: deque[tuple[T, asyncio.Task[None]]] = deque()
        self.submitted = 0
        self.settled = 0

    async def submit(self, item: T) -> None:
        """Start publishing `item`, first settling the oldest while the window is full.

        Raises:
            BaseException: what `on_failed` or `on_confirmed` raised for an earlier item.
        """
        while len(self._pending) >= self._max_in_flight:
            await self._settle_oldest()
        self._pending.append((item, asyncio.create_task(self._publish(item))))
        self.submitted += 1
        # Let the event loop read confirms that arrived while the caller was busy.
        await asyncio.sleep(0)

    async def drain(self) -> None:
        """Settle every submitted item.

        Raises:
            BaseException: what `on_failed` or `on_confirmed` raised.
        """
        while self._pending:
            await self._settle_oldest()

    def abandon(self) -> None:
        """Stop waiting for outstanding items (interrupt or abort); they are not settled."""
        for _, task in self._pending:
            if task.done() and not task.cancelled():
                task.exception()  # retrieved, so asyncio does not report it as lost
            task.cancel()
        self._pending.clear()

    async def _settle_oldest(self) -> None:
        item, task = self._pending[0]
        try:
            await task
        except PublishFailed as exc:
            if self._on_failed is None:
                raise
            await self._on_failed(item, exc)
        self._pending.popleft()
        await self._on_confirmed(item)
        self.settled += 1
