"""The encryptor's side of transport sealing (contract §4), in-process against the real RabbitMQ and
MongoDB-compatible server, with local transport keys (tests/test_transport_pipeline.py does it with the
real key service): a plaintext message, a tampered one and one under a retired key are never stored and
are dead-lettered — sealed — with the contract's codes; keys rotated under a queue with old-key messages
still waiting lose nothing."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel
from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection

from consumers.encryptor import Encryptor
from consumers.transit import TransportGate
from pulseseal import mongo
from pulseseal.settings import Settings
from pulseseal.topology import BATCH_ROUTING_KEY, ERROR_HEADER, EVENTS_EXCHANGE, JSON, NDJSON, SEAL_QUEUE
from pulseseal.transit import TRANSPORT_HEADER, TransportPrivateKey
from tests.consumers.helpers import (
    FakeKeySource,
    drain_dead_letters,
    open_channel,
    publish_raw,
    wait_for,
)
from tests.factories import random_events
from tests.transit import LOCAL_KEY, LocalKeyRing, LocalSealer, sealed_body

pytestmark = pytest.mark.integration

USERS = [f"transit-user-{i}" for i in range(8)]
Stack = tuple[Encryptor, LocalKeyRing, AsyncCollection[dict[str, Any]], AbstractChannel]


@pytest.fixture
async def stack(isolated_amqp_url: str, mongo_url: str, mongo_db: str) -> AsyncIterator[Stack]:
    """A running in-process encryptor whose key ring a test can rotate and retire keys in."""
    settings = Settings(
        amqp_url=isolated_amqp_url, mongo_url=mongo_url, mongo_db=mongo_db, batch_max_ms=20, delivery_limit=5
    )
    client: AsyncMongoClient[dict[str, Any]] = mongo.connect(mongo_url)
    collection = mongo.sealed_events(client, mongo_db)
    await collection.drop()
    ring = LocalKeyRing()
    gate = TransportGate(ring, LocalSealer())
    encryptor = Encryptor(settings, FakeKeySource(), client, transport=gate)
    connection, channel = await open_channel(isolated_amqp_url)
    await (await channel.get_queue(SEAL_QUEUE)).purge()
    await drain_dead_letters(channel, settle_s=0.1)
    await encryptor.app.start()
    try:
        yield encryptor, ring, collection, channel
    finally:
        await encryptor.app.stop()
        await connection.close()
        await client.close()


def _ndjson(events: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(e).encode() + b"\n" for e in events)


async def _settled(channel: AbstractChannel) -> bool:
    declared = await (await channel.get_queue(SEAL_QUEUE)).declare()
    return bool(declared.message_count == 0)


async def test_a_plaintext_message_is_never_stored_and_is_dead_lettered_sealed_per_event(
    stack: Stack,
) -> None:
    _, _, collection, channel = stack
    events = random_events(3, USERS, random.Random(21))
    canary = "canary-unsealed-0c9e41"
    events[1]["source"] = {"kind": "app", "device": canary}
    await publish_raw(channel, _ndjson(events), NDJSON, BATCH_ROUTING_KEY, sealed=False)
    single = random_events(1, USERS, random.Random(22))[0]
    await publish_raw(channel, json.dumps(single).encode(), JSON, "events.heart_rate", sealed=False)

    dead = await drain_dead_letters(channel)  # asserts every dead letter is sealed, and opens it
    assert len(dead) == 4
    assert {d.headers[ERROR_HEADER] for d in dead} == {"unsealed_transport"}
    assert {d.headers["x-pulseseal-event-id"] for d in dead} == {e["event_id"] for e in [*events, single]}
    assert all(canary.encode() not in d.raw for d in dead)
    assert any(canary.encode() in d.body for d in dead)
    assert all(canary not in str(d.headers) for d in dead)
    assert await collection.count_documents({}) == 0


async def test_one_flipped_byte_is_never_stored_and_is_dead_lettered_transport_unopenable(
    stack: Stack,
) -> None:
    _, _, collection, channel = stack
    events = random_events(5, USERS, random.Random(23))
    body, headers = sealed_body(_ndjson(events), NDJSON)
    flipped = bytearray(body)
    flipped[len(flipped) // 2] ^= 0x01
    exchange = await channel.get_exchange(EVENTS_EXCHANGE)
    message = aio_pika.Message(bytes(flipped), content_type=NDJSON, headers=headers)
    await exchange.publish(message, routing_key=BATCH_ROUTING_KEY, mandatory=True)

    [dead] = await drain_dead_letters(channel)
    assert dead.headers[ERROR_HEADER] == "transport_unopenable"
    assert "x-pulseseal-event-id" not in dead.headers
    assert dead.body == bytes(flipped)  # the bytes that did not open, sealed again for the dead queue
    assert await collection.count_documents({}) == 0


async def test_a_message_sealed_under_a_retired_key_is_refused(stack: Stack) -> None:
    _, ring, collection, channel = stack
    retired = TransportPrivateKey.generate()
    events = random_events(4, USERS, random.Random(24))
    await publish_raw(channel, _ndjson(events), NDJSON, BATCH_ROUTING_KEY, key=retired)
    [dead] = await drain_dead_letters(channel)
    assert dead.headers[ERROR_HEADER] == "transport_unopenable"
    assert dead.headers[TRANSPORT_HEADER] == "hpke-v1"
    assert await collection.count_documents({}) == 0
    assert retired.key_id not in ring.keys


async def test_a_rotation_with_old_key_messages_still_queued_stores_everything(stack: Stack) -> None:
    encryptor, ring, collection, channel = stack
    await encryptor.subscriber.stop()  # let messages of both keys wait in the queue together
    new = TransportPrivateKey.generate()
    old_events = random_events(30, USERS, random.Random(25))
    new_events = random_events(30, USERS, random.Random(26))
    await publish_raw(channel, _ndjson(old_events), NDJSON, BATCH_ROUTING_KEY, key=LOCAL_KEY)
    ring.keys[new.key_id] = new  # rotation: the new key is handed out, the old one still opens
    await publish_raw(channel, _ndjson(new_events), NDJSON, BATCH_ROUTING_KEY, key=new)
    await encryptor.subscriber.start()
    await wait_for(lambda: _settled(channel), what="the queue to drain")
    await wait_for(lambda: _count(collection, 60), what="every event of both keys", timeout_s=30)
    assert await drain_dead_letters(channel, settle_s=0.3) == []


async def _count(collection: AsyncCollection[dict[str, Any]], n: int) -> bool:
    return await collection.count_documents({}) == n
