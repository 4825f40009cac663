"""The MongoDB side shared by the encryptor (writes) and replay (reads): one collection, one index."""

from __future__ import annotations

from typing import Any

from pymongo import ASCENDING, AsyncMongoClient, WriteConcern
from pymongo.asynchronous.collection import AsyncCollection

from pulseseal.manifest import MANIFEST_COLLECTION

SEALED_COLLECTION = "sealed_events"
USER_TIME_INDEX = [("user_id", ASCENDING), ("occurred_at", ASCENDING)]

# `journaled` is the default: an ack to the broker means the document survives a server crash.
WRITE_CONCERNS = {
    "journaled": WriteConcern(w=1, j=True),
    "majority": WriteConcern(w="majority", j=True),
    "acknowledged": WriteConcern(w=1),
}


def connect(url: str, *, timeout_ms: int = 5000) -> AsyncMongoClient[dict[str, Any]]:
    """An async client that fails fast (seconds, not the 30 s default) when the server is away.

    The encryptor retries on its own schedule, so a short server-selection timeout only makes the
    outage visible sooner; it never drops anything.
    """
    return AsyncMongoClient(
        url,
        serverSelectionTimeoutMS=timeout_ms,
        connectTimeoutMS=timeout_ms,
        socketTimeoutMS=max(timeout_ms * 6, 30_000),
        tz_aware=True,
        appname="pulseseal",
    )


def sealed_events(
    client: AsyncMongoClient[dict[str, Any]], db: str, *, write_concern: str = "journaled"
) -> AsyncCollection[dict[str, Any]]:
    """The `sealed_events` collection with the configured write concern."""
    return client[db].get_collection(SEALED_COLLECTION, write_concern=WRITE_CONCERNS[write_concern])


def seal_manifests(
    client: AsyncMongoClient[dict[str, Any]], db: str, *, write_concern: str = "journaled"
) -> AsyncCollection[dict[str, Any]]:
    """The `seal_manifests` collection (docs/replay.md), with the write concern of the sealed documents."""
    return client[db].get_collection(MANIFEST_COLLECTION, write_concern=WRITE_CONCERNS[write_concern])


async def ensure_indexes(collection: AsyncCollection[dict[str, Any]]) -> None:
    """Create `{user_id: 1, occurred_at: 1}` if it is missing (idempotent)."""
    await collection.create_index(USER_TIME_INDEX, name="user_id_occurred_at")
