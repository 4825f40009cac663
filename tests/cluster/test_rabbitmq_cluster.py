"""The RabbitMQ cluster path: quorum queues on every node, and a node killed mid-stream loses nothing.

A producer (`producers.publisher.Publisher`, retrying what was not confirmed, as every PulseSeal
producer does) and two real encryptor processes run against the 3-node cluster; the node that leads
`pulseseal.seal` is killed with SIGKILL while events flow. The producer and one encryptor were connected
to that node and must fail over. Exact counts: every event published is stored exactly once, the queues
drain, nothing is dead-lettered, and the killed node restarts and rejoins with its queue members.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection

from keyservice.client.transport_public import TransportSealer
from producers.publisher import Publisher, PublishFailed
from pulseseal import amqp_failover, mongo
from pulseseal.settings import Settings
from pulseseal.topology import BATCH_ROUTING_KEY, DEAD_QUEUE, NDJSON, SEAL_QUEUE, declare_topology
from shell.rabbitmq_cluster import RabbitCluster
from tests.consumers.helpers import wait_for
from tests.factories import random_events
from tests.isolation import session_tag
from tests.processes import Component, start_encryptor

pytestmark = pytest.mark.integration

EVENTS = 4000
BATCH = 50
USERS = [f"cluster-{i:03d}" for i in range(200)]


@pytest.fixture
async def topology(cluster: RabbitCluster, settings: Settings) -> RabbitCluster:
    """The cluster with PulseSeal's topology declared and both queues empty."""
    connection = await amqp_failover.connect(cluster.urls(), timeout_s=10)
    try:
        channel = await connection.channel()
        await declare_topology(channel, delivery_limit=settings.delivery_limit)
        for name in (SEAL_QUEUE, DEAD_QUEUE):
            await (await channel.get_queue(name)).purge()
    finally:
        await connection.close()
    return cluster


@pytest.fixture
async def collection(mongo_url: str) -> AsyncIterator[AsyncCollection[dict[str, Any]]]:
    """`sealed_events` in a database of this test's own, dropped afterwards."""
    client: AsyncMongoClient[dict[str, Any]] = mongo.connect(mongo_url)
    name = f"pulseseal_cluster_{session_tag()}"
    try:
        yield mongo.sealed_events(client, name)
    finally:
        await client.drop_database(name)
        await client.close()


async def test_every_quorum_queue_has_a_member_on_each_node(topology: RabbitCluster) -> None:
    queues = topology.quorum_queues()
    nodes = sorted(topology.node_name(port) for port in topology.ports)
    for name in (SEAL_QUEUE, DEAD_QUEUE):
        leader, members, online = queues[name]
        assert sorted(members) == nodes, name
        assert sorted(online) == nodes, name
        assert leader in nodes


