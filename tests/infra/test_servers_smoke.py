"""Smoke tests of the three real servers that `pulseseal services up` provides.

They prove what the pipeline relies on: persistent messages and quorum queues on RabbitMQ, an AOF-backed
key-store Redis, and from the MongoDB-compatible server: duplicate `_id` → 11000 (single and unordered
bulk inserts, which is how "storing an event twice leaves one document" works) and date range queries.
Every test uses its own uniquely named queue, key or database and removes it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import aio_pika
import pytest
import redis.asyncio as aioredis
from bson import Binary
from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, DuplicateKeyError
from pymongo.write_concern import WriteConcern

pytestmark = pytest.mark.integration

Doc = dict[str, object]


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


async def _get_one(queue: aio_pika.abc.AbstractQueue) -> aio_pika.abc.AbstractIncomingMessage:
    for _ in range(50):
        message = await queue.get(no_ack=False, fail=False)
        if message is not None:
            return message
        await asyncio.sleep(0.1)
    raise AssertionError(f"no message arrived on {queue.name} within 5 s")


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
async def test_rabbitmq_round_trips_a_persistent_message(amqp_url: str, queue_type: str) -> None:
    body = uuid.uuid4().bytes
    connection = await aio_pika.connect(amqp_url, timeout=10)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        if queue_type == "quorum":  # quorum queues cannot be auto-deleted: deleted in `finally`
            queue = await channel.declare_queue(
                unique("pulseseal.smoke."), durable=True, arguments={"x-queue-type": "quorum"}
            )
        else:
            queue = await channel.declare_queue(unique("pulseseal.smoke."), auto_delete=True)
        try:
            await channel.default_exchange.publish(
                aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key=queue.name,
            )
            message = await _get_one(queue)
            await message.ack()
        finally:
            await queue.delete(if_unused=False, if_empty=False)

    assert message.body == body
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT


async def test_keystore_redis_set_get_and_aof(keystore_redis_url: str) -> None:
    client = aioredis.Redis.from_url(keystore_redis_url)
    key = unique("pulseseal:smoke:")
    try:
        await client.set(key, b"\x00value", ex=60)
        assert await client.get(key) == b"\x00value"
        assert await client.config_get("appendonly") == {"appendonly": "yes"}
        fsync = await client.config_get("appendfsync")
        assert fsync["appendfsync"] in {"everysec", "always"}
    finally:
        await client.delete(key)
        await client.aclose()


@pytest.fixture
async def collection(mongo_url: str) -> AsyncIterator[AsyncCollection[Doc]]:
    """A collection in a database of its own, journaled writes; the database is dropped afterwards."""
    client: AsyncMongoClient[Doc] = AsyncMongoClient(mongo_url, tz_aware=True, serverSelectionTimeoutMS=5000)
    name = unique("pulseseal_smoke_")
    try:
        yield client[name].get_collection("sealed_events", write_concern=WriteConcern(j=True))
    finally:
        await client.drop_database(name)
        await client.close()


def _sealed(event_id: str, occurred_at: datetime) -> Doc:
    return {
        "_id": event_id,
        "user_id": "user-0001",
        "occurred_at": occurred_at,
        "nonce": Binary(bytes(12)),
        "ciphertext": Binary(bytes(300)),
    }


async def test_mongo_duplicate_id_is_error_11000(collection: AsyncCollection[Doc]) -> None:
    now = datetime.now(UTC)
    await collection.insert_one(_sealed("a", now))

    with pytest.raises(DuplicateKeyError) as caught:
        await collection.insert_one(_sealed("a", now))

    assert caught.value.code == 11000


async def test_mongo_unordered_bulk_insert_keeps_going_past_duplicates(
    collection: AsyncCollection[Doc],
) -> None:
    now = datetime.now(UTC)
    await collection.insert_one(_sealed("b", now))

    with pytest.raises(BulkWriteError) as caught:
        await collection.insert_many([_sealed(i, now) for i in ("a", "b", "c")], ordered=False)

    details = caught.value.details
    assert [error["code"] for error in details["writeErrors"]] == [11000]
    assert details["writeErrors"][0]["index"] == 1
    assert details["nInserted"] == 2
    assert sorted([str(doc["_id"]) async for doc in collection.find({}, {"_id": 1})]) == ["a", "b", "c"]


async def test_mongo_range_query_on_occurred_at(collection: AsyncCollection[Doc]) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    await collection.insert_many([_sealed(f"e{i}", start + timedelta(hours=i)) for i in range(6)])

    found = [
        doc
        async for doc in collection.find(
            {"occurred_at": {"$gte": start + timedelta(hours=2), "$lt": start + timedelta(hours=5)}}
        ).sort("occurred_at", 1)
    ]

    assert [doc["_id"] for doc in found] == ["e2", "e3", "e4"]
    assert found[0]["occurred_at"] == start + timedelta(hours=2)
    assert found[0]["nonce"] == bytes(12)
