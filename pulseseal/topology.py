"""The RabbitMQ topology of docs/contract.md §4, declared the same way by every producer and the encryptor.

Declaring is idempotent. Producers declare the queue too, not just the exchange: a topic exchange drops
messages that no queue is bound to, and a producer must never be told "confirmed" for an event that went
nowhere.
"""

from __future__ import annotations

from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue
from aiormq.exceptions import ChannelPreconditionFailed

EVENTS_EXCHANGE = "pulseseal.events"
SEAL_QUEUE = "pulseseal.seal"
SEAL_BINDING = "events.#"
DEAD_EXCHANGE = "pulseseal.dead"
DEAD_QUEUE = "pulseseal.dead"
BATCH_ROUTING_KEY = "events.batch"
REDRIVE_ROUTING_KEY = "events.redrive"

JSON = "application/json"
NDJSON = "application/x-ndjson"

# Headers PulseSeal puts on the dead letters it sends (docs/contract.md §4).
ERROR_HEADER = "x-pulseseal-error"
REASON_HEADER = "x-pulseseal-reason"


class TopologyMismatch(Exception):
    """A queue or exchange already exists with other settings than PulseSeal's."""


def routing_key_for(event_type: str) -> str:
    """The routing key of a single-event message."""
    return f"events.{event_type}"


def seal_queue_arguments(delivery_limit: int) -> dict[str, Any]:
    """The `pulseseal.seal` queue arguments (arguments, not a policy, so clients can see them)."""
    return {
        "x-queue-type": "quorum",
        "x-delivery-limit": delivery_limit,
        "x-dead-letter-exchange": DEAD_EXCHANGE,
    }


async def declare_topology(channel: AbstractChannel, *, delivery_limit: int) -> AbstractExchange:
    """Declare both exchanges, both quorum queues and their bindings; return the events exchange.

    Raises:
        TopologyMismatch: an existing queue or exchange was declared with different arguments (the
            channel is closed by the broker in that case; open a new one).
    """
    try:
        events = await channel.declare_exchange(EVENTS_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
        dead = await channel.declare_exchange(DEAD_EXCHANGE, aio_pika.ExchangeType.FANOUT, durable=True)
        dead_queue = await channel.declare_queue(
            DEAD_QUEUE, durable=True, arguments={"x-queue-type": "quorum"}
        )
        await dead_queue.bind(dead, routing_key="")
        seal_queue = await declare_seal_queue(channel, delivery_limit=delivery_limit)
        await seal_queue.bind(events, routing_key=SEAL_BINDING)
    except ChannelPreconditionFailed as exc:
        raise TopologyMismatch(
            "RabbitMQ already has a PulseSeal queue or exchange with different settings "
            f"({exc.args[0] if exc.args else 'precondition failed'}); delete it or match "
            "PULSESEAL_DELIVERY_LIMIT to it"
        ) from None
    return events


async def declare_seal_queue(channel: AbstractChannel, *, delivery_limit: int) -> AbstractQueue:
    """Declare the `pulseseal.seal` quorum queue."""
    return await channel.declare_queue(
        SEAL_QUEUE, durable=True, arguments=seal_queue_arguments(delivery_limit)
    )
