"""The publisher after a nack: it reconnects, and publishes in flight on the dropped channel fail as
`PublishFailed` (retryable), never as aiormq's bare `Exception` (a gateway 500).

A queue that refuses everything (`x-max-length` 0, `x-overflow` reject-publish), bound for one routing key
beside the seal queue, makes RabbitMQ nack that message, as a quorum queue without its leader does in a
cluster, while 200 others wait for their confirms on the same channel.
"""

from __future__ import annotations

import asyncio
import json

import aio_pika
import pytest

from producers.publisher import Publisher, PublishFailed, PublishRefused
from pulseseal.topology import EVENTS_EXCHANGE, JSON
from tests.factories import valid_event
from tests.producers.helpers import drain, event_ids

pytestmark = pytest.mark.integration

REFUSER = "pulseseal.test.refuser"
REFUSED_KEY = "events.refused"  # routed to the seal queue and to the refuser


async def _refuse(broker: str, on: bool) -> None:
    connection = await aio_pika.connect(broker, timeout=10)
    try:
        channel = await connection.channel()
        if on:
            queue = await channel.declare_queue(
                REFUSER, arguments={"x-max-length": 0, "x-overflow": "reject-publish"}, auto_delete=False
            )
            await queue.bind(EVENTS_EXCHANGE, routing_key=REFUSED_KEY)
        else:
            await channel.queue_delete(REFUSER)
    finally:
        await connection.close()


async def test_a_nack_amid_publishes_in_flight_fails_only_retryably_and_publishing_goes_on(
    publisher: Publisher, broker: str
) -> None:
    await _refuse(broker, True)
    try:
        refused = publisher.publish(
            json.dumps(valid_event()).encode(), routing_key=REFUSED_KEY, content_type=JSON
        )
        others = [
            publisher.publish(
                json.dumps(valid_event()).encode(), routing_key="events.heart_rate", content_type=JSON
            )
            for _ in range(200)
        ]
        outcomes = await asyncio.gather(refused, *others, return_exceptions=True)
    finally:
        await _refuse(broker, False)
    assert isinstance(outcomes[0], PublishRefused)
    unexpected = {type(o).__name__ for o in outcomes if o is not None and not isinstance(o, PublishFailed)}
    assert not unexpected, f"publishes failed with {unexpected}, not a PublishFailed (a gateway 500)"
    await drain(broker)  # whatever was confirmed before the nack

    event = valid_event()
    await publisher.publish(json.dumps(event).encode(), routing_key="events.heart_rate", content_type=JSON)
    assert event_ids(await drain(broker)) == [event["event_id"]]
