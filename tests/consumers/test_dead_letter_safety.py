"""What the encryptor must never ack: an event whose dead letter no queue took, and an event whose id is
already stored for ANOTHER user. Real RabbitMQ (a vhost of each test's own) and the MongoDB-compatible
server; keys from an in-memory source."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from aio_pika.abc import AbstractChannel
from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection

from consumers import metrics
from consumers.encryptor import Encryptor
from pulseseal import mongo
from pulseseal.settings import Settings
from pulseseal.topology import DEAD_EXCHANGE, DEAD_QUEUE, SEAL_QUEUE
from tests.consumers.helpers import FakeKeySource, drain_dead_letters, publish_single, wait_for
from tests.factories import valid_event
from tests.isolation import create_vhost, delete_vhost, vhost_url
from tests.transit import local_gate

pytestmark = pytest.mark.integration


@dataclass
class Stack:
    encryptor: Encryptor
    collection: AsyncCollection[dict[str, Any]]
    channel: AbstractChannel


@pytest.fixture
async def stack(amqp_url: str, mongo_url: str, mongo_db: str) -> AsyncIterator[Stack]:
    """An in-process encryptor on a vhost of this test's own, with a delivery limit high enough that the
    broker never dead-letters by itself during the test."""
    import aio_pika

    vhost = f"pulseseal-test-dl-{secrets.token_hex(4)}"
    create_vhost(vhost)
    url = vhost_url(amqp_url, vhost)
    settings = Settings(
        amqp_url=url, mongo_url=mongo_url, mongo_db=mongo_db, batch_max_ms=20, delivery_limit=1000
    )
    client: AsyncMongoClient[dict[str, Any]] = mongo.connect(mongo_url)
    collection = mongo.sealed_events(client, mongo_db)
    encryptor = Encryptor(settings, FakeKeySource(), client, transport=local_gate())
    await encryptor.app.start()
    connection = await aio_pika.connect_robust(url)
    channel = await connection.channel(publisher_confirms=True)
    try:
        yield Stack(encryptor, collection, channel)
    finally:
        await encryptor.app.stop()
        await connection.close()
        await client.close()
        delete_vhost(vhost)


async def test_a_dead_letter_no_queue_takes_leaves_the_original_unacked_until_one_does(stack: Stack) -> None:
    dead_queue = await stack.channel.get_queue(DEAD_QUEUE)
    await dead_queue.unbind(DEAD_EXCHANGE, routing_key="")
    requeued = metrics.MESSAGES_REQUEUED._value.get()
    bad = valid_event("heart_rate", event_id="0b0c0d0e-3c55-4b8e-9d0c-1a2b3c4d5e6f", data={"bpm": 999})
    await publish_single(stack.channel, bad)
    # Returned as unroutable, so the original is handed back (again and again), never acked.
    await wait_for(
        lambda: metrics.MESSAGES_REQUEUED._value.get() >= requeued + 3, what="the original to be handed back"
    )
    await asyncio.sleep(0.5)
    assert await drain_dead_letters(stack.channel, settle_s=0.2) == []
    # Once a queue takes dead letters again, the next delivery is dead-lettered and only then acked.
    await dead_queue.bind(DEAD_EXCHANGE, routing_key="")
    letters: list[Any] = []

    async def arrived() -> bool:
        letters.extend(await drain_dead_letters(stack.channel, settle_s=0.2))
        return bool(letters)

    await wait_for(arrived, what="the dead letter once the queue is bound again")
    assert [m.headers["x-pulseseal-error"] for m in letters] == ["invalid_event"]
    assert letters[0].body == json.dumps(bad).encode()
    seal_queue = await stack.channel.declare_queue(SEAL_QUEUE, passive=True)
    await wait_for(lambda: _empty(stack.channel), what="the original to be acked")
    assert seal_queue.name == SEAL_QUEUE


async def _empty(channel: AbstractChannel) -> bool:
    queue = await channel.declare_queue(SEAL_QUEUE, passive=True)
    return queue.declaration_result.message_count == 0


async def test_an_event_id_already_stored_for_another_user_is_dead_lettered_id_conflict(stack: Stack) -> None:
    event_id = f"{secrets.token_hex(4)}-3c55-4b8e-9d0c-1a2b3c4d5e6f"
    squatter = valid_event("heart_rate", event_id=event_id, user_id="mallory", data={"bpm": 60})
    victim = valid_event("heart_rate", event_id=event_id, user_id="alice", data={"bpm": 72})
    await publish_single(stack.channel, squatter)
    await wait_for(
        lambda: stack.collection.count_documents({"_id": event_id}), what="the squatter's document"
    )
    await publish_single(stack.channel, victim)
    letters: list[Any] = []

    async def arrived() -> bool:
        letters.extend(await drain_dead_letters(stack.channel, settle_s=0.2))
        return bool(letters)

    await wait_for(arrived, what="the victim's event to be dead-lettered")
    [letter] = letters
    assert letter.headers["x-pulseseal-error"] == "id_conflict"
    assert letter.headers["x-pulseseal-event-id"] == event_id
    stored = await stack.collection.find_one({"_id": event_id})
    assert stored is not None
    assert stored["user_id"] == "mallory"
    # The same user sending the same event again is still a plain duplicate: stored once, no dead letter.
    await publish_single(stack.channel, squatter)
    await asyncio.sleep(0.5)
    assert await drain_dead_letters(stack.channel, settle_s=0.3) == []
    assert await stack.collection.count_documents({"_id": event_id}) == 1
