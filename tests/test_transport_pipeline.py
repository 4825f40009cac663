"""Transport sealing end to end with real processes (contract §4): the key service, encryptors, the
gateway, the importer and `dead redrive`, on this session's vhost and database.

Producers keep working across a transport-key rotation with old-key messages still queued; a message
sealed under a retired key is refused; and after a run through every producer, no file under the
broker's data directory holds any of this run's canary values — checked where the data rests, with a
plaintext control message to prove the scan sees what the broker writes.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import pytest
from aio_pika.abc import AbstractChannel
from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection

from keyservice.client import KeyServiceClient
from keyservice.client.transport_keys import retire_transport_key, rotate_transport_key
from keyservice.client.transport_public import TransportSealer
from producers.publisher import Publisher
from pulseseal import mongo
from pulseseal.settings import Settings, load_settings
from pulseseal.topology import (
    BATCH_ROUTING_KEY,
    DEAD_QUEUE,
    ERROR_HEADER,
    EVENTS_EXCHANGE,
    NDJSON,
    SEAL_QUEUE,
)
from pulseseal.transit import TRANSPORT_HEADER, TRANSPORT_KEY_HEADER, seal
from shell.demo.traffic import read_secret, user_token
from tests.consumers.helpers import drain_dead_letters, open_channel, publish_raw, wait_for
from tests.factories import random_events, valid_event
from tests.isolation import rabbitmqctl
from tests.processes import Component, start, wait_healthy
from tests.transit import keyservice_keys, open_raw

pytestmark = pytest.mark.integration

PULSESEAL = str(Path(sys.executable).with_name("pulseseal"))
Stack = tuple[AsyncCollection[dict[str, Any]], AbstractChannel, str]


@pytest.fixture
async def stack(
    pipeline_env: dict[str, str], mongo_url: str, keyservice_process: Component
) -> AsyncIterator[Stack]:
    """An empty `sealed_events`, empty queues, a channel, and the key service's URL."""
    client: AsyncMongoClient[dict[str, Any]] = mongo.connect(mongo_url)
    url = pipeline_env["PULSESEAL_KEYSERVICE_URL"]
    try:
        collection = mongo.sealed_events(client, pipeline_env["PULSESEAL_MONGO_DB"])
        await collection.drop()
        keys = await keyservice_keys(url)
        connection, channel = await open_channel(pipeline_env["PULSESEAL_AMQP_URL"], transport_keys=keys)
        try:
            await (await channel.get_queue(SEAL_QUEUE)).purge()
            await (await channel.get_queue(DEAD_QUEUE)).purge()
            yield collection, channel, url
        finally:
            await connection.close()
    finally:
        await client.close()


def _admin(url: str) -> KeyServiceClient:
    return KeyServiceClient.from_settings(Settings(keyservice_url=url), "admin")


def _ndjson(events: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(e).encode() + b"\n" for e in events)


async def _count(collection: AsyncCollection[dict[str, Any]], n: int) -> bool:
    return await collection.count_documents({}) == n


