"""The MongoDB side shared by the encryptor (writes) and replay (reads): one collection, its indexes.

On real MongoDB the `{user_id, occurred_at}` index serves replay. On FerretDB with PostgreSQL it cannot
(FerretDB filters by JSONB containment, which B-trees do not serve), so `ensure_indexes` also makes GIN
indexes in SQL (`pulseseal.ferretdb_sql`). Every caller that makes the collection calls `ensure_indexes`.
"""

from __future__ import annotations

from typing import Any

import pymongo
from pymongo import ASCENDING, AsyncMongoClient, WriteConcern
from pymongo.asynchronous.collection import AsyncCollection

from pulseseal.ferretdb_sql import PostgresTarget, StoreIndexError, ensure_gin_indexes
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


async def ferretdb_backend(collection: AsyncCollection[dict[str, Any]]) -> str | None:
    """`postgresql` or `sqlite` when the server is FerretDB (the collection must exist), None on MongoDB.

    FerretDB adds `ferretdbVersion` to `buildInfo`; its `explain` hands back the backend's own plan: a
    PostgreSQL plan tree (a document with `Node Type`) or SQLite's `EXPLAIN QUERY PLAN` lines (a list).
    """
    info = await collection.database.client.admin.command("buildInfo")
    if "ferretdbVersion" not in info:
        return None
    explained = await collection.database.command("explain", {"find": collection.name, "filter": {}})
    plan = explained.get("queryPlanner", {}).get("Plan")
    return "postgresql" if isinstance(plan, dict) and "Node Type" in plan else "sqlite"


async def ensure_indexes(
    collection: AsyncCollection[dict[str, Any]], *, postgresql: PostgresTarget | None
) -> None:
    """Create `{user_id: 1, occurred_at: 1}` and, on FerretDB with PostgreSQL, the GIN indexes (idempotent).

    Args:
        collection: `sealed_events` (made by this call when it does not exist).
        postgresql: FerretDB's PostgreSQL (`ferretdb_sql.postgres_target(settings)`), or None when
            configured for SQLite. Used only when the server turns out to be FerretDB on PostgreSQL:
            MongoDB and FerretDB on SQLite need nothing more.

    Raises:
        StoreIndexError: FerretDB runs on PostgreSQL and PulseSeal is set up for SQLite, or its
            PostgreSQL cannot be reached (`PostgresUnreachable`), or the indexes cannot be made.
    """
    await collection.create_index(USER_TIME_INDEX, name="user_id_occurred_at")
    if await ferretdb_backend(collection) != "postgresql":
        return
    if postgresql is None:
        raise StoreIndexError(
            "FerretDB runs on PostgreSQL but PULSESEAL_FERRETDB_BACKEND=sqlite: PulseSeal cannot make the "
            "indexes replay needs — set PULSESEAL_FERRETDB_BACKEND=postgresql"
        )
    await ensure_gin_indexes(postgresql, collection.database.name, collection.name)


async def reachable(collection: AsyncCollection[dict[str, Any]], *, timeout_s: float = 1.5) -> bool:
    """Whether the server answers a `ping` within `timeout_s` (readiness probes; raises what PyMongo raises
    when it does not).

    PyMongo ends the ping itself at `timeout_s` (its client-side operation timeout), so that a prober's
    own timeout never has to cancel it: an operation cancelled while it waits for a connection can leave
    PyMongo's async pool waiting forever (seen here: the encryptor's inserts hung after MongoDB came back).
    """
    with pymongo.timeout(timeout_s):
        reply = await collection.database.command("ping")
    return bool(reply.get("ok"))
