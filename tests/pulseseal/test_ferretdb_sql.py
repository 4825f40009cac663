"""The store's indexes where the data rests: PostgreSQL's own catalogue and planner, behind FerretDB.

These run against the suite's FerretDB (PostgreSQL backend, `pulseseal services up`). On real MongoDB
(infra/compose.yaml) the replay find must use the `{user_id, occurred_at}` index instead; on FerretDB's
SQLite backend no index can serve it, and the test says so by failing.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
from psycopg import sql
from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection

from pulseseal import mongo
from pulseseal.ferretdb_sql import (
    FERRETDB_APPLICATION_NAME,
    GIN_FIELDS,
    PostgresTarget,
    StoreIndexError,
    child_env,
    force_custom_plans,
    gin_indexes,
    postgres_target,
)
from pulseseal.settings import Settings

pytestmark = pytest.mark.integration

USERS = 40
PER_USER = 250  # 10,000 documents: enough that PostgreSQL's planner prefers an index to a scan


@pytest.fixture
async def client(mongo_url: str) -> AsyncIterator[AsyncMongoClient[dict[str, Any]]]:
    mongo_client = mongo.connect(mongo_url)
    yield mongo_client
    await mongo_client.close()


@pytest.fixture
def target(ferretdb_postgresql: PostgresTarget | None) -> PostgresTarget:
    if ferretdb_postgresql is None:
        pytest.fail(
            "PULSESEAL_FERRETDB_BACKEND=sqlite: FerretDB on SQLite has no index a per-user find can use — "
            "run the suite on the default postgresql backend",
            pytrace=False,
        )
    return ferretdb_postgresql


def fresh(client: AsyncMongoClient[dict[str, Any]], mongo_db: str) -> AsyncCollection[dict[str, Any]]:
    """A collection of this test's own in the session's database (same indexes as `sealed_events`)."""
    return client[mongo_db].get_collection(f"sealed_{uuid.uuid4().hex[:10]}")


def documents(start: int = 0) -> list[dict[str, Any]]:
    """Sealed-shaped documents: USERS users with PER_USER events each."""
    base = datetime(2026, 1, 1, tzinfo=UTC)
    return [
        {
            "_id": str(uuid.UUID(int=start + u * PER_USER + i)),
            "user_id": f"user-{u}",
            "occurred_at": base + timedelta(minutes=i),
            "key_version": 1,
            "alg": "AES-256-GCM",
            "v": 1,
            "nonce": b"\0" * 12,
            "ciphertext": b"\1" * 64,
            "sealed_at": base,
        }
        for u in range(USERS)
        for i in range(PER_USER)
    ]


async def index_scans(target: PostgresTarget, schema: str, index: str) -> int:
    """How many times PostgreSQL has scanned `index` (pg_stat_user_indexes)."""
    async with await psycopg.AsyncConnection.connect(target.url, password=target.password()) as conn:
        row = await (
            await conn.execute(
                "SELECT idx_scan FROM pg_stat_user_indexes WHERE schemaname = %s AND indexrelname = %s",
                (schema, index),
            )
        ).fetchone()
    assert row is not None, f"no index {schema}.{index}"
    return int(str(row[0]))


def plan_nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """Every node of a PostgreSQL JSON plan, depth first."""
    nodes = [plan]
    for child in plan.get("Plans", []):
        nodes.extend(plan_nodes(child))
    return nodes


async def test_ensure_indexes_makes_valid_gin_indexes_idempotently(
    client: AsyncMongoClient[dict[str, Any]], mongo_db: str, target: PostgresTarget
) -> None:
    collection = fresh(client, mongo_db)
    await mongo.ensure_indexes(collection, postgresql=target)
    await mongo.ensure_indexes(collection, postgresql=target)  # a second encryptor starting
    indexes = await gin_indexes(target, mongo_db, collection.name)
    assert len(indexes) == len(GIN_FIELDS)
    assert all(index.valid for index in indexes)
    definitions = sorted(index.definition for index in indexes)
    assert "USING gin (((_jsonb -> '_id'::text)) jsonb_path_ops)" in definitions[0]
    assert "USING gin (((_jsonb -> 'user_id'::text)) jsonb_path_ops)" in definitions[1]


async def test_per_user_and_id_finds_use_the_gin_indexes_in_explain(
    client: AsyncMongoClient[dict[str, Any]], mongo_db: str, target: PostgresTarget
) -> None:
    collection = fresh(client, mongo_db)
    await mongo.ensure_indexes(collection, postgresql=target)
    await collection.insert_many(documents(), ordered=False)
    for query, index_field in (({"user_id": "user-7"}, "user_id"), ({"_id": str(uuid.UUID(int=5))}, "_id")):
        explained = await client[mongo_db].command("explain", {"find": collection.name, "filter": query})
        assert explained["filterPushdown"] is True
        nodes = plan_nodes(explained["queryPlanner"]["Plan"])
        used = [node.get("Index Name", "") for node in nodes if "Index" in node["Node Type"]]
        assert any(name.endswith(GIN_FIELDS[index_field]) for name in used), nodes


async def test_ferretdb_uses_the_indexes_after_its_statements_were_cached_without_them(
    client: AsyncMongoClient[dict[str, Any]], mongo_db: str, target: PostgresTarget
) -> None:
    """The trap found while measuring the store: FerretDB's cached statements must not keep a plan made before the index."""
    collection = fresh(client, mongo_db)
    await collection.create_index(mongo.USER_TIME_INDEX, name="user_id_occurred_at")  # FerretDB's own only
    await collection.insert_many(documents(), ordered=False)
    for i in range(12):  # past the 5 runs after which PostgreSQL may settle on a generic plan
        assert len(await collection.find({"user_id": f"user-{i % USERS}"}).to_list()) == PER_USER
    await mongo.ensure_indexes(collection, postgresql=target)
    (user_index,) = [
        i.name for i in await gin_indexes(target, mongo_db, collection.name) if "user_id" in i.name
    ]
    before = await index_scans(target, mongo_db, user_index)
    for i in range(12):
        assert len(await collection.find({"user_id": f"user-{i % USERS}"}).to_list()) == PER_USER
    # An idle session publishes its counters within PGSTAT_IDLE_INTERVAL (10 s) of its last query.
    for _ in range(100):
        if await index_scans(target, mongo_db, user_index) >= before + 12:
            break
        await asyncio.sleep(0.2)
    assert await index_scans(target, mongo_db, user_index) >= before + 12