async def _raw_queue(channel_url: str, queue_name: str) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Every message of a queue, raw, left in place (taken unacknowledged, then handed back)."""
    connection = await aio_pika.connect(channel_url)
    try:
        channel = await connection.channel()
        queue = await channel.get_queue(queue_name, ensure=False)
        taken = []
        while (message := await queue.get(no_ack=False, fail=False)) is not None:
            taken.append(message)
        await channel.close()
        return taken
    finally:
        await connection.close()


async def test_producers_keep_working_across_a_rotation_with_old_key_messages_queued(
    stack: Stack, encryptors: Callable[[], Component], pipeline_env: dict[str, str]
) -> None:
    collection, channel, url = stack
    amqp_url = pipeline_env["PULSESEAL_AMQP_URL"]
    users = [f"rotation-{uuid.uuid4().hex[:8]}-{i}" for i in range(20)]
    old_events = random_events(300, users, random.Random(31))
    new_events = random_events(300, users, random.Random(32))
    sealer = TransportSealer(url)
    async with Publisher(amqp_url, sealer=sealer, delivery_limit=5) as publisher:
        for at in range(0, 300, 100):
            await publisher.publish(
                _ndjson(old_events[at : at + 100]), routing_key=BATCH_ROUTING_KEY, content_type=NDJSON
            )
        old_id = (await sealer.public_key()).key_id
        async with _admin(url) as admin:
            new_id = await rotate_transport_key(admin)
        sealer.forget()  # as after `refresh_s`: the producer follows the rotation
        for at in range(0, 300, 100):
            await publisher.publish(
                _ndjson(new_events[at : at + 100]), routing_key=BATCH_ROUTING_KEY, content_type=NDJSON
            )
    assert new_id != old_id
    queued = await _raw_queue(amqp_url, SEAL_QUEUE)
    assert [m.headers[TRANSPORT_KEY_HEADER] for m in queued] == [old_id] * 3 + [new_id] * 3

    encryptors()
    await wait_for(lambda: _count(collection, 600), timeout_s=60, what="every event of both keys")
    assert await drain_dead_letters(channel, settle_s=0.5) == []


async def test_a_message_sealed_under_a_retired_key_is_refused_and_never_stored(
    stack: Stack, encryptors: Callable[[], Component]
) -> None:
    collection, channel, url = stack
    async with TransportSealer(url) as sealer:
        old = await sealer.public_key()
    async with _admin(url) as admin:
        await rotate_transport_key(admin)
        late = seal(_ndjson(random_events(5, ["retired-key-user"], random.Random(33))), old, NDJSON)
        await retire_transport_key(admin, old.key_id)
    exchange = await channel.get_exchange(EVENTS_EXCHANGE)
    message = aio_pika.Message(late.body, content_type=NDJSON, headers=late.headers)
    await exchange.publish(message, routing_key=BATCH_ROUTING_KEY, mandatory=True)
    encryptors()
    keys = await keyservice_keys(url)
    assert old.key_id not in keys
    [dead] = await drain_dead_letters(channel, settle_s=3.0, keys=keys)
    assert dead.headers[ERROR_HEADER] == "transport_unopenable"
    assert await collection.count_documents({}) == 0


def _broker_data_dir() -> Path:
    """The running broker's own data directory (`HOME/rabbitmq`), as the node reports it: under
    `make test` that is this checkout's `PULSESEAL_HOME/rabbitmq`; in development, the shared one."""
    mnesia = Path(rabbitmqctl("eval", "rabbit_mnesia:dir().").strip().strip('"'))
    data_dir = mnesia.parents[1]
    assert data_dir.name == "rabbitmq", data_dir
    local = load_settings().home_dir / "rabbitmq"
    if local.is_dir():
        assert data_dir == local.resolve()
    return data_dir


def _occurrences(directory: Path, needles: list[bytes]) -> dict[bytes, int]:
    found = dict.fromkeys(needles, 0)
    for path in directory.rglob("*"):
        if not path.is_file():
            continue
        try:
            data = path.read_bytes()
        except OSError:
            continue  # a file rotated away while we looked
        for needle in needles:
            found[needle] += data.count(needle)
    return found


