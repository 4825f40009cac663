"""The encryptor in-process against the real RabbitMQ and MongoDB-compatible server.

Keys come from an in-memory key source here, so these tests pin down the queue → seal → store → ack
path on its own; tests/test_pipeline.py runs the same path with the real key service.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aio_pika.abc import AbstractChannel
from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection

from consumers.encryptor import Delivered, Encryptor
from pulseseal import mongo
from pulseseal.envelope import DOCUMENT_FIELDS, DataKey, open_sealed
from pulseseal.settings import Settings
from pulseseal.topology import ERROR_HEADER, JSON, NDJSON, REASON_HEADER, SEAL_QUEUE
from schemas import validate_event
from tests.consumers.helpers import (
    FakeKeySource,
    drain_dead_letters,
    fixed_key_material,
    open_channel,
    publish_batch,
    publish_lines,
    publish_raw,
    publish_single,
    wait_for,
)
from tests.factories import random_events, valid_event
from tests.transit import local_gate

pytestmark = pytest.mark.integration

USERS = [f"user-{i:03d}" for i in range(40)]


@pytest.fixture
async def stack(
    isolated_amqp_url: str, mongo_url: str, mongo_db: str
) -> AsyncIterator[tuple[Encryptor, FakeKeySource, AsyncCollection[dict[str, Any]], AbstractChannel]]:
    """A running in-process encryptor, its fake key source, the collection and a publishing channel."""
    settings = Settings(
        amqp_url=isolated_amqp_url, mongo_url=mongo_url, mongo_db=mongo_db, batch_max_ms=20, delivery_limit=5
    )
    client: AsyncMongoClient[dict[str, Any]] = mongo.connect(mongo_url)
    collection = mongo.sealed_events(client, mongo_db)
    await collection.drop()  # FerretDB (SQLite) cannot delete_many more than ~32k documents at once
    keys = FakeKeySource(shredded={"user-shredded"})
    encryptor = Encryptor(settings, keys, client, transport=local_gate())
    connection, channel = await open_channel(isolated_amqp_url)
    await (await channel.get_queue(SEAL_QUEUE)).purge()
    await drain_dead_letters(channel, settle_s=0.1)
    await encryptor.app.start()
    try:
        yield encryptor, keys, collection, channel
    finally:
        await encryptor.app.stop()
        await connection.close()
        await client.close()


async def test_singles_and_batches_of_many_users_are_each_stored_once_and_open(
    stack: tuple[Encryptor, FakeKeySource, AsyncCollection[dict[str, Any]], AbstractChannel],
) -> None:
    _, keys, collection, channel = stack
    events = random_events(1200, USERS, random.Random(7))
    for event in events[:200]:
        await publish_single(channel, event)
    for start in range(200, 1200, 250):
        await publish_batch(channel, events[start : start + 250])

    await wait_for(lambda: collection.count_documents({}), what="documents to appear")
    await wait_for(lambda: _count_is(collection, len(events)), timeout_s=60, what=f"{len(events)} documents")
    by_id = {e["event_id"]: e for e in events}
    async for doc in collection.find({}):
        assert tuple(doc) == DOCUMENT_FIELDS
        original = validate_event(by_id[doc["_id"]])
        key = DataKey(doc["user_id"], doc["key_version"], fixed_key_material(doc["user_id"]))
        assert open_sealed(doc, key) == original
    # One key request per micro-batch, never one per event.
    assert len(keys.requests) < len(events) / 10


async def test_publishing_the_same_events_again_leaves_one_document_each(
    stack: tuple[Encryptor, FakeKeySource, AsyncCollection[dict[str, Any]], AbstractChannel],
) -> None:
    _encryptor, _, collection, channel = stack
    events = random_events(300, USERS, random.Random(8))
    await publish_batch(channel, events)
    await wait_for(lambda: _count_is(collection, 300), what="first 300 documents")
    await publish_batch(channel, events[:150])
    await publish_batch(channel, events[150:])
    queue = await channel.get_queue(SEAL_QUEUE)
    await wait_for(lambda: _queue_settled(queue), what="the queue to drain")
    assert await collection.count_documents({}) == 300


async def test_invalid_events_in_a_batch_are_dead_lettered_alone_and_the_rest_stored(
    stack: tuple[Encryptor, FakeKeySource, AsyncCollection[dict[str, Any]], AbstractChannel],
) -> None:
    _, _, collection, channel = stack
    good = random_events(20, USERS, random.Random(9))
    canary = "CANARY-bpm-7f3a"
    bad_value = valid_event("heart_rate", event_id="6a1f0e52-3c55-4b8e-9d0c-1a2b3c4d5e6f", data={"bpm": 999})
    bad_type = valid_event(
        "heart_rate", event_id="7b2f0e52-3c55-4b8e-9d0c-1a2b3c4d5e6f", data={"bpm": canary}
    )
    lines = [json.dumps(e).encode() for e in good[:10]]
    lines += [json.dumps(bad_value).encode(), b"{not json " + canary.encode()]
    lines += [json.dumps(e).encode() for e in good[10:]] + [json.dumps(bad_type).encode()]
    await publish_lines(channel, lines)

    await wait_for(lambda: _count_is(collection, 20), what="the 20 valid events")
    dead = await drain_dead_letters(channel)
    assert len(dead) == 3
    headers = [d.headers for d in dead]
    assert {h[ERROR_HEADER] for h in headers} == {"invalid_event"}
    reasons = sorted(str(h[REASON_HEADER]) for h in headers)
    assert reasons == [
        "line 11: data.bpm: must be ≤ 300",
        "line 12: is not valid JSON",
        "line 23: data.bpm: must be an integer",
    ]
    for h in headers:
        assert canary not in str(h)
        # The value as a token: ids and key ids in the headers are random hex, which may contain "999".
        assert re.search(r"\b999\b", str(h)) is None
    assert sorted(d.headers["x-pulseseal-line"] for d in dead) == [11, 12, 23]


async def test_events_of_a_shredded_user_are_dead_lettered_with_user_shredded(
    stack: tuple[Encryptor, FakeKeySource, AsyncCollection[dict[str, Any]], AbstractChannel],
) -> None:
    _, _, collection, channel = stack
    events = random_events(10, ["user-alive"], random.Random(10))
    gone = random_events(3, ["user-shredded"], random.Random(11))
    await publish_batch(channel, events + gone)
    await wait_for(lambda: _count_is(collection, 10), what="the alive user's 10 events")
    dead = await drain_dead_letters(channel)
    assert [d.headers[ERROR_HEADER] for d in dead] == ["user_shredded"] * 3
    assert {d.headers["x-pulseseal-event-id"] for d in dead} == {e["event_id"] for e in gone}
    assert await collection.count_documents({"user_id": "user-shredded"}) == 0


async def test_a_message_that_is_not_pulseseal_is_dead_lettered_whole(
    stack: tuple[Encryptor, FakeKeySource, AsyncCollection[dict[str, Any]], AbstractChannel],
) -> None:
    _, _, _, channel = stack
    await publish_raw(channel, b"<xml/>", "text/xml", "events.batch")
    dead = await drain_dead_letters(channel)
    assert len(dead) == 1
    assert dead[0].headers[ERROR_HEADER] == "invalid_message"
    assert "content type" in str(dead[0].headers[REASON_HEADER])
    assert dead[0].body == b"<xml/>"


async def test_key_service_outage_delays_but_never_dead_letters(
    stack: tuple[Encryptor, FakeKeySource, AsyncCollection[dict[str, Any]], AbstractChannel],
) -> None:
    _, keys, collection, channel = stack
    keys.unavailable = True
    events = random_events(50, USERS, random.Random(12))
    await publish_batch(channel, events)
    await asyncio.sleep(1.5)  # several retry rounds
    assert len(keys.requests) == 0
    assert await collection.count_documents({}) == 0
    keys.unavailable = False
    await wait_for(lambda: _count_is(collection, 50), what="the 50 events after the outage")
    assert await drain_dead_letters(channel, settle_s=0.3) == []


async def test_a_message_that_keeps_failing_ends_in_the_dead_letter_queue_by_the_delivery_limit(
    stack: tuple[Encryptor, FakeKeySource, AsyncCollection[dict[str, Any]], AbstractChannel],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _encryptor, _, collection, channel = stack
    from consumers.messages import decode_message as real_decode

    def crashing_decode(body: bytes, content_type: str | None, **kwargs: Any) -> Any:
        if b"POISON" in body:
            raise RuntimeError("simulated crash")
        return real_decode(body, content_type, **kwargs)

    monkeypatch.setattr("consumers.messages.decode_message", crashing_decode)
    poison = valid_event("medication", data={"name": "POISON"})
    await publish_single(channel, poison)
    others = random_events(30, USERS, random.Random(13))
    await publish_batch(channel, others)
    await wait_for(lambda: _count_is(collection, 30), what="the other events, not blocked by the poison")
    dead = await drain_dead_letters(channel, settle_s=3.0)
    assert len(dead) == 1
    assert dead[0].headers.get("x-death"), "the broker dead-letters it, with its own x-death header"
    assert ERROR_HEADER not in dead[0].headers


async def test_a_message_that_breaks_decoding_fails_alone_and_its_batch_neighbours_are_stored(
    stack: tuple[Encryptor, FakeKeySource, AsyncCollection[dict[str, Any]], AbstractChannel],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    encryptor, _, collection, _ = stack
    from consumers.messages import decode_message as real_decode

    def crashing_decode(body: bytes, content_type: str | None, **kwargs: Any) -> Any:
        if b"POISON" in body:
            raise RuntimeError("simulated crash")
        return real_decode(body, content_type, **kwargs)

    monkeypatch.setattr("consumers.messages.decode_message", crashing_decode)
    good = random_events(20, USERS, random.Random(14))
    poison = valid_event("medication", data={"name": "POISON"})
    batch = [
        Delivered(b"\n".join(json.dumps(e).encode() for e in good), NDJSON),
        Delivered(json.dumps(poison).encode(), JSON),
    ]
    ok, failed = await encryptor.decode_and_seal(batch)
    assert (ok.stored, ok.failure, ok.dead) == (20, None, [])
    assert (failed.stored, failed.failure) == (0, "RuntimeError")
    assert await collection.count_documents({}) == 20


async def _count_is(collection: AsyncCollection[dict[str, Any]], n: int) -> bool:
    return await collection.count_documents({}) == n


async def _queue_settled(queue: Any) -> bool:
    declared = await queue.declare()
    return bool(declared.message_count == 0)
