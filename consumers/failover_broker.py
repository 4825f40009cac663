"""FastStream's `RabbitBroker` on every node of `PULSESEAL_AMQP_URL`, failing over when its node dies.

FastStream connects with aio-pika's `connect_robust`, which reconnects to the one URL it was given. This
broker hands it `pulseseal.amqp_failover`'s connection class instead, so each reconnect tries the nodes
in turn and the subscriber resumes on a live one (the queue itself is a quorum queue with a member on
every node: docs/scaling.md).
"""

from __future__ import annotations

from typing import Any

from faststream.rabbit import RabbitBroker

from pulseseal.amqp_failover import failover_connection_class
from pulseseal.amqp_urls import split_urls


class FailoverRabbitBroker(RabbitBroker):
    """A `RabbitBroker` whose connection fails over across the comma-separated URLs of `url`.

    Args:
        url: `PULSESEAL_AMQP_URL`: one URL, or one per cluster node separated by commas.
        **kwargs: `RabbitBroker`'s own options.

    Raises:
        AmqpUrlInvalid: A URL of `url` is not an AMQP URL.
    """

    def __init__(self, url: str, **kwargs: Any) -> None:
        urls = split_urls(url)
        super().__init__(urls[0], **kwargs)
        # FastStream passes these to `connect_robust` as they are (faststream 0.6-0.7); `connection_class`
        # is aio-pika's documented way to choose the connection it builds.
        self._connection_kwargs["connection_class"] = failover_connection_class(urls)
