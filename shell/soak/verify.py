"""After the traffic: wait for the pipeline to drain, then check every accepted event against MongoDB.

An accepted event must be stored exactly once (the `_id` is the event id, so "once" is "present") and
open, with the auditor's keys, to exactly the event that was sent (its canonical JSON's fingerprint). A
stored id nobody accepted is allowed only if it was attempted (a 503 can follow a partial publish).
Nothing accepted may be in the dead-letter queue.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
from pymongo.asynchronous.collection import AsyncCollection

from consumers.deadletters import EVENT_ID_HEADER
from keyservice.client import KeyServiceClient
from keyservice.client.transport_public import TransportSealer
from pulseseal import amqp_failover
from pulseseal.envelope import IntegrityError, open_sealed
from pulseseal.settings import Settings
from pulseseal.topology import BATCH_ROUTING_KEY, DEAD_QUEUE, EVENTS_EXCHANGE, NDJSON, SEAL_QUEUE
from schemas import canonical_json
from shell.soak.traffic import Ledger, fingerprint

Documents = list[dict[str, Any]]


@dataclass
class Openings:
    """The result of opening every document with the keys the key service hands the auditor."""

    opened: int = 0
    matched: int = 0
    failed: list[str] = field(default_factory=list)
    keys_missing: dict[str, str] = field(default_factory=dict)  # "user:version" → reason


@dataclass
class DeadLetters:
    """What the dead-letter queue holds."""

    messages: int = 0
    accepted_ids: list[str] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)


async def seal_queue_ready(amqp_url: str) -> int | None:
    """Messages waiting in `pulseseal.seal`, or None when the broker does not answer."""
    try:
        connection = await amqp_failover.connect(amqp_url, timeout_s=5)
    except Exception:  # noqa: BLE001 - any failure to connect means "not known now"
        return None
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(SEAL_QUEUE, passive=True)
        return int(queue.declaration_result.message_count or 0)


async def stored_ids(collection: AsyncCollection[dict[str, Any]]) -> set[str]:
    """Every `_id` in `sealed_events`."""
    return {str(doc["_id"]) async for doc in collection.find({}, {"_id": 1})}


async def wait_drained(
    amqp_url: str,
    collection: AsyncCollection[dict[str, Any]],
    ledger: Ledger,
    in_flight: Callable[[], Awaitable[float]],
    *,
    timeout_s: float,
) -> tuple[float, set[str]]:
    """Wait until every accepted event is stored (or the timeout); returns the seconds waited and the ids."""
    started = time.monotonic()
    quiet = 0
    ids: set[str] = set()
    while time.monotonic() - started < timeout_s:
        ready = await seal_queue_ready(amqp_url)
        quiet = quiet + 1 if ready == 0 and await in_flight() == 0 else 0
        if quiet >= 2:
            ids = await stored_ids(collection)
            if ledger.accepted.keys() <= ids:
                break
            quiet = 0
        await asyncio.sleep(1.0)
    else:
        ids = await stored_ids(collection)
    return time.monotonic() - started, ids


async def load_documents(collection: AsyncCollection[dict[str, Any]]) -> Documents:
    """Every sealed document."""
    return [doc async for doc in collection.find({})]


async def open_all(
    documents: Documents, ledger: Ledger, keyservice_url: str, home: Path, purpose: str
) -> Openings:
    """Open every document with keys granted to the auditor, and compare each with what was sent."""
    settings = Settings(keyservice_url=keyservice_url, home=home)
    result = Openings()
    refs = {(str(d["user_id"]), int(d["key_version"])) for d in documents}
    async with KeyServiceClient.from_settings(settings, "auditor") as auditor:
        granted = await auditor.decrypt_keys(refs, purpose=purpose)
    result.keys_missing = {f"{u}:{v}": reason for (u, v), reason in granted.missing.items()}
    for doc in documents:
        key = granted.keys.get((str(doc["user_id"]), int(doc["key_version"])))
        if key is None:
            result.failed.append(str(doc["_id"]))
            continue
        try:
            event = open_sealed(doc, key)
        except IntegrityError:
            result.failed.append(str(doc["_id"]))
            continue
        result.opened += 1
        if ledger.accepted.get(event.event_id) == fingerprint(canonical_json(event)):
            result.matched += 1
    return result


async def read_dead_letters(amqp_url: str, ledger: Ledger) -> DeadLetters:
    """Every message in `pulseseal.dead`, taken without acknowledging (so they stay).

    Bodies are kept as the broker holds them (transport-sealed: the hunt checks they hold no canary);
    accepted events among them are found by the clear `x-pulseseal-event-id` header, and by the body for a
    plaintext letter from before transport sealing.
    """
    result = DeadLetters()
    connection = await amqp_failover.connect(amqp_url, timeout_s=10)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(DEAD_QUEUE, passive=True)
        while (message := await queue.get(no_ack=False, fail=False)) is not None:
            result.messages += 1
            result.bodies.append(message.body)
            header_id = (message.headers or {}).get(EVENT_ID_HEADER)
            if isinstance(header_id, bytes):
                header_id = header_id.decode("ascii", "replace")
            if isinstance(header_id, str) and header_id in ledger.accepted:
                result.accepted_ids.append(header_id)
                continue
            for line in message.body.splitlines():
                try:
                    event_id = json.loads(line).get("event_id")
                except (ValueError, AttributeError):
                    continue
                if isinstance(event_id, str) and event_id in ledger.accepted:
                    result.accepted_ids.append(event_id)
    return result


async def publish_rogue(amqp_url: str, keyservice_url: str, events: list[dict[str, Any]]) -> None:
    """Publish events straight to the exchange, past every producer's validation (a misbehaving
    producer that still seals, as every producer must): the encryptor must dead-letter the invalid ones."""
    body = b"".join(json.dumps(e, ensure_ascii=False).encode() + b"\n" for e in events)
    async with TransportSealer(keyservice_url) as sealer:
        sealed = await sealer.seal(body, NDJSON)
    connection = await amqp_failover.connect(amqp_url, timeout_s=10)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(EVENTS_EXCHANGE)
        message = aio_pika.Message(
            sealed.body,
            content_type=NDJSON,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            headers=sealed.headers,
        )
        await exchange.publish(message, routing_key=BATCH_ROUTING_KEY, mandatory=True)


async def dead_letter_count(amqp_url: str) -> int:
    """Messages in `pulseseal.dead`."""
    connection = await amqp_failover.connect(amqp_url, timeout_s=10)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(DEAD_QUEUE, passive=True)
        return int(queue.declaration_result.message_count or 0)
