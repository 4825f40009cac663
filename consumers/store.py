"""Writing sealed documents: one unordered `insert_many` per micro-batch, duplicates count as stored."""

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
    """What one `insert_many` did: `failed` holds `_id`s the server refused for another reason,
    `duplicate_ids` those already stored (the batch manifest lists them as stored, docs/replay.md)."""

    stored: int = 0
    duplicates: int = 0
    failed: set[str] = field(default_factory=set)
    duplicate_ids: set[str] = field(default_factory=set)


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
        for error in details.get("writeErrors", []):
            if error.get("code") == DUPLICATE_KEY:
                outcome.duplicates += 1
                outcome.duplicate_ids.add(str(docs[error["index"]]["_id"]))
            else:
                outcome.failed.add(str(docs[error["index"]]["_id"]))
        return outcome
    except (ConnectionFailure, OperationFailure) as exc:
        raise StoreUnavailable(f"MongoDB unavailable ({type(exc).__name__})") from None
    except PyMongoError as exc:
        raise StoreUnavailable(f"MongoDB error ({type(exc).__name__})") from None
    return InsertOutcome(stored=len(result.inserted_ids))
