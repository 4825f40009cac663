"""A confirmed publisher: every `publish` returns only once RabbitMQ has confirmed that message.

Many publishes may be in flight on the one channel at once (aiormq pipelines them and matches the
confirms by delivery tag), so a caller that needs throughput starts several and awaits them together.
Messages are published `mandatory`: a message no queue would take comes back as a failure instead of
being confirmed and dropped. The full topology is declared on every (re)connect for the same reason.

Every body is transport-sealed for the encryptors before it leaves (contract §4, pulseseal/transit.py):
`publish` seals the plaintext under the current transport key, and `publish_sealed` sends a message that
is sealed already (a redriven dead letter). There is no way to publish a plaintext body.

When the broker goes away the next publish reconnects; while it stays away, publishes fail fast (one
connection attempt at a time, at most one every `reconnect_interval_s`) so that the gateway can answer
503 at once instead of queueing requests behind a dead socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Protocol

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange
from aiormq.exceptions import AMQPError, ChannelInvalidStateError, DeliveryError, PublishError

from keyservice.wire.errors import KeyServiceError
from producers import metrics
from pulseseal.amqp_failover import NodeList
from pulseseal.settings import redact_url
from pulseseal.topology import TopologyMismatch, declare_topology
from pulseseal.transit import SealedMessage

log = logging.getLogger("pulseseal.publisher")

# Everything a lost or refused connection raises; none of them carries message data.
_CONNECTION_ERRORS = (AMQPError, ChannelInvalidStateError, ConnectionError, OSError)


class PublishFailed(Exception):
    """The broker did not confirm a message; it may or may not have been stored."""


class BrokerUnavailable(PublishFailed):
    """RabbitMQ cannot be reached, or did not confirm in time. Retrying later may succeed."""


class PublishRefused(PublishFailed):
    """RabbitMQ refused the message: it nacked it, or no queue would take it (returned)."""


class SealingUnavailable(PublishFailed):
    """No transport key to seal with (the key service cannot be reached). Retrying later may succeed."""


class MessageSealer(Protocol):
    """What seals a body for the encryptors (`keyservice.client.transport_public.TransportSealer`)."""

    async def seal(self, plaintext: bytes, content_type: str) -> SealedMessage:
        """The sealed message (raises a `KeyServiceError` when no transport key can be had)."""
        ...

    async def aclose(self) -> None:
        """Release what the sealer holds (its HTTP client)."""
        ...


class Publisher:
    """Publishes transport-sealed messages to `pulseseal.events` with confirms and `mandatory=True`.

    Args:
        url: The AMQP URL, or one per cluster node separated by commas: each (re)connect tries them in
            turn from the last that answered (its password is never logged).
        sealer: Seals every body under the current transport key; closed with the publisher.
        delivery_limit: `x-delivery-limit` used when declaring the topology.
        confirm_timeout_s: Default deadline of one `publish`, reconnecting included.
        connect_timeout_s: Deadline of one connection attempt.
        reconnect_interval_s: After a failed attempt, publishes fail at once for this long.
        app_id: The `app_id` property of every message (which producer sent it).
    """

    def __init__(
        self,
        url: str,
        *,
        sealer: MessageSealer,
        delivery_limit: int,
        confirm_timeout_s: float = 5.0,
        connect_timeout_s: float = 5.0,
        reconnect_interval_s: float = 0.5,
        app_id: str = "pulseseal",
    ) -> None:
        self._url = url
        self._nodes = NodeList(url)
        self._sealer = sealer
        self._delivery_limit = delivery_limit
        self._confirm_timeout_s = confirm_timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._reconnect_interval_s = reconnect_interval_s
        self._app_id = app_id
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._connecting: asyncio.Task[AbstractExchange] | None = None
        self._failed_at: float | None = None
        self._failure = ""
        self._closed = False

    async def __aenter__(self) -> Publisher:
        await self.connect()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def is_connected(self) -> bool:
        """Whether a channel is open right now (a publish may still fail)."""
        return self._usable() is not None

    async def connect(self) -> None:
        """Connect and declare the topology now rather than on the first publish.

        Raises:
            BrokerUnavailable: RabbitMQ cannot be reached, or its topology does not match ours.
        """
        async with asyncio.timeout(self._connect_timeout_s + 1):
            await self._ensure(retry_now=True)

    async def publish(
        self,
        body: bytes,
        *,
        routing_key: str,
        content_type: str,
        headers: Mapping[str, Any] | None = None,
        message_id: str | None = None,
        timeout_s: float | None = None,
    ) -> None:
        """Seal one message body, publish it persistent and wait for the broker's confirm.

        Args:
            body: The message body (plaintext: it is sealed here).
            routing_key: Its routing key on `pulseseal.events`.
            content_type: `application/json` or `application/x-ndjson`.
            headers: Extra AMQP headers.
            message_id: The message id (a fresh UUID when not given; confirms are matched by it).
            timeout_s: Deadline for connecting, sending and the confirm (default: `confirm_timeout_s`).

        Raises:
            BrokerUnavailable: not connected and cannot connect, the connection was lost, or no confirm
                came before the deadline. The message may still have been stored.
            PublishRefused: the broker nacked the message or returned it as unroutable.
            SealingUnavailable: no transport key could be had; nothing was published.
        """
        try:
            sealed = await self._sealer.seal(body, content_type)
        except KeyServiceError as exc:
            metrics.PUBLISH_FAILURES.labels(reason="sealing").inc()
            raise SealingUnavailable(f"cannot seal for the encryptors: {exc.detail}") from None
        await self.publish_sealed(
            sealed, routing_key=routing_key, headers=headers, message_id=message_id, timeout_s=timeout_s
        )

    async def publish_sealed(
        self,
        sealed: SealedMessage,
        *,
        routing_key: str,
        headers: Mapping[str, Any] | None = None,
        message_id: str | None = None,
        timeout_s: float | None = None,
    ) -> None:
        """Publish a message that is transport-sealed already and wait for the broker's confirm.

        The transport headers are the sealed message's own; `headers` cannot override them.

        Raises:
            BrokerUnavailable: as for `publish`.
            PublishRefused: as for `publish`.
        """
        message = aio_pika.Message(  # the body is transport-sealed: a SealedMessage (docs/contract.md §4)
            sealed.body,
            content_type=sealed.content_type,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=message_id or uuid.uuid4().hex,
            headers={**(headers or {}), **sealed.headers},
            app_id=self._app_id,
        )
        started = time.perf_counter()
        exchange: AbstractExchange | None = None
        try:
            async with asyncio.timeout(timeout_s if timeout_s is not None else self._confirm_timeout_s):
                exchange = await self._ensure()
                await exchange.publish(message, routing_key, mandatory=True)
        except TimeoutError:
            metrics.PUBLISH_FAILURES.labels(reason="timeout").inc()
            raise BrokerUnavailable("RabbitMQ did not confirm in time") from None
        except PublishError:
            # Nothing was bound to take it: the topology is wrong, and confirming would lose the message.
            metrics.PUBLISH_FAILURES.labels(reason="returned").inc()
            raise PublishRefused("RabbitMQ returned the message as unroutable") from None
        except DeliveryError:
            metrics.PUBLISH_FAILURES.labels(reason="nacked").inc()
            # A channel opened while a quorum queue elects a new leader (its node was just killed) can
            # nack every later publish too (RabbitMQ 3.10); a fresh channel does not. So the next publish
            # reconnects (docs/scaling.md, the RabbitMQ cluster).
            if exchange is not None and exchange is self._exchange:
                await self._drop("RabbitMQ nacked a message")
            raise PublishRefused("RabbitMQ refused (nacked) the message") from None
        except _CONNECTION_ERRORS as exc:
            metrics.PUBLISH_FAILURES.labels(reason="unavailable").inc()
            # Only if it is still the current connection: another task may already have reconnected.
            if exchange is not None and exchange is self._exchange:
                await self._drop(f"connection lost ({type(exc).__name__})")
            raise BrokerUnavailable("the connection to RabbitMQ was lost") from None
        except BrokerUnavailable:
            metrics.PUBLISH_FAILURES.labels(reason="unavailable").inc()
            raise
        except Exception:
            if exchange is None or exchange is self._exchange:
                raise
            # Another publish dropped this connection (after a nack or a loss) while this one waited for
            # its confirm; aiormq fails such waiters with a bare `Exception`. Unconfirmed: retry later.
            metrics.PUBLISH_FAILURES.labels(reason="unavailable").inc()
            raise BrokerUnavailable("the connection to RabbitMQ was reset") from None
        metrics.PUBLISH_SECONDS.observe(time.perf_counter() - started)

    async def close(self) -> None:
        """Close the connection and the sealer; later publishes fail with `BrokerUnavailable`."""
        self._closed = True
        if self._connecting is not None:
            self._connecting.cancel()
        await self._drop("closed")
        await self._sealer.aclose()

    # --- connection management -------------------------------------------------------------------

    def _usable(self) -> AbstractExchange | None:
        if self._exchange is None or self._channel is None or self._connection is None:
            return None
        if self._channel.is_closed or self._connection.is_closed:
            return None
        return self._exchange

    async def _ensure(self, *, retry_now: bool = False) -> AbstractExchange:
        exchange = self._usable()
        if exchange is not None:
            return exchange
        if self._closed:
            raise BrokerUnavailable("the publisher is closed")
        if self._connecting is None:
            recently = self._failed_at is not None and (
                time.monotonic() - self._failed_at < self._reconnect_interval_s
            )
            if recently and not retry_now:
                raise BrokerUnavailable(self._failure)
            await self._drop(None)
            self._connecting = asyncio.create_task(self._connect())
            # Every waiter may have given up by the time it fails; its outcome is still "retrieved".
            self._connecting.add_done_callback(lambda task: task.cancelled() or task.exception())
        # Shielded: a request that gives up (its own deadline) must not abort the attempt that the
        # next requests are waiting on.
        return await asyncio.shield(self._connecting)

    async def _connect(self) -> AbstractExchange:
        where = redact_url(self._url)
        try:
            connection = await self._nodes.connect(timeout_s=self._connect_timeout_s)
        except (*_CONNECTION_ERRORS, TimeoutError) as exc:
            self._fail(f"cannot reach RabbitMQ at {where} ({type(exc).__name__})")
            raise BrokerUnavailable(self._failure) from None
        try:
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            exchange = await declare_topology(channel, delivery_limit=self._delivery_limit)
        except TopologyMismatch as exc:
            await connection.close()
            self._fail(str(exc))
            raise BrokerUnavailable(self._failure) from None
        except (*_CONNECTION_ERRORS, TimeoutError) as exc:
            await connection.close()
            self._fail(f"RabbitMQ at {where} closed the connection during setup ({type(exc).__name__})")
            raise BrokerUnavailable(self._failure) from None
        except BaseException:
            # Cancelled half-way (the publisher is closing): do not leave an open connection to the GC.
            with contextlib.suppress(Exception):
                await asyncio.shield(connection.close())
            raise
        finally:
            self._connecting = None
        self._connection, self._channel, self._exchange = connection, channel, exchange
        self._failed_at = None
        metrics.BROKER_CONNECTED.set(1)
        log.info("publisher connected", extra={"broker": redact_url(self._nodes.current)})
        return exchange

    def _fail(self, reason: str) -> None:
        self._connecting = None
        if self._failed_at is None:
            # Logged once per outage, not once per refused request.
            log.warning("publisher cannot connect", extra={"reason": reason})
        self._failed_at = time.monotonic()
        self._failure = reason

    async def _drop(self, reason: str | None) -> None:
        connection, self._connection, self._channel, self._exchange = self._connection, None, None, None
        metrics.BROKER_CONNECTED.set(0)
        if connection is None:
            return
        if reason is not None and reason != "closed":
            log.warning("publisher lost the broker", extra={"reason": reason})
            self._failed_at, self._failure = None, f"RabbitMQ connection lost ({reason})"
        with contextlib.suppress(*_CONNECTION_ERRORS):  # already gone is what we wanted
            await connection.close()