@pytest.mark.slow
async def test_killing_the_seal_queues_leader_mid_stream_stores_every_event_exactly_once(
    topology: RabbitCluster,
    collection: AsyncCollection[dict[str, Any]],
    pipeline_env: dict[str, str],
    keyservice_process: Component,
    settings: Settings,
    tmp_path: Path,
) -> None:
    cluster = topology
    leader = cluster.leader_port(SEAL_QUEUE)
    survivor = next(port for port in cluster.ports if port != leader)
    env = pipeline_env | {"PULSESEAL_MONGO_DB": collection.database.name}
    # One encryptor on the leader (it must fail over), one on another node (it keeps consuming).
    on_leader = start_encryptor(env | {"PULSESEAL_AMQP_URL": cluster.urls(first=leader)}, tmp_path / "a")
    elsewhere = start_encryptor(env | {"PULSESEAL_AMQP_URL": cluster.urls(first=survivor)}, tmp_path / "b")
    encryptors = [on_leader, elsewhere]
    try:
        events = random_events(EVENTS, USERS, random.Random(17))
        confirmed = 0
        killed_at: float | None = None
        resumed_s: float | None = None
        sealer = TransportSealer(pipeline_env["PULSESEAL_KEYSERVICE_URL"])
        async with Publisher(
            cluster.urls(first=leader), sealer=sealer, delivery_limit=settings.delivery_limit
        ) as publisher:
            for at in range(0, EVENTS, BATCH):
                body = b"".join(json.dumps(e).encode() + b"\n" for e in events[at : at + BATCH])
                await _publish_until_confirmed(publisher, body)
                confirmed += BATCH
                if killed_at is None and confirmed >= EVENTS // 4:
                    await wait_for(lambda: _stored_at_least(collection, 200), timeout_s=60, what="200 stored")
                    await asyncio.to_thread(cluster.kill, leader)
                    killed_at = time.monotonic()
                    acked_at_kill = await _acked(on_leader)
                    stored_at_kill = await collection.count_documents({})
                if (
                    killed_at is not None
                    and resumed_s is None
                    and await collection.count_documents({}) > (stored_at_kill + BATCH)
                ):
                    resumed_s = time.monotonic() - killed_at
                await asyncio.sleep(0.05)
        assert killed_at is not None
        assert stored_at_kill < EVENTS, "the kill must land mid-stream for this test to mean anything"

        await wait_for(lambda: _stored_at_least(collection, EVENTS), timeout_s=90, what="every event stored")
        if resumed_s is None:
            resumed_s = time.monotonic() - killed_at
        ids = await collection.distinct("_id")
        assert len(ids) == EVENTS
        assert await collection.count_documents({}) == EVENTS
        assert set(ids) == {e["event_id"] for e in events}
        assert await _queue_count(cluster, survivor, SEAL_QUEUE) == 0
        assert await _queue_count(cluster, survivor, DEAD_QUEUE) == 0
        assert await _acked(on_leader) > acked_at_kill, "the encryptor whose node died consumes again"
        for component in encryptors:
            assert component.process.poll() is None, component.log()
            assert '"msg": "dead-lettered"' not in component.log()

        restarted = time.monotonic()
        await asyncio.to_thread(cluster.up)
        leader_node = cluster.node_name(leader)
        _, members, online = cluster.quorum_queues()[SEAL_QUEUE]
        assert leader_node in members, "the killed node is still a member"
        assert leader_node in online, "the killed node rejoins"
        print(
            f"\ncluster: events flowed again {resumed_s:.1f} s after the leader's kill; "
            f"killed node back and rejoined in {time.monotonic() - restarted:.1f} s"
        )
    finally:
        for component in encryptors:
            component.stop()


async def _publish_until_confirmed(publisher: Publisher, body: bytes) -> None:
    """Publish one batch, retrying until confirmed: an unconfirmed batch may be stored already, and the
    store keeps one document per event id, so a retry never stores twice."""
    deadline = time.monotonic() + 60
    while True:
        try:
            await publisher.publish(body, routing_key=BATCH_ROUTING_KEY, content_type=NDJSON)
            return
        except PublishFailed:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)  # soon: a reconnect during the queue's election is the hard case


async def _stored_at_least(collection: AsyncCollection[dict[str, Any]], n: int) -> bool:
    return await collection.count_documents({}) >= n


async def _queue_count(cluster: RabbitCluster, port: int, name: str) -> int:
    connection = await amqp_failover.connect(cluster.url(port), timeout_s=10)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(name, passive=True)
        return int(queue.declaration_result.message_count or 0)
    finally:
        await connection.close()


async def _acked(encryptor: Component) -> float:
    """The encryptor's `pulseseal_messages_acked_total` (from its /metrics)."""
    port = await asyncio.to_thread(encryptor.child.encryptor_port)
    async with httpx.AsyncClient(timeout=5) as http:
        text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
    for line in text.splitlines():
        if line.startswith("pulseseal_messages_acked_total "):
            return float(line.split()[1])
    raise AssertionError("the encryptor's /metrics has no pulseseal_messages_acked_total")
