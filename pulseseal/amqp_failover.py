"""Connecting to a live node of a RabbitMQ cluster, and again to a live one after it dies.

Every client connects through here, with the nodes of `PULSESEAL_AMQP_URL` (`pulseseal/amqp_urls.py`):

- `NodeList.connect` (one-shot connections: the publisher, the encryptor's topology declaration, CLI
  tools) tries each node once, starting at the last one that answered, and raises the last failure when
  none does. A node killed outright refuses at once, so the next one is tried without delay.
- `failover_connection_class` gives aio-pika's `connect_robust` (FastStream's `RabbitBroker` uses it) a
  connection that does the same on every reconnect: aio-pika's own robust connection only ever retries
  the URL it was made with, so a consumer of a dead node would wait for that node forever.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import cast

import aio_pika
from aio_pika.abc import AbstractConnection
from aio_pika.exceptions import CONNECTION_EXCEPTIONS
from aio_pika.robust_connection import RobustConnection
from yarl import URL

from pulseseal.amqp_urls import split_urls

# Connection attempts fail with these when a node is down, refusing or too slow; the next node is tried.
_NODE_DOWN = (*CONNECTION_EXCEPTIONS, OSError, TimeoutError)


class NodeList:
    """The nodes of `PULSESEAL_AMQP_URL`, and which one answered last.

    Args:
        value: The setting (one URL or several, comma-separated).

    Raises:
        AmqpUrlInvalid: As `split_urls`.
    """

    def __init__(self, value: str) -> None:
        self.urls = split_urls(value)
        self._current = 0

    @property
    def current(self) -> str:
        """The URL tried first next time (the one that answered last)."""
        return self.urls[self._current]

    async def connect(self, *, timeout_s: float) -> AbstractConnection:
        """A connection to the first node that answers, trying each once from the last one that did.

        Raises:
            Exception: What the last node's attempt raised (a connection error or `TimeoutError`) when
                no node answered.
        """
        failure: BaseException | None = None
        for step in range(len(self.urls)):
            index = (self._current + step) % len(self.urls)
            try:
                connection = await aio_pika.connect(self.urls[index], timeout=timeout_s)
            except _NODE_DOWN as exc:
                failure = exc
                continue
            self._current = index
            return connection
        assert failure is not None  # at least one URL, so at least one attempt
        raise failure


async def connect(value: str, *, timeout_s: float) -> AbstractConnection:
    """A one-shot connection to any live node of `value` (`NodeList(value).connect`).

    Raises:
        AmqpUrlInvalid: As `split_urls`.
        Exception: As `NodeList.connect`.
    """
    return await NodeList(value).connect(timeout_s=timeout_s)


def _robust_connect_transport() -> Callable[[RobustConnection], Awaitable[None]]:
    found = getattr(RobustConnection, "_RobustConnection__connect_transport", None)
    if found is None:  # pragma: no cover - only with an aio-pika this was not written for
        raise ImportError(
            "aio-pika's RobustConnection has no __connect_transport: RabbitMQ failover needs updating"
        )
    return cast("Callable[[RobustConnection], Awaitable[None]]", found)


_ROBUST_CONNECT_TRANSPORT = _robust_connect_transport()


class FailoverRobustConnection(RobustConnection):
    """aio-pika's robust connection, connecting to the next live node of `URLS` on every (re)connect.

    A subclass made by `failover_connection_class` fills in `URLS`.
    """

    URLS: tuple[URL, ...] = ()
    _node = 0

    async def _RobustConnection__connect_transport(self) -> None:
        # aio-pika has no hook for the URL of a reconnect; its factory loop calls this (name-mangled)
        # method for every attempt and reads `self.url`, so this override picks the node. Checked at
        # import below: if aio-pika renames it, PulseSeal fails at once rather than losing failover.
        urls = self.URLS or (self.url,)
        failure: BaseException | None = None
        for step in range(len(urls)):
            node = (self._node + step) % len(urls)
            self.url = urls[node]
            try:
                await _ROBUST_CONNECT_TRANSPORT(self)
            except _NODE_DOWN as exc:
                failure = exc
                continue
            self._node = node
            return
        assert failure is not None
        raise failure


def failover_connection_class(value: str | Sequence[str]) -> type[FailoverRobustConnection]:
    """A `connection_class` for `aio_pika.connect_robust` that fails over across the nodes of `value`.

    Raises:
        AmqpUrlInvalid: As `split_urls`.
    """
    urls = split_urls(value) if isinstance(value, str) else list(value)
    return type(
        "FailoverRobustConnection", (FailoverRobustConnection,), {"URLS": tuple(URL(u) for u in urls)}
    )
