"""One micro-batch from events to durable sealed documents: keys, seal, one `insert_many`.

This is the flush function behind the batcher. Transient failures (key service or MongoDB away) are
retried with backoff for as long as the encryptor runs; nothing in a batch is reported done before the
write concern confirmed it.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from pymongo.asynchronous.collection import AsyncCollection

from consumers import metrics
from consumers.messages import USER_SHREDDED, Rejected
from consumers.store import InsertOutcome, StoreUnavailable, insert_sealed
from pulseseal.envelope import DataKey, seal_many
from schemas import HealthEvent, canonical_json

log = logging.getLogger("pulseseal.encryptor")

T = TypeVar("T")
# Called with a flush's documents and what the insert did, before any of its messages is acked: the
# batch manifest (consumers/manifests.py) and the usage count are written there.
AfterStore = Callable[[Sequence[dict[str, Any]], InsertOutcome], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class EncryptKeys:
    """The answer of a key source: a current key per user, and the users whose keys were shredded."""

    keys: Mapping[str, DataKey]
    shredded: frozenset[str] = frozenset()


class KeysUnavailable(Exception):
    """The key service could not be reached or answered with a transient error."""


class KeySource(Protocol):
    """Where the encryptor gets current data keys (the key service client, or a fake in unit tests)."""

    async def encrypt_keys(self, user_ids: Collection[str]) -> EncryptKeys:
        """Current keys for `user_ids`.

        Raises:
            KeysUnavailable: transiently unable to answer; the caller retries.
        """
        ...


@dataclass(slots=True)
class MessageResult:
    """What happened to one message's events: counts, events to dead-letter, or "redeliver me"."""

    stored: int = 0
    duplicates: int = 0
    dead: list[Rejected] = field(default_factory=list)
    retry: bool = False
    failure: str | None = None
    """Set when the message itself could not be processed (the error's type name): redeliver it."""


@dataclass(slots=True)
class Backoff:
    """Exponential backoff with full jitter, capped."""

    initial_s: float = 0.1
    cap_s: float = 5.0
    attempt: int = 0

    def next_delay(self) -> float:
        """The next sleep, growing with each call."""
        ceiling = min(self.cap_s, self.initial_s * (2**self.attempt))
        self.attempt += 1
        return random.uniform(ceiling / 2, ceiling)


class Sealer:
    """Seal and store micro-batches; one instance per encryptor process.

    Args:
        keys: The key source.
        collection: `sealed_events`, with the write concern to honour.
        clock: The `sealed_at` clock (injectable for tests).
        after_store: Called after each insert, before the batch's results are returned.
    """

    def __init__(
        self,
        keys: KeySource,
        collection: AsyncCollection[dict[str, Any]],
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        after_store: AfterStore | None = None,
    ) -> None:
        self._keys = keys
        self._collection = collection
        self._clock = clock
        self._after_store = after_store

    async def flush(self, batches: Sequence[list[HealthEvent]]) -> list[MessageResult]:
        """Seal and durably store every event of `batches` (one list per message).

        Returns one `MessageResult` per message, in order. Retries transient failures until they pass
        (the batcher cancels this at shutdown; then nothing of the batch is acknowledged).
        """
        started = asyncio.get_running_loop().time()
        users = {event.user_id for batch in batches for event in batch}
        granted = await self._retry("key service", lambda: self._keys.encrypt_keys(users))
        now = self._clock()
        keys = granted.keys
        results = [MessageResult() for _ in batches]
        owner: list[int] | None = None
        if all(user in keys for user in users):
            # The usual case: every user has a key, nothing to set aside, no per-event bookkeeping.
            sealable = [event for batch in batches for event in batch]
            counts = [len(batch) for batch in batches]
        else:
            sealable, owner = self._set_aside_keyless(batches, granted, results)
            counts = _count_by_owner(owner, len(batches))
        docs = seal_many(sealable, keys, now=now)
        outcome = await self._retry("MongoDB", lambda: insert_sealed(self._collection, docs))
        if self._after_store is not None:
            await self._after_store(docs, outcome)
        if outcome.failed:
            owners = owner if owner is not None else [i for i, n in enumerate(counts) for _ in range(n)]
            for doc, index in zip(docs, owners, strict=True):
                if doc["_id"] in outcome.failed:
                    results[index].retry = True
        # Per message, a document counts as stored whether this insert wrote it or an earlier one did.
        for result, count in zip(results, counts, strict=True):
            result.stored = count
        elapsed = asyncio.get_running_loop().time() - started
        log.debug(
            "batch stored",
            extra={
                "events": len(docs),
                "new": outcome.stored,
                "duplicates": outcome.duplicates,
                "messages": len(batches),
                "ms": round(elapsed * 1000, 1),
            },
        )
        metrics.EVENTS_SEALED.inc(outcome.stored)
        metrics.DUPLICATES.inc(outcome.duplicates)
        metrics.BATCH_SIZE.observe(len(docs))
        metrics.FLUSH_SECONDS.observe(elapsed)
        return results

    @staticmethod
    def _set_aside_keyless(
        batches: Sequence[list[HealthEvent]], granted: EncryptKeys, results: list[MessageResult]
    ) -> tuple[list[HealthEvent], list[int]]:
        # The events that have a key, with the message each came from; the others become dead letters.
        sealable: list[HealthEvent] = []
        owner: list[int] = []
        for index, batch in enumerate(batches):
            for event in batch:
                if event.user_id in granted.keys:
                    sealable.append(event)
                    owner.append(index)
                    continue
                reason = (
                    "user's keys were destroyed (crypto-shredded)"
                    if event.user_id in granted.shredded
                    else "key service gave no key for this user"
                )
                results[index].dead.append(
                    Rejected(canonical_json(event), USER_SHREDDED, reason, event_id=event.event_id)
                )
        return sealable, owner

    async def _retry(self, what: str, operation: Callable[[], Awaitable[T]]) -> T:
        backoff = Backoff()
        while True:
            try:
                return await operation()
            except (KeysUnavailable, StoreUnavailable) as exc:
                delay = backoff.next_delay()
                metrics.TRANSIENT_FAILURES.labels(dependency=what).inc()
                log.warning("%s unavailable, retrying in %.1f s: %s", what, delay, exc)
                await asyncio.sleep(delay)


def _count_by_owner(owner: list[int], messages: int) -> list[int]:
    counts = [0] * messages
    for index in owner:
        counts[index] += 1
    return counts
