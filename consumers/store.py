"""Writing sealed documents: one unordered `insert_many` per micro-batch, duplicates count as stored.

A duplicate `_id` counts as "already stored" only when the stored document belongs to the same user: an
event id is chosen by the producer, so one user could otherwise send another user's future event id first
and have the victim's event counted as a duplicate and acknowledged without ever being stored. A stored
document of ANOTHER user makes the event a conflict, which the encryptor dead-letters (`id_conflict`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, ConnectionFailure, OperationFailure, PyMongoError

DUPLICATE_KEY = 11000


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


async def insert_sealed(
    collection: AsyncCollection[dict[str, Any]], docs: list[dict[str, Any]]
) -> InsertOutcome:
    """Insert sealed documents unordered; an existing `_id` means the event is already stored.

    Args:
        collection: `sealed_events` with the write concern to honour.
        docs: Sealed documents (each `_id` is an event id).

    Raises:
        StoreUnavailable: the server is unreachable, timed out, or the write concern failed; nothing
            about this batch may be acknowledged.
    """
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
        owners = await _owners(collection, list(duplicated))
        for event_id, user_id in duplicated.items():
            if owners.get(event_id, user_id) == user_id:
                outcome.duplicates += 1
                outcome.duplicate_ids.add(event_id)
            else:
                outcome.conflicts.add(event_id)
        return outcome
    except (ConnectionFailure, OperationFailure) as exc:
        raise StoreUnavailable(f"MongoDB unavailable ({type(exc).__name__})") from None
    except PyMongoError as exc:
        raise StoreUnavailable(f"MongoDB error ({type(exc).__name__})") from None
    return InsertOutcome(stored=len(result.inserted_ids))


async def _owners(collection: AsyncCollection[dict[str, Any]], ids: list[str]) -> dict[str, str]:
    """`_id` → stored `user_id` for the given ids (a missing one was deleted meanwhile: not a conflict).

    Raises:
        StoreUnavailable: the lookup failed (the batch is retried as a whole).
    """
    if not ids:
        return {}
    try:
        cursor = collection.find({"_id": {"$in": ids}}, {"user_id": 1})
        return {str(doc["_id"]): str(doc["user_id"]) async for doc in cursor}
    except PyMongoError as exc:
        raise StoreUnavailable(f"MongoDB error ({type(exc).__name__})") from None
