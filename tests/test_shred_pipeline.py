"""Contract §6 with the whole pipeline running (real processes): within 1 s of a shred's `destroyed_at`
every running encryptor has dropped the user's keys, so an event of that user published afterwards is
dead-lettered `user_shredded` and never stored — although each encryptor had the user's key cached (TTL
60 s) a moment before the shred.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from aio_pika.abc import AbstractChannel
from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection

from keyservice.client import KeyServiceClient
from pulseseal import mongo
from pulseseal.settings import Settings
from pulseseal.topology import SEAL_QUEUE
from schemas.rfc3339 import parse_rfc3339
from tests.consumers.helpers import drain_dead_letters, open_channel, publish_batch, wait_for
from tests.factories import random_events
from tests.processes import Component, wait_logged
from tests.transit import keyservice_keys

pytestmark = pytest.mark.integration

VICTIM, KEEPER = "erasure-victim", "erasure-keeper"
Stack = tuple[AsyncCollection[dict[str, Any]], AbstractChannel]


@pytest.fixture
async def stack(
    pipeline_env: dict[str, str], mongo_url: str, keyservice_process: Component
) -> AsyncIterator[Stack]:
    """An empty `sealed_events`, an empty seal queue and DLQ, and a confirming channel."""
    client: AsyncMongoClient[dict[str, Any]] = mongo.connect(mongo_url)
    collection = mongo.sealed_events(client, pipeline_env["PULSESEAL_MONGO_DB"])
    await collection.drop()
    # Sealed for the session's key service, whose transport key the encryptors open with.
    keys = await keyservice_keys(pipeline_env["PULSESEAL_KEYSERVICE_URL"])
    connection, channel = await open_channel(pipeline_env["PULSESEAL_AMQP_URL"], transport_keys=keys)
    try:
        await (await channel.get_queue(SEAL_QUEUE)).purge()
        await drain_dead_letters(channel, settle_s=0.1)
        yield collection, channel
    finally:
        await connection.close()
        await client.close()


def _events(user: str, count: int, seed: int) -> list[dict[str, Any]]:
    events = random_events(count, [user], random.Random(seed))
    for event in events:
        event["event_id"] = str(uuid.uuid4())
    return events


async def test_events_published_a_second_after_the_receipt_are_never_stored(
    stack: Stack, encryptors: Callable[[], Component], pipeline_env: dict[str, str]
) -> None:
    collection, channel = stack
    running = [encryptors(), encryptors()]
    for component in running:
        wait_logged(component, "following shred notices")
    # Both encryptors seal (and so cache the key of) both users: several batches, shared by the two.
    before = _events(VICTIM, 200, 1) + _events(KEEPER, 200, 2)
    random.Random(3).shuffle(before)
    for at in range(0, len(before), 20):
        await publish_batch(channel, before[at : at + 20])
    await wait_for(lambda: _count(collection, {}, len(before)), timeout_s=60, what="the first events stored")

    settings = Settings(keyservice_url=pipeline_env["PULSESEAL_KEYSERVICE_URL"])
    async with KeyServiceClient.from_settings(settings, "admin") as admin:
        receipt = await admin.shred(VICTIM)
    destroyed_at = parse_rfc3339(receipt.destroyed_at)
    wait = (destroyed_at - datetime.now(UTC)).total_seconds() + 1.0
    await asyncio.sleep(max(0.0, wait))

    after = _events(VICTIM, 100, 4) + _events(KEEPER, 100, 5)
    random.Random(6).shuffle(after)
    for at in range(0, len(after), 10):
        await publish_batch(channel, after[at : at + 10])
    await wait_for(
        lambda: _count(collection, {"user_id": KEEPER}, 300), timeout_s=60, what="the keeper's events stored"
    )
    dead = await drain_dead_letters(channel, settle_s=2.0)
    codes = [m.headers.get("x-pulseseal-error") for m in dead]
    assert codes == ["user_shredded"] * 100, codes
    late = {e["event_id"] for e in after if e["user_id"] == VICTIM}
    assert {m.headers.get("x-pulseseal-event-id") for m in dead} == late
    assert await collection.count_documents({"_id": {"$in": sorted(late)}}) == 0
    assert await collection.count_documents({"user_id": VICTIM}) == 200
    for component in running:
        assert "following shred notices" in component.log()


async def _count(collection: AsyncCollection[dict[str, Any]], query: dict[str, Any], expected: int) -> bool:
    return await collection.count_documents(query) >= expected
