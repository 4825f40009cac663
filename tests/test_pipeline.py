"""The whole pipeline with real processes: queue → encryptor → key service → MongoDB.

Every test asserts exact counts. The fault tests stop real servers (FerretDB, RabbitMQ) and real
processes (the key service, the encryptor) in the middle of a stream and check that nothing is lost,
nothing is stored twice and nothing lands in the dead-letter queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import bson
import pytest
from aio_pika.abc import AbstractChannel, AbstractRobustConnection
from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection

from keyservice.client import KeyServiceClient
from pulseseal import mongo
from pulseseal.envelope import DOCUMENT_FIELDS, open_sealed
from pulseseal.settings import Settings
from pulseseal.topology import SEAL_QUEUE
from schemas import validate_event
from tests.consumers.helpers import drain_dead_letters, open_channel, publish_batch, publish_single, wait_for
from tests.factories import random_events, valid_event
from tests.processes import Component, services, start, wait_healthy
from tests.transit import keyservice_keys

pytestmark = pytest.mark.integration

USERS = [f"member-{i:04d}" for i in range(300)]
Stack = tuple[AsyncCollection[dict[str, Any]], AbstractChannel]


@pytest.fixture
async def stack(
    pipeline_env: dict[str, str], mongo_url: str, keyservice_process: Component
) -> AsyncIterator[Stack]:
    """An empty `sealed_events`, an empty seal queue and DLQ, and a confirming channel."""
    client: AsyncMongoClient[dict[str, Any]] = mongo.connect(mongo_url)
    try:
        collection = mongo.sealed_events(client, pipeline_env["PULSESEAL_MONGO_DB"])
        # drop, not delete_many: FerretDB (SQLite) fails a delete of more than ~32k documents at once
        # ("too many SQL variables"), and the fault tests leave tens of thousands.
        await collection.drop()
        keys = await keyservice_keys(pipeline_env["PULSESEAL_KEYSERVICE_URL"])
        connection, channel = await open_channel(pipeline_env["PULSESEAL_AMQP_URL"], transport_keys=keys)
        try:
            await (await channel.get_queue(SEAL_QUEUE)).purge()
            await drain_dead_letters(channel, settle_s=0.1)
            yield collection, channel
        finally:
            await _close(connection)
    finally:
        await client.close()


async def test_events_are_sealed_once_each_open_with_the_users_keys_and_leak_nothing(
    stack: Stack, encryptors: Callable[[], Component], pipeline_env: dict[str, str]
) -> None:
    collection, channel = stack
    canaries = [f"CANARY-{uuid.uuid4().hex}" for _ in range(4)]
    events = random_events(2000, USERS, random.Random(21))
    planted = [
        valid_event(
            "migraine_attack",
            event_id=str(uuid.uuid4()),
            data={"notes": canaries[0], "triggers": [canaries[1]]},
        ),
        valid_event("medication", event_id=str(uuid.uuid4()), data={"name": canaries[2]}),
        valid_event("heart_rate", event_id=str(uuid.uuid4()), source={"kind": "app", "device": canaries[3]}),
    ]
    events += planted
    encryptors()
    for event in events[:300]:
        await publish_single(channel, event)
    for start_at in range(300, len(events), 400):
        await publish_batch(channel, events[start_at : start_at + 400])

    await wait_for(lambda: _count_is(collection, len(events)), timeout_s=90, what=f"{len(events)} documents")
    await asyncio.sleep(1)
    assert await collection.count_documents({}) == len(events)

    documents = [doc async for doc in collection.find({})]
    assert all(tuple(doc) == DOCUMENT_FIELDS for doc in documents)
    everything = b"".join(bson.encode(doc) for doc in documents)
    for canary in canaries:
        assert canary.encode() not in everything

    settings = Settings(keyservice_url=pipeline_env["PULSESEAL_KEYSERVICE_URL"])
    async with KeyServiceClient.from_settings(settings, "auditor") as auditor:
        granted = await auditor.decrypt_keys(
            {(d["user_id"], d["key_version"]) for d in documents}, purpose="pipeline test: verify seals"
        )
    assert granted.missing == {}
    by_id = {e["event_id"]: e for e in events}
    for doc in documents:
        assert open_sealed(doc, granted.keys[(doc["user_id"], doc["key_version"])]) == validate_event(
            by_id[doc["_id"]]
        )


async def test_publishing_everything_again_leaves_exactly_one_document_per_event(
    stack: Stack, encryptors: Callable[[], Component]
) -> None:
    collection, channel = stack
    events = random_events(1000, USERS, random.Random(22))
    encryptors()
    for round_ in range(2):
        for start_at in range(0, len(events), 250):
            await publish_batch(channel, events[start_at : start_at + 250])
        await wait_for(lambda: _count_is(collection, 1000), what=f"1000 documents (round {round_})")
    await wait_for(lambda: _queue_empty(channel), what="the queue to drain")
    assert await collection.count_documents({}) == 1000
    assert await drain_dead_letters(channel, settle_s=0.3) == []


@pytest.mark.slow
async def test_an_encryptor_killed_mid_stream_loses_nothing_after_restart(
    stack: Stack, encryptors: Callable[[], Component]
) -> None:
    collection, channel = stack
    events = random_events(20_000, USERS, random.Random(23))
    for start_at in range(0, len(events), 500):
        await publish_batch(channel, events[start_at : start_at + 500])
    first = encryptors()
    await wait_for(lambda: _count_at_least(collection, 3000), timeout_s=60, what="3000 documents")
    first.kill()
    stored_at_kill = await collection.count_documents({})
    assert stored_at_kill < len(events), "the kill must land mid-stream for this test to mean anything"
    encryptors()
    await wait_for(
        lambda: _count_is(collection, len(events)), timeout_s=180, what="every event after restart"
    )
    await wait_for(lambda: _queue_empty(channel), what="the queue to drain")
    assert await collection.count_documents({}) == len(events)
    assert await drain_dead_letters(channel, settle_s=0.3) == []


@pytest.mark.slow
async def test_mongodb_down_for_ten_seconds_delays_but_loses_nothing(
    stack: Stack, encryptors: Callable[[], Component]
) -> None:
    collection, channel = stack
    encryptors()
    stop = asyncio.Event()
    publishing = asyncio.create_task(_publish_until(stop, channel, USERS, per_second=2000))
    await wait_for(lambda: _count_at_least(collection, 2000), timeout_s=60, what="2000 documents")
    await asyncio.to_thread(services, "down", "mongo")
    try:
        await asyncio.sleep(10)
    finally:
        await asyncio.to_thread(services, "up", "mongo")
    await asyncio.sleep(2)  # traffic goes on across the recovery
    stop.set()
    published = await publishing
    await wait_for(
        lambda: _count_is(collection, len(published)), timeout_s=180, what="every event after the outage"
    )
    assert await drain_dead_letters(channel, settle_s=0.5) == []


@pytest.mark.slow
async def test_key_service_down_for_ten_seconds_delays_but_loses_nothing(
    stack: Stack,
    encryptors: Callable[[], Component],
    keyservice_process: Component,
    pipeline_env: dict[str, str],
    tmp_path: Path,
) -> None:
    collection, channel = stack
    encryptors()
    stop = asyncio.Event()
    # Fresh users throughout: their keys are not in the encryptor's cache, so it must ask the service.
    fresh = [f"fresh-{uuid.uuid4().hex[:8]}-{i}" for i in range(5000)]
    publishing = asyncio.create_task(_publish_until(stop, channel, fresh, per_second=2000))
    await wait_for(lambda: _count_at_least(collection, 1500), timeout_s=60, what="1500 documents")
    keyservice_process.stop()
    await asyncio.sleep(10)
    replacement = start("keyservice", ["keyservice"], pipeline_env, tmp_path)
    # The session fixture stops whatever process it holds; hand it the replacement.
    keyservice_process.process = replacement.process
    keyservice_process.log_path = replacement.log_path
    await asyncio.to_thread(wait_healthy, replacement, pipeline_env["PULSESEAL_KEYSERVICE_URL"] + "/healthz")
    await asyncio.sleep(2)
    stop.set()
    published = await publishing
    await wait_for(
        lambda: _count_is(collection, len(published)), timeout_s=180, what="every event after the outage"
    )
    assert await drain_dead_letters(channel, settle_s=0.5) == []


@pytest.mark.slow
async def test_rabbitmq_restart_under_a_running_encryptor_is_survived(
    stack: Stack, encryptors: Callable[[], Component], pipeline_env: dict[str, str]
) -> None:
    collection, channel = stack
    # Enough events that the store (fast on PostgreSQL) is still busy when the broker has stopped.
    events = random_events(120_000, USERS, random.Random(26))
    for start_at in range(0, len(events), 500):
        await publish_batch(channel, events[start_at : start_at + 500])
    encryptor = encryptors()
    await wait_for(lambda: _count_at_least(collection, 2000), timeout_s=60, what="2000 documents")
    await asyncio.to_thread(services, "down", "rabbitmq")
    try:
        stored_while_down = await collection.count_documents({})
        assert stored_while_down < len(events), (
            "the restart must land mid-stream for this test to mean anything"
        )
        await asyncio.sleep(3)
    finally:
        # Back up whatever happened: every later test needs the broker.
        await asyncio.to_thread(services, "up", "rabbitmq")
    await wait_for(
        lambda: _count_is(collection, len(events)), timeout_s=180, what="every event after the restart"
    )
    assert encryptor.process.poll() is None, "the encryptor reconnects by itself"
    keys = await keyservice_keys(pipeline_env["PULSESEAL_KEYSERVICE_URL"])
    connection, fresh = await open_channel(pipeline_env["PULSESEAL_AMQP_URL"], transport_keys=keys)
    try:
        await wait_for(lambda: _queue_empty(fresh), what="the queue to drain")
        assert await drain_dead_letters(fresh, settle_s=0.5) == []
    finally:
        await _close(connection)


async def test_two_encryptors_share_one_queue_and_store_each_event_once(
    stack: Stack, encryptors: Callable[[], Component]
) -> None:
    collection, channel = stack
    events = random_events(10_000, USERS, random.Random(27))
    for start_at in range(0, len(events), 200):
        await publish_batch(channel, events[start_at : start_at + 200])
    one, two = encryptors(), encryptors()
    await wait_for(lambda: _count_is(collection, len(events)), timeout_s=120, what="every event")
    await wait_for(lambda: _queue_empty(channel), what="the queue to drain")
    assert await collection.count_documents({}) == len(events)
    for component in (one, two):
        assert '"msg": "dead-lettered"' not in component.log()


async def test_sigterm_drains_acks_and_exits_zero_in_bounded_time(
    stack: Stack, encryptors: Callable[[], Component]
) -> None:
    collection, channel = stack
    events = random_events(6000, USERS, random.Random(28))
    for start_at in range(0, len(events), 500):
        await publish_batch(channel, events[start_at : start_at + 500])
    encryptor = encryptors()
    await wait_for(lambda: _count_at_least(collection, 500), timeout_s=60, what="500 documents")
    started = time.monotonic()
    code = await asyncio.to_thread(encryptor.stop, 30.0)
    assert code == 0, encryptor.log()
    assert time.monotonic() - started < 25
    stored = await collection.count_documents({})
    # Whatever was not stored is still on the queue, ready for the next encryptor.
    queue = await channel.declare_queue(SEAL_QUEUE, passive=True)
    waiting = queue.declaration_result.message_count or 0
    assert stored == len(events) or waiting > 0
    encryptors()
    await wait_for(lambda: _count_is(collection, len(events)), timeout_s=120, what="every event")


async def _publish_until(
    stop: asyncio.Event, channel: AbstractChannel, users: list[str], *, per_second: int
) -> list[str]:
    """Publish batches of 100 fresh events at about `per_second` until `stop`; the ids published."""
    rng = random.Random(29)
    published: list[str] = []
    while not stop.is_set():
        events = random_events(100, users, rng)
        await publish_batch(channel, events)
        published += [e["event_id"] for e in events]
        await asyncio.sleep(100 / per_second)
    return published


async def _count_is(collection: AsyncCollection[dict[str, Any]], n: int) -> bool:
    try:
        return await collection.count_documents({}) == n
    except Exception:  # noqa: BLE001 - the server may be the one we stopped
        return False


async def _count_at_least(collection: AsyncCollection[dict[str, Any]], n: int) -> bool:
    return await collection.count_documents({}) >= n


async def _queue_empty(channel: AbstractChannel) -> bool:
    queue = await channel.declare_queue(SEAL_QUEUE, passive=True)
    return bool(queue.declaration_result.message_count == 0)


async def _close(connection: AbstractRobustConnection) -> None:
    # Closing after a broker restart may find the connection gone already.
    with contextlib.suppress(Exception):
        await asyncio.wait_for(connection.close(), 10)
