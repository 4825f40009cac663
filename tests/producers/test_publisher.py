"""The confirmed publisher against the real RabbitMQ: confirms, mandatory returns, outages, deadlines."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from producers.publisher import BrokerUnavailable, Publisher, PublishRefused
from pulseseal.topology import BATCH_ROUTING_KEY, JSON, NDJSON
from tests.factories import valid_event
from tests.isolation import rabbitmqctl
from tests.producers.helpers import DELIVERY_LIMIT, dead_url, drain, event_ids, ndjson
from tests.transit import LocalSealer

pytestmark = pytest.mark.integration


async def test_a_confirmed_message_is_in_the_seal_queue_persistent_with_its_content_type(
    publisher: Publisher, broker: str
) -> None:
    body = ndjson([valid_event()])
    await publisher.publish(body, routing_key=BATCH_ROUTING_KEY, content_type=NDJSON)
    [message] = await drain(broker)
    assert message.body == body
    assert message.content_type == NDJSON
    assert message.routing_key == BATCH_ROUTING_KEY
    assert message.persistent


async def test_many_publishes_in_flight_are_all_confirmed_and_all_stored(
    publisher: Publisher, broker: str
) -> None:
    ids = [f"00000000-0000-4000-8000-{n:012d}" for n in range(200)]
    await asyncio.gather(
        *(
            publisher.publish(
                json.dumps(valid_event(event_id=i)).encode(),
                routing_key="events.heart_rate",
                content_type=JSON,
            )
            for i in ids
        )
    )
    assert sorted(event_ids(await drain(broker))) == sorted(ids)


async def test_an_unroutable_message_is_a_failure_not_a_silent_confirm(
    publisher: Publisher, broker: str
) -> None:
    with pytest.raises(PublishRefused, match="unroutable"):
        await publisher.publish(b"{}", routing_key="not-events.x", content_type=JSON)
    assert await drain(broker) == []


async def test_no_broker_fails_fast_and_never_shows_the_password() -> None:
    publisher = Publisher(
        dead_url(), sealer=LocalSealer(), delivery_limit=DELIVERY_LIMIT, confirm_timeout_s=5.0
    )
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable) as caught:
        await publisher.publish(b"{}", routing_key=BATCH_ROUTING_KEY, content_type=NDJSON)
    assert time.monotonic() - started < 3
    assert "secret-password" not in str(caught.value)
    # While the broker stays away, later publishes fail at once rather than queueing behind retries.
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable, match="cannot reach RabbitMQ"):
        await publisher.publish(b"{}", routing_key=BATCH_ROUTING_KEY, content_type=NDJSON)
    assert time.monotonic() - started < 0.1
    await publisher.close()


async def test_a_broker_that_never_answers_is_cut_off_at_the_deadline() -> None:
    writers: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)  # accepts the TCP connection, never speaks AMQP

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    publisher = Publisher(
        f"amqp://guest:guest@127.0.0.1:{port}/",
        sealer=LocalSealer(),
        delivery_limit=DELIVERY_LIMIT,
        connect_timeout_s=1,
    )
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable, match="in time"):
        await publisher.publish(b"{}", routing_key=BATCH_ROUTING_KEY, content_type=NDJSON, timeout_s=0.3)
    assert time.monotonic() - started < 1
    # The connection attempt goes on (shielded, for the next request) until its own timeout.
    with pytest.raises(BrokerUnavailable, match="cannot reach"):
        await publisher.connect()
    await publisher.close()
    for writer in writers:
        writer.close()
    server.close()
    await server.wait_closed()


async def test_after_the_broker_closes_the_connection_the_publisher_reconnects(
    publisher: Publisher, broker: str
) -> None:
    await publisher.publish(ndjson([valid_event()]), routing_key=BATCH_ROUTING_KEY, content_type=NDJSON)
    vhost = broker.rsplit("/", 1)[1]
    await asyncio.to_thread(rabbitmqctl, "close_all_connections", "--vhost", vhost, "test: connection loss")
    second = valid_event(event_id="11111111-1111-4111-8111-111111111111")
    for _ in range(20):
        try:
            await publisher.publish(ndjson([second]), routing_key=BATCH_ROUTING_KEY, content_type=NDJSON)
            break
        except BrokerUnavailable:
            await asyncio.sleep(0.3)  # the loss was noticed by this publish; the next one reconnects
    else:
        pytest.fail("the publisher did not reconnect")
    assert second["event_id"] in event_ids(await drain(broker))
    assert publisher.is_connected


async def test_a_closed_publisher_refuses_to_publish(broker: str) -> None:
    publisher = Publisher(broker, sealer=LocalSealer(), delivery_limit=DELIVERY_LIMIT)
    await publisher.connect()
    await publisher.close()
    with pytest.raises(BrokerUnavailable, match="closed"):
        await publisher.publish(b"{}", routing_key=BATCH_ROUTING_KEY, content_type=NDJSON)
