"""Key-service replicas with real processes: two `pulseseal keyservice` on this session's key store, an
encryptor that knows both, and one replica killed with SIGKILL while the encryptor seals a stream.

Every event belongs to a user of its own, so every micro-batch asks the key service for keys: the kill
lands in the middle of key traffic, not between cached batches. Nothing may be lost, stored twice or
dead-lettered for the outage; the producer's transport-key fetch fails over too.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection

from keyservice.client.transport_public import TransportSealer
from producers.publisher import Publisher
from pulseseal import mongo
from pulseseal.topology import BATCH_ROUTING_KEY, DEAD_QUEUE, NDJSON, SEAL_QUEUE
from tests.consumers.helpers import drain_dead_letters, open_channel, wait_for
from tests.factories import random_events
from tests.processes import Component, free_port, start, start_encryptor, wait_healthy
from tests.transit import keyservice_keys

pytestmark = pytest.mark.integration

FIRST_HALF, SECOND_HALF = 3000, 1000
PER_MESSAGE = 50


@pytest.fixture
def replicas(
    pipeline_env: dict[str, str], tmp_path: Path
) -> Iterator[tuple[list[Component], dict[str, str]]]:
    """Two key-service processes on one key store, and the environment of a caller that knows both."""
    ports = [free_port(), free_port()]
    started = [
        start(
            f"keyservice-{i + 1}",
            ["keyservice"],
            {**pipeline_env, "PULSESEAL_KEYSERVICE_PORT": str(port)},
            tmp_path,
        )
        for i, port in enumerate(ports)
    ]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    try:
        for component, url in zip(started, urls, strict=True):
            wait_healthy(component, url + "/healthz")
        yield started, {**pipeline_env, "PULSESEAL_KEYSERVICE_URL": ",".join(urls)}
    finally:
        for component in started:
            component.stop()


@pytest.fixture
async def collection(
    pipeline_env: dict[str, str], mongo_url: str
) -> AsyncIterator[AsyncCollection[dict[str, Any]]]:
    """An empty `sealed_events` of this session's database."""
    client: AsyncMongoClient[dict[str, Any]] = mongo.connect(mongo_url)
    try:
        sealed = mongo.sealed_events(client, pipeline_env["PULSESEAL_MONGO_DB"])
        await sealed.drop()
        yield sealed
    finally:
        await client.close()


def _messages(events: list[dict[str, Any]]) -> list[bytes]:
    return [
        b"".join(json.dumps(e).encode() + b"\n" for e in events[at : at + PER_MESSAGE])
        for at in range(0, len(events), PER_MESSAGE)
    ]


async def test_a_replica_killed_mid_stream_loses_nothing_and_stores_nothing_twice(
    replicas: tuple[list[Component], dict[str, str]],
    collection: AsyncCollection[dict[str, Any]],
    tmp_path: Path,
) -> None:
    (replica_a, _replica_b), env = replicas
    url_a = f"http://127.0.0.1:{replica_a.env['PULSESEAL_KEYSERVICE_PORT']}"
    amqp_url = env["PULSESEAL_AMQP_URL"]
    tag = uuid.uuid4().hex[:8]
    events = random_events(
        FIRST_HALF + SECOND_HALF,
        [f"replica-{tag}-{i}" for i in range(FIRST_HALF + SECOND_HALF)],
        random.Random(17),
    )
    for i, event in enumerate(events):  # one user per event: every micro-batch needs keys it has not seen
        event["user_id"] = f"replica-{tag}-{i}"
    encryptor: Component | None = None
    connection, channel = await open_channel(
        amqp_url, transport_keys=await keyservice_keys(env["PULSESEAL_KEYSERVICE_URL"])
    )
    try:
        await (await channel.get_queue(SEAL_QUEUE)).purge()
        await (await channel.get_queue(DEAD_QUEUE)).purge()
        sealer = TransportSealer(env["PULSESEAL_KEYSERVICE_URL"].split(","))
        async with Publisher(amqp_url, sealer=sealer, delivery_limit=5) as publisher:
            for body in _messages(events[:FIRST_HALF]):
                await publisher.publish(body, routing_key=BATCH_ROUTING_KEY, content_type=NDJSON)

            # Small micro-batches: many key requests, spread over both replicas, while the kill lands.
            encryptor = start_encryptor({**env, "PULSESEAL_BATCH_MAX_EVENTS": "100"}, tmp_path)
            await wait_for(
                lambda: _at_least(collection, FIRST_HALF // 6),
                timeout_s=60,
                every_s=0.02,
                what="sealing started",
            )
            replica_a.kill()
            stored_at_kill = await collection.count_documents({})
            assert stored_at_kill < FIRST_HALF, "the kill came after the stream: the test proves nothing"

            # A producer asking the dead replica first for the transport key fails over to the live one.
            sealer._replicas._next = [r.url for r in sealer._replicas._replicas].index(url_a)
            sealer.forget()
            fetched = sealer.fetches
            for body in _messages(events[FIRST_HALF:]):
                await publisher.publish(body, routing_key=BATCH_ROUTING_KEY, content_type=NDJSON)
            assert sealer.fetches == fetched + 2

        total = FIRST_HALF + SECOND_HALF
        await wait_for(lambda: _at_least(collection, total), timeout_s=90, what="every event stored")
        await asyncio.sleep(1.0)  # a duplicate would show up now
        ids = [d["_id"] async for d in collection.find({}, {"_id": 1})]
        assert len(ids) == total
        assert set(ids) == {e["event_id"] for e in events}
        assert await drain_dead_letters(channel, settle_s=0.5) == []
    finally:
        if encryptor is not None:
            encryptor.stop()
        await connection.close()


async def _at_least(collection: AsyncCollection[dict[str, Any]], n: int) -> bool:
    return await collection.count_documents({}) >= n
