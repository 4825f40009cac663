"""One micro-batch from decoded messages to durable sealed documents and one complete result per message.

This is the flush behind the batcher: it takes the messages as `decode_message` left them (valid events,
rejected parts, or a decoding failure), gets every user's current key in one request, seals, writes with
one `insert_many`, and answers for each message what to do with it — ack after dead-lettering `dead`,
or hand it back (`retry`, `failure`). Transient failures (key service or MongoDB away) are retried with
backoff (`pulseseal.retry`) for as long as the encryptor runs; nothing in a batch is reported done before
the write concern confirmed it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from pymongo.asynchronous.collection import AsyncCollection

from consumers import metrics
from consumers.keys import SHREDDED, KeySource, KeysUnavailable
from consumers.messages import ID_CONFLICT, USER_SHREDDED, Decoded, Rejected
from consumers.store import InsertOutcome, StoreUnavailable, insert_sealed
from keyservice.client import EncryptKeys
from pulseseal.envelope import seal_many
from pulseseal.retry import Backoff, Sleep, retry
from schemas import HealthEvent, canonical_json

log = logging.getLogger("pulseseal.encryptor")

T = TypeVar("T")
# Called with a flush's documents and what the insert did, before any of its messages is acked: the
# batch manifest (consumers/manifests.py) and the usage count are written there.
AfterStore = Callable[[Sequence[dict[str, Any]], InsertOutcome], Awaitable[None]]

# Until the dependency is back: the batch waits, its messages stay unacknowledged (and in the queue).
FLUSH_BACKOFF = Backoff(initial_s=0.1, cap_s=5.0, jitter=0.5)


@dataclass(slots=True)
class MessageResult:
    """What to do with one message: its counts, what to dead-letter, or "redeliver me"."""

    stored: int = 0
    duplicates: int = 0
    dead: list[Rejected] = field(default_factory=list)
    """The message's invalid parts first, then the events of users without a key; dead-letter, then ack."""
    retry: bool = False
    """MongoDB refused some of its events: hand it back."""
    failure: str | None = None
    """The message itself could not be decoded (the error's type name): hand it back."""


class Sealer:
    """Seal and store micro-batches; one instance per encryptor process.

    Args:
        keys: The key source.
        collection: `sealed_events`, with the write concern to honour.
        clock: The `sealed_at` clock (injectable for tests).
        after_store: Called after each insert, before the batch's results are returned.
        sleep: The backoff's sleep (injectable for tests).
    """

    def __init__(
        self,
        keys: KeySource,
        collection: AsyncCollection[dict[str, Any]],
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        after_store: AfterStore | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._keys = keys
        self._collection = collection
        self._clock = clock
        self._after_store = after_store
        self._sleep = sleep

    async def flush(self, messages: Sequence[Decoded]) -> list[MessageResult]:
        """Seal and durably store every valid event of `messages`; one complete result per message.

        Retries transient failures until they pass (the batcher cancels this at shutdown; then nothing of
        the batch is acknowledged).
        """
        started = asyncio.get_running_loop().time()
        results = [MessageResult(dead=list(m.rejected), failure=m.failure) for m in messages]
        batches = [message.events for message in messages]
        users = {event.user_id for batch in batches for event in batch}
        granted = await self._retry("key service", lambda: self._keys.encrypt_keys(users))
        now = self._clock()
        keys = granted.keys
        owner: list[int] | None = None
        if all(user in keys for user in users):
            # The usual case: every user has a key, nothing to set aside, no per-event bookkeeping.
            sealable = [event for batch in batches for event in batch]
            counts = [len(batch) for batch in batches]
        else:
            sealable, owner = _set_aside_keyless(batches, granted, results)
            counts = _count_by_owner(owner, len(batches))
        docs = seal_many(sealable, keys, now=now)
        owners = owner if owner is not None else [i for i, n in enumerate(counts) for _ in range(n)]
        outcome = await self._store(docs, _ids_of_redelivered(docs, owners, messages))
        if self._after_store is not None:
            await self._after_store(docs, outcome)
        if outcome.failed or outcome.conflicts:
            for doc, event, index in zip(docs, sealable, owners, strict=True):
                if doc["_id"] in outcome.failed:
                    results[index].retry = True
                elif doc["_id"] in outcome.conflicts:
                    counts[index] -= 1
                    results[index].dead.append(
                        Rejected(
                            canonical_json(event),
                            ID_CONFLICT,
                            "event_id is already stored for another user",
                            event_id=event.event_id,
                        )
                    )
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
                "messages": len(messages),
                "ms": round(elapsed * 1000, 1),
            },
        )
        metrics.EVENTS_SEALED.inc(outcome.stored)
        metrics.DUPLICATES.inc(outcome.duplicates)
        metrics.BATCH_SIZE.observe(len(docs))
        metrics.FLUSH_SECONDS.observe(elapsed)
        return results

    async def _store(self, docs: list[dict[str, Any]], redelivered: set[str]) -> InsertOutcome:
        """Insert `docs`, looking up first those of redelivered messages — and all of them on a retry,
        since the failed attempt may have been written without its answer arriving (consumers/store.py)."""
        attempts = 0

        async def attempt() -> InsertOutcome:
            nonlocal attempts
            attempts += 1
            look_up = redelivered if attempts == 1 else {str(doc["_id"]) for doc in docs}
            return await insert_sealed(self._collection, docs, look_up=look_up)

        return await self._retry("MongoDB", attempt)

    async def _retry(self, what: str, operation: Callable[[], Awaitable[T]]) -> T:
        def note(exc: BaseException, delay: float) -> None:
            metrics.TRANSIENT_FAILURES.labels(dependency=what).inc()
            log.warning("%s unavailable, retrying in %.1f s: %s", what, delay, exc)

        return await retry(
            operation,
            on=lambda exc: isinstance(exc, KeysUnavailable | StoreUnavailable),
            backoff=FLUSH_BACKOFF,
            sleep=self._sleep,
            before_sleep=note,
        )


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
                if granted.refused.get(event.user_id) == SHREDDED
                else "key service gave no key for this user"
            )
            results[index].dead.append(
                Rejected(canonical_json(event), USER_SHREDDED, reason, event_id=event.event_id)
            )
    return sealable, owner


def _ids_of_redelivered(
    docs: Sequence[dict[str, Any]], owners: Sequence[int], messages: Sequence[Decoded]
) -> set[str]:
    if not any(message.redelivered for message in messages):
        return set()
    return {str(doc["_id"]) for doc, index in zip(docs, owners, strict=True) if messages[index].redelivered}


def _count_by_owner(owner: list[int], messages: int) -> list[int]:
    counts = [0] * messages
    for index in owner:
        counts[index] += 1
    return counts
