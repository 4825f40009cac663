"""Writing sealed documents: one unordered `insert_many` per micro-batch, duplicates count as stored.

When a batch probably repeats stored events (a redelivery after a broker restart or a crash, or the retry
of an insert whose answer was lost), the stored ones are looked up first and only the others are sent.
On FerretDB with PostgreSQL an `insert_many` that meets even one duplicate falls back to one transaction
per document (measured: 1,000 documents with one duplicate took 14 s instead of 2 s) — a redelivered
batch of thousands then outlasts the socket timeout, is retried, and never completes. The lookup is one
equality `find` per id: FerretDB serves `{_id: x}` from its index but answers `{_id: {$in: [...]}}` with a
scan of the whole collection.

A duplicate `_id` counts as "already stored" only when the stored document belongs to the same user: an
event id is chosen by the producer, so one user could otherwise send another user's future event id first
and have the victim's event counted as a duplicate and acknowledged without ever being stored. A stored
document of ANOTHER user makes the event a conflict, which the encryptor dead-letters (`id_conflict`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, ConnectionFailure, OperationFailure, PyMongoError

DUPLICATE_KEY = 11000
LOOKUPS_IN_FLIGHT = 16
"""Concurrent `_id` lookups of one batch: enough to hide the round trips, few enough for the pool."""


class StoreUnavailable(Exception):
    """MongoDB could not be reached or did not confirm the write; retry the whole batch later."""


@dataclass(slots=True)
class InsertOutcome:
    """What one `insert_many` did: `failed` holds `_id`s the server refused for another reason."""

    stored: int = 0
    duplicates: int = 0
    failed: set[str] = field(default_factory=set)
    conflicts: set[str] = field(default_factory=set)
    """`_id`s already stored for ANOTHER user: never acknowledge these as stored."""
    duplicate_ids: set[str] = field(default_factory=set)
    """`_id`s already stored for the same user (the batch manifest lists them as stored, docs/replay.md)."""
    found: list[dict[str, Any]] = field(default_factory=list)
    """The stored documents of `duplicate_ids` as looked up (one that vanished meanwhile is missing)."""


async def insert_sealed(
    collection: AsyncCollection[dict[str, Any]],
    docs: list[dict[str, Any]],
    *,
    look_up: Collection[str] = (),
) -> InsertOutcome:
    """Insert sealed documents unordered; an existing `_id` means the event is already stored.

    Args:
        collection: `sealed_events` with the write concern to honour.
        docs: Sealed documents (each `_id` is an event id).
        look_up: The `_id`s of `docs` that are probably stored already: those found are not sent again
            (see the module docstring).

    Raises:
        StoreUnavailable: the server is unreachable, timed out, or the write concern failed; nothing
            about this batch may be acknowledged.
    """
    if not docs:
        return InsertOutcome()
    if not look_up:
        return await _insert(collection, docs)
    stored = await _find(collection, list(look_up))
    outcome = await _insert(collection, [doc for doc in docs if str(doc["_id"]) not in stored])
    _sort_found(
        outcome, {str(doc["_id"]): str(doc["user_id"]) for doc in docs if doc["_id"] in stored}, stored
    )
    return outcome


async def _insert(collection: AsyncCollection[dict[str, Any]], docs: list[dict[str, Any]]) -> InsertOutcome:
    if not docs:
        return InsertOutcome()
    try:
        result = await collection.insert_many(docs, ordered=False)
    except BulkWriteError as exc:
        details = exc.details
        if details.get("writeConcernErrors"):
            raise StoreUnavailable("MongoDB did not confirm the write concern") from None
        outcome = InsertOutcome(stored=int(details.get("nInserted", 0)))
        duplicated: dict[str, str] = {}
        for error in details.get("writeErrors", []):
            doc = docs[error["index"]]
            if error.get("code") == DUPLICATE_KEY:
                duplicated[str(doc["_id"])] = str(doc["user_id"])
            else:
                outcome.failed.add(str(doc["_id"]))
        _sort_found(outcome, duplicated, await _find(collection, list(duplicated)))
        return outcome
    except (ConnectionFailure, OperationFailure) as exc:
        raise StoreUnavailable(f"MongoDB unavailable ({type(exc).__name__})") from None
    except PyMongoError as exc:
        raise StoreUnavailable(f"MongoDB error ({type(exc).__name__})") from None
    return InsertOutcome(stored=len(result.inserted_ids))


def _sort_found(outcome: InsertOutcome, users: dict[str, str], stored: dict[str, dict[str, Any]]) -> None:
    # `users`: _id → the user of the event we were given. Stored for the same user: a duplicate (one that
    # vanished meanwhile too: it was stored, then erased); for another: a conflict.
    for event_id, user_id in users.items():
        doc = stored.get(event_id)
        if doc is None or str(doc["user_id"]) == user_id:
            outcome.duplicates += 1
            outcome.duplicate_ids.add(event_id)
            if doc is not None:
                outcome.found.append(doc)
        else:
            outcome.conflicts.add(event_id)


async def _find(collection: AsyncCollection[dict[str, Any]], ids: list[str]) -> dict[str, dict[str, Any]]:
    """`_id` → stored document, for those of `ids` that are stored.

    Raises:
        StoreUnavailable: the lookup failed (the batch is retried as a whole).
    """
    found: dict[str, dict[str, Any]] = {}
    failures: list[PyMongoError] = []
    pending = iter(ids)

    async def look_up() -> None:
        for event_id in pending:  # shared: each id is taken by one of the lookups
            if failures:
                return
            try:
                doc = await collection.find_one({"_id": event_id})
            except PyMongoError as exc:
                failures.append(exc)
                return
            if doc is not None:
                found[event_id] = doc

    # The lookups end by themselves, never cancelled: PyMongo's async pool can be left waiting forever by
    # an operation cancelled while it waits for a connection (seen here: every later operation hung).
    await asyncio.gather(*(look_up() for _ in range(min(LOOKUPS_IN_FLIGHT, len(ids)))))
    if failures:
        raise StoreUnavailable(f"MongoDB error ({type(failures[0]).__name__})")
    return found