async def test_no_canary_value_rests_in_any_file_of_the_broker_after_a_run_through_every_producer(
    stack: Stack,
    encryptors: Callable[[], Component],
    pipeline_env: dict[str, str],
    tmp_path: Path,
) -> None:
    collection, channel, url = stack
    amqp_url = pipeline_env["PULSESEAL_AMQP_URL"]
    run = uuid.uuid4().hex
    canaries = [f"canary-broker-{run}-{n}".encode() for n in range(4)]
    control = f"control-plaintext-{run}".encode()
    gateway_user, import_user, shredded_user = (f"broker-{n}-{run[:12]}" for n in range(3))

    encryptors()
    gateway = start("gateway", ["gateway"], pipeline_env, tmp_path)
    try:
        wait_healthy(gateway, pipeline_env["PULSESEAL_GATEWAY_URL"] + "/healthz")
        secret = read_secret(load_settings().credentials_dir / "gateway-jwt.secret")
        by_gateway = [
            valid_event(
                "medication",
                event_id=str(uuid.uuid4()),
                user_id=gateway_user,
                data={"name": canaries[0].decode()},
            ),
            valid_event(
                "migraine_attack",
                event_id=str(uuid.uuid4()),
                user_id=gateway_user,
                data={"notes": canaries[1].decode()},
            ),
        ]
        async with _admin(url) as admin:
            await admin.shred(shredded_user)
        shredded = valid_event(
            "medication",
            event_id=str(uuid.uuid4()),
            user_id=shredded_user,
            data={"name": canaries[3].decode()},
        )
        async with httpx.AsyncClient(base_url=pipeline_env["PULSESEAL_GATEWAY_URL"], timeout=10) as http:
            for user, events in ((gateway_user, by_gateway), (shredded_user, [shredded])):
                answer = await http.post(
                    "/v1/events", json=events, headers={"Authorization": f"Bearer {user_token(secret, user)}"}
                )
                assert answer.status_code == 202, answer.text
    finally:
        gateway.stop()

    imported = valid_event(
        "medication", event_id=str(uuid.uuid4()), user_id=import_user, data={"name": canaries[2].decode()}
    )
    path = tmp_path / "canaries.ndjson"
    path.write_text(json.dumps(imported) + "\n")
    result = await asyncio.to_thread(
        subprocess.run,
        [PULSESEAL, "import", str(path)],
        env={**_env(), **pipeline_env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    await wait_for(lambda: _count(collection, 3), timeout_s=60, what="the three valid canary events")

    # The shredded user's event is dead-lettered (sealed); redrive it, so `dead redrive` publishes too.
    await wait_for(lambda: _dead_count(amqp_url, 1), timeout_s=30, what="the shredded user's dead letter")
    redriven = await asyncio.to_thread(
        subprocess.run,
        [PULSESEAL, "dead", "redrive"],
        env={**_env(), **pipeline_env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert redriven.returncode == 0, redriven.stderr
    assert "moved 1 dead letter(s)" in redriven.stdout
    await wait_for(
        lambda: _dead_count(amqp_url, 1), timeout_s=30, what="the redriven letter back in the dead queue"
    )

    # The raw bodies on the broker: sealed, with no canary; opened, the canary is there.
    keys = await keyservice_keys(url)
    [dead] = await _raw_queue(amqp_url, DEAD_QUEUE)
    assert dead.headers[TRANSPORT_HEADER] == "hpke-v1"
    assert canaries[3] not in dead.body
    assert canaries[3] in open_raw(dead.body, dead.headers, dead.content_type, keys)

    # A positive control: one plaintext message (what a producer without sealing would send) is found
    # by the same scan, so a scan that finds no canary has looked where the broker writes.
    await publish_raw(
        channel, json.dumps({"control": control.decode()}).encode(), NDJSON, BATCH_ROUTING_KEY, sealed=False
    )
    control_dead = await drain_dead_letters(channel, settle_s=2.0, keys=keys)
    assert [d.headers[ERROR_HEADER] for d in control_dead if control in d.body] == ["unsealed_transport"]

    found = await asyncio.to_thread(_occurrences, _broker_data_dir(), [*canaries, control])
    assert found[control] >= 1, "the scan did not see the plaintext control message: it proves nothing"
    assert {c.decode(): found[c] for c in canaries} == {c.decode(): 0 for c in canaries}


async def _dead_count(amqp_url: str, n: int) -> bool:
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(DEAD_QUEUE, passive=True)
        return int(queue.declaration_result.message_count or 0) == n
    finally:
        await connection.close()


def _env() -> dict[str, str]:
    return dict(os.environ)
