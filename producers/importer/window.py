"""Pipelined confirms with an in-order commit point.

Up to `max_in_flight` messages wait for their confirms at once (throughput), but a batch counts as done
only when it *and every batch before it* are confirmed (correctness of the checkpoint). A batch whose
publish failed is published again, with backoff, until the broker takes it or `retry_s` runs out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from producers.confirms import InOrderConfirms
from producers.importer.checkpoint import Checkpoint
from producers.publisher import PublishFailed
from pulseseal.retry import Backoff, retry
from pulseseal.topology import BATCH_ROUTING_KEY, NDJSON

# Steady, no jitter: one importer process, nothing to spread out.
_BACKOFF = Backoff(initial_s=0.2, cap_s=5.0, jitter=0.0)


class Sender(Protocol):
    """What the window needs of a publisher (`producers.publisher.Publisher` is one)."""

    async def publish(self, body: bytes, *, routing_key: str, content_type: str) -> None:
        """Publish and wait for the confirm; raise `PublishFailed` when there is none."""


class ImportAborted(Exception):
    """The broker did not take a batch within the retry time; the import stops at its checkpoint."""


@dataclass(frozen=True, slots=True)
class Batch:
    """One NDJSON message and the checkpoint that holds once it and all earlier ones are confirmed."""

    body: bytes
    events: int
    checkpoint: Checkpoint


class ConfirmWindow:
    """Publishes batches with many confirms outstanding and reports them confirmed in order
    (`producers.confirms.InOrderConfirms`); a failed batch is retried until `retry_s` runs out.

    Args:
        publisher: The confirmed publisher.
        max_in_flight: Unconfirmed batches at most; `submit` waits while the window is full.
        retry_s: How long a failed batch is retried before `ImportAborted`.
        on_confirmed: Called with each batch, in submission order, once it and all before it are in.
        on_retry: Called with a reason when a batch must be retried (to tell the user once).
        sleep: The backoff sleep (injectable for tests).
    """

    def __init__(
        self,
        publisher: Sender,
        *,
        max_in_flight: int,
        retry_s: float,
        on_confirmed: Callable[[Batch], None],
        on_retry: Callable[[str], None],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._publisher = publisher
        self._retry_s = retry_s
        self._on_retry = on_retry
        self._sleep = sleep

        async def confirmed(batch: Batch) -> None:
            on_confirmed(batch)

        self._confirms = InOrderConfirms(
            self._publish, max_in_flight=max_in_flight, on_confirmed=confirmed, on_failed=self._retry
        )

    async def submit(self, batch: Batch) -> None:
        """Start publishing `batch`, first waiting for the oldest confirms while the window is full.

        Raises:
            ImportAborted: an earlier batch could not be published within the retry time.
        """
        await self._confirms.submit(batch)

    async def drain(self) -> None:
        """Wait until every submitted batch is confirmed.

        Raises:
            ImportAborted: a batch could not be published within the retry time.
        """
        await self._confirms.drain()

    def abandon(self) -> None:
        """Stop waiting for outstanding batches (interrupt or abort); their events are not counted."""
        self._confirms.abandon()

    async def _retry(self, batch: Batch, failure: PublishFailed) -> None:
        self._on_retry(str(failure))
        try:
            await retry(
                lambda: self._publish(batch),
                on=lambda exc: isinstance(exc, PublishFailed),
                backoff=_BACKOFF,
                within_s=self._retry_s,
                sleep=self._sleep,
                failed=failure,
            )
        except PublishFailed as last:
            raise ImportAborted(
                f"RabbitMQ did not take the events for {self._retry_s:g} s ({last})"
            ) from None

    async def _publish(self, batch: Batch) -> None:
        await self._publisher.publish(batch.body, routing_key=BATCH_ROUTING_KEY, content_type=NDJSON)
