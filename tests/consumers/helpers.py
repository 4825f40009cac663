"""Helpers for encryptor tests: a deterministic key source, publishing, waiting and reading the DLQ."""

from __future__ import annotations

import asyncio
import hashlib
import json
import weakref
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel
from pymongo.asynchronous.collection import AsyncCollection

from consumers.keys import SHREDDED, KeysUnavailable
from keyservice.client import EncryptKeys
from pulseseal.envelope import DataKey
from pulseseal.topology import (
    BATCH_ROUTING_KEY,
    DEAD_QUEUE,
    EVENTS_EXCHANGE,
    JSON,
    NDJSON,
    declare_topology,
    routing_key_for,
)
from pulseseal.transit import TransportPrivateKey
from tests.transit import LOCAL_KEY, open_raw, sealed_body


def fixed_key_material(user_id: str, version: int = 1) -> bytes:
    """A fixed 32-byte key per (user, version), so tests can open what they sealed."""
    return hashlib.sha256(f"pulseseal-test-key:{user_id}:{version}".encode()).digest()


class FakeKeySource:
    """An in-memory key source: every user has version 1 unless shredded; can be made unavailable."""

    def __init__(self, shredded: Collection[str] = ()) -> None:
        self.shredded = set(shredded)
        self.unavailable = False
        self.requests: list[frozenset[str]] = []

    async def reachable(self) -> bool:
        """Unless made unavailable."""
        return not self.unavailable

    async def encrypt_keys(self, user_ids: Collection[str]) -> EncryptKeys:
        """Version-1 keys for every user not shredded."""
        if self.unavailable:
            raise KeysUnavailable("fake key service is down")
        self.requests.append(frozenset(user_ids))
        keys = {u: DataKey(u, 1, fixed_key_material(u)) for u in user_ids if u not in self.shredded}
        return EncryptKeys(keys=keys, refused={u: SHREDDED for u in user_ids if u in self.shredded})


# The transport keys each channel seals with (the first) and opens dead letters with, by channel.
_CHANNEL_KEYS: weakref.WeakKeyDictionary[AbstractChannel, dict[str, TransportPrivateKey]] = (
    weakref.WeakKeyDictionary()
)


async def open_channel(
    url: str, *, transport_keys: Mapping[str, TransportPrivateKey] | None = None
) -> tuple[aio_pika.abc.AbstractRobustConnection, AbstractChannel]:
    """A connection and a confirming channel with the topology declared.

    What the helpers publish on the channel is sealed under the first of `transport_keys` (a real key
    service's, current first: `tests.transit.keyservice_keys`), and the dead letters they take are opened
    with them; by default the tests' local key.
    """
    connection = await aio_pika.connect_robust(url)
    channel = await connection.channel(publisher_confirms=True)
    await declare_topology(channel, delivery_limit=5)
    _CHANNEL_KEYS[channel] = dict(transport_keys or {LOCAL_KEY.key_id: LOCAL_KEY})
    return connection, channel


def _sealing_key(channel: AbstractChannel) -> TransportPrivateKey:
    return next(iter(_CHANNEL_KEYS.get(channel, {LOCAL_KEY.key_id: LOCAL_KEY}).values()))


async def publish_raw(
    channel: AbstractChannel,
    body: bytes,
    content_type: str,
    routing_key: str,
    *,
    sealed: bool = True,
    key: TransportPrivateKey | None = None,
    **properties: Any,
) -> None:
    """Publish one message, confirmed: transport-sealed under `key` (default: the channel's) as a
    producer does, or (with `sealed=False`) plaintext as a misbehaving producer would."""
    headers: dict[str, Any] | None = None
    if sealed:
        body, headers = sealed_body(body, content_type, key or _sealing_key(channel))
    exchange = await channel.get_exchange(EVENTS_EXCHANGE)
    await exchange.publish(
        aio_pika.Message(
            body,
            content_type=content_type,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            headers=headers,
            **properties,
        ),
        routing_key=routing_key,
        mandatory=True,
    )


async def publish_single(channel: AbstractChannel, event: Mapping[str, Any], **properties: Any) -> None:
    """Publish one event as a sealed application/json message, confirmed."""
    routing_key = routing_key_for(str(event.get("type", "unknown")))
    await publish_raw(channel, json.dumps(event).encode(), JSON, routing_key, **properties)


async def publish_lines(channel: AbstractChannel, lines: Iterable[bytes], **properties: Any) -> None:
    """Publish raw NDJSON lines as one sealed application/x-ndjson message, confirmed."""
    await publish_raw(channel, b"\n".join(lines) + b"\n", NDJSON, BATCH_ROUTING_KEY, **properties)


async def publish_batch(channel: AbstractChannel, events: Iterable[Mapping[str, Any]]) -> None:
    """Publish events as one NDJSON message, confirmed."""
    await publish_lines(channel, (json.dumps(e).encode() for e in events))


async def wait_for(
    condition: Callable[[], Any], *, timeout_s: float = 30.0, every_s: float = 0.1, what: str = "condition"
) -> None:
    """Poll an async or sync condition until it is truthy; fail with `what` after the timeout."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(every_s)


async def count_documents(collection: AsyncCollection[dict[str, Any]]) -> int:
    """How many sealed documents there are."""
    return await collection.count_documents({})


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A dead letter taken off `pulseseal.dead`: `body` opened, `raw` as the broker held it."""

    body: bytes
    headers: dict[str, Any]
    content_type: str | None
    raw: bytes


async def drain_dead_letters(
    channel: AbstractChannel,
    *,
    settle_s: float = 1.0,
    keys: Mapping[str, TransportPrivateKey] | None = None,
) -> list[DeadLetter]:
    """Take every message from `pulseseal.dead` (acking them), waiting `settle_s` for stragglers; each must
    be transport-sealed (asserted) and is opened with `keys` (default: the channel's)."""
    keys = keys if keys is not None else _CHANNEL_KEYS.get(channel)
    queue = await channel.get_queue(DEAD_QUEUE)
    taken: list[DeadLetter] = []
    loop = asyncio.get_running_loop()
    quiet_until = loop.time() + settle_s
    while loop.time() < quiet_until:
        message = await queue.get(no_ack=False, fail=False)
        if message is None:
            await asyncio.sleep(0.1)
            continue
        await message.ack()
        headers = dict(message.headers or {})
        body = open_raw(message.body, headers, message.content_type, keys)
        taken.append(DeadLetter(body, headers, message.content_type, message.body))
        quiet_until = loop.time() + settle_s
    return taken
