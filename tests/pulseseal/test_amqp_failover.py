"""Connecting through a node list: a dead node is skipped, for one-shot and robust connections alike.

The dead node is a loopback port nothing listens on (a node killed outright refuses just like that); the
live one is the shared RabbitMQ, on this session's own vhost. The cluster itself is in tests/cluster/.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import aio_pika
import pytest
from aiormq.exceptions import AMQPConnectionError

from consumers.failover_broker import FailoverRabbitBroker
from pulseseal.amqp_failover import NodeList, failover_connection_class
from tests.processes import free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def dead_url(isolated_amqp_url: str) -> str:
    """`isolated_amqp_url` on a port where nothing listens."""
    parts = urlsplit(isolated_amqp_url)
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.port}", f":{free_port()}")))


async def test_a_dead_first_node_is_skipped_and_the_live_one_remembered(
    dead_url: str, isolated_amqp_url: str
) -> None:
    assert dead_url != isolated_amqp_url
    nodes = NodeList(f"{dead_url},{isolated_amqp_url}")
    connection = await nodes.connect(timeout_s=5)
    try:
        assert nodes.current == isolated_amqp_url
        assert not connection.is_closed
    finally:
        await connection.close()


async def test_no_live_node_raises_the_last_failure(dead_url: str) -> None:
    nodes = NodeList(f"{dead_url},{dead_url}")
    with pytest.raises((AMQPConnectionError, ConnectionError, OSError)):
        await nodes.connect(timeout_s=2)


async def test_a_robust_connection_skips_a_dead_node(dead_url: str, isolated_amqp_url: str) -> None:
    connection = await aio_pika.connect_robust(
        dead_url,
        timeout=5,
        connection_class=failover_connection_class(f"{dead_url},{isolated_amqp_url}"),
    )
    try:
        channel = await connection.channel()
        await channel.declare_queue("", exclusive=True)
        assert connection.url.port == urlsplit(isolated_amqp_url).port
    finally:
        await connection.close()


async def test_the_encryptors_broker_starts_on_the_live_node(dead_url: str, isolated_amqp_url: str) -> None:
    broker = FailoverRabbitBroker(f"{dead_url},{isolated_amqp_url}", logger=None)
    try:
        await broker.connect()
        assert await broker.ping(timeout=5)
    finally:
        await broker.stop()