async def test_indexes_come_back_when_the_collection_is_made_again(
    client: AsyncMongoClient[dict[str, Any]], mongo_db: str, target: PostgresTarget
) -> None:
    collection = fresh(client, mongo_db)
    await mongo.ensure_indexes(collection, postgresql=target)
    await collection.drop()  # FerretDB drops the table, and our indexes with it
    with pytest.raises(StoreIndexError, match="no collection"):
        await gin_indexes(target, mongo_db, collection.name)
    await mongo.ensure_indexes(collection, postgresql=target)
    assert [index.valid for index in await gin_indexes(target, mongo_db, collection.name)] == [True, True]


def test_the_password_file_is_read_only_when_connecting(tmp_path: Path) -> None:
    assert postgres_target(Settings(ferretdb_backend="sqlite")) is None
    missing = postgres_target(Settings(home=tmp_path))
    assert missing is not None  # MongoDB users with the default backend never call password()
    with pytest.raises(StoreIndexError, match="cannot read the PostgreSQL password file"):
        missing.password()
    (tmp_path / "pw").write_text("s3cret\n", encoding="utf-8")
    given = postgres_target(Settings(ferretdb_postgresql_password_file=tmp_path / "pw"))
    assert given is not None
    assert given.password() == "s3cret"
    assert "s3cret" not in repr(given)
    in_url = postgres_target(Settings(ferretdb_postgresql_url="postgresql://u:p@127.0.0.1:5433/db"))
    assert in_url is not None
    assert in_url.password() is None  # the URL's own is used
    # A child process with a home of its own reaches the same PostgreSQL with the same password.
    child = Settings(**{k.removeprefix("PULSESEAL_").lower(): v for k, v in child_env(given).items()})  # type: ignore[arg-type]
    assert postgres_target(child) == given
    assert child_env(None) == {"PULSESEAL_FERRETDB_BACKEND": "sqlite"}


async def test_a_database_without_custom_plans_gets_them_and_ferretdb_sessions_are_reset(
    target: PostgresTarget,
) -> None:
    """The plan reset for a PostgreSQL that is not ours (no force_custom_plan in its configuration)."""
    name = f"pulseseal_plans_{uuid.uuid4().hex[:8]}"
    admin = await psycopg.AsyncConnection.connect(target.url, password=target.password(), autocommit=True)
    async with admin:
        await admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            await admin.execute(
                sql.SQL("ALTER DATABASE {} SET plan_cache_mode = auto").format(sql.Identifier(name))
            )
            scratch = urlsplit(target.url)._replace(path=f"/{name}").geturl()
            # A FerretDB-like session that cached its plans under `auto`.
            ferret = await psycopg.AsyncConnection.connect(
                scratch,
                password=target.password(),
                autocommit=True,
                application_name=FERRETDB_APPLICATION_NAME,
            )
            async with await psycopg.AsyncConnection.connect(
                scratch, password=target.password(), autocommit=True
            ) as conn:
                await force_custom_plans(conn)
            async with await psycopg.AsyncConnection.connect(
                scratch, password=target.password(), autocommit=True
            ) as fresh:
                row = await (await fresh.execute("SHOW plan_cache_mode")).fetchone()
            assert row == ("force_custom_plan",)
            with pytest.raises(psycopg.OperationalError):  # terminated: its pool will open a new one
                await ferret.execute("SELECT 1")
            await ferret.close()
        finally:
            await admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


async def test_the_backend_is_read_from_ferretdb_and_a_sqlite_setting_on_postgresql_is_refused(
    client: AsyncMongoClient[dict[str, Any]], mongo_db: str, target: PostgresTarget
) -> None:
    collection = fresh(client, mongo_db)
    await collection.insert_one({"_id": "one", "user_id": "u"})
    assert await mongo.ferretdb_backend(collection) == "postgresql"
    with pytest.raises(StoreIndexError, match="PULSESEAL_FERRETDB_BACKEND=sqlite"):
        await mongo.ensure_indexes(collection, postgresql=None)
    assert await gin_indexes(target, mongo_db, collection.name) == []
