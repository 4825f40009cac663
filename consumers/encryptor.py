"""The encryptor: a FastStream subscriber on `pulseseal.seal` feeding the micro-batcher.

Each delivered message runs in its own handler task (aio-pika starts one per delivery, up to the
prefetch). The handler decodes the message, submits its events to the batcher, waits until they are
durably written, dead-letters what must be, and only then acks. A crash at any point before the ack
leaves the message with the broker, which redelivers it; `_id` = event id makes the rewrite harmless.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import aio_pika
from aiormq.exceptions import AMQPConnectionError
from faststream import AckPolicy, FastStream
from faststream.message import StreamMessage
from faststream.rabbit import Channel, RabbitBroker, RabbitQueue
from faststream.rabbit.annotations import RabbitMessage
from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError

from consumers import metrics
from consumers.batcher import BatcherClosed, MicroBatcher
from consumers.deadletters import publish_dead_letters
from consumers.messages import decode_message
from consumers.sealing import Backoff, KeySource, MessageResult, Sealer
from pulseseal import mongo
from pulseseal.settings import Settings, redact_url
from pulseseal.topology import SEAL_QUEUE, declare_topology
from schemas import HealthEvent

log = logging.getLogger("pulseseal.encryptor")

# How long a SIGTERM may take: in-flight handlers get this long to finish, then the batcher this long
# to flush; whatever is still unwritten is handed back to the broker.
SHUTDOWN_GRACE_S = 10.0


_NOT_READY = (OSError, TimeoutError, AMQPConnectionError, PyMongoError)


def _raw_body(message: StreamMessage[Any]) -> bytes:
    # Keep the bytes: decoding (JSON or NDJSON, event by event) is ours, so one bad line cannot make
    # FastStream reject a whole batch.
    return message.body


class Encryptor:
    """One encryptor process: broker subscription, batcher, sealer.

    Args:
        settings: PulseSeal settings.
        keys: Where current data keys come from.
        mongo_client: Client for the MongoDB-compatible server.
        clock: The clock for the 24 h future bound and `sealed_at` (injectable for tests).
    """

    def __init__(
        self,
        settings: Settings,
        keys: KeySource,
        mongo_client: AsyncMongoClient[dict[str, Any]],
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._collection = mongo.sealed_events(
            mongo_client, settings.mongo_db, write_concern=settings.mongo_write_concern
        )
        self.sealer = Sealer(keys, self._collection, clock=clock)
        self.batcher: MicroBatcher[list[HealthEvent], MessageResult] = MicroBatcher(
            self.sealer.flush,
            max_items=settings.batch_max_events,
            max_delay_s=settings.batch_max_ms / 1000,
            max_waiting=settings.prefetch,
        )
        self.broker = RabbitBroker(
            settings.amqp_url,
            graceful_timeout=SHUTDOWN_GRACE_S,
            reconnect_interval=1.0,
            logger=None,
        )
        self.subscriber = self.broker.subscriber(
            RabbitQueue(SEAL_QUEUE, declare=False),
            channel=Channel(prefetch_count=settings.prefetch),
            ack_policy=AckPolicy.MANUAL,
            decoder=_raw_body,
        )
        self.subscriber(self.handle)
        self.app = FastStream(self.broker, on_startup=[self.prepare], on_shutdown=[self.drain], logger=None)

    async def prepare(self) -> None:
        """Wait for RabbitMQ and MongoDB, declare the topology and the index, start the flusher."""
        await self._until_ready("RabbitMQ", self._declare_topology)
        await self._until_ready("MongoDB", lambda: mongo.ensure_indexes(self._collection))
        self.batcher.start()
        log.info(
            "encryptor ready",
            extra={"amqp": redact_url(self._settings.amqp_url), "prefetch": self._settings.prefetch},
        )

    async def drain(self) -> None:
        """Stop consuming, let in-flight messages finish and flush; bounded by `SHUTDOWN_GRACE_S` twice."""
        log.info("encryptor stopping: draining in-flight messages")
        await self.subscriber.stop()
        await self.batcher.close(SHUTDOWN_GRACE_S)

    async def handle(self, body: bytes, message: RabbitMessage) -> None:
        """Seal one message's events; ack after they are written or dead-lettered, else requeue."""
        metrics.MESSAGES_IN_FLIGHT.inc()
        try:
            decoded = decode_message(body, message.content_type, now=self._clock())
            result = MessageResult()
            if decoded.events:
                result = await self.batcher.submit(decoded.events, len(decoded.events))
            if result.retry:
                log.warning("MongoDB refused events; handing the message back", extra=self._ids(message))
                await self._requeue(message)
                return
            dead = decoded.rejected + result.dead
            if dead:
                await publish_dead_letters(
                    self.broker, dead, message_id=message.message_id, content_type=message.content_type
                )
            await message.ack()
            metrics.MESSAGES_ACKED.inc()
        except BatcherClosed:
            await self._requeue(message)
        except Exception as exc:  # noqa: BLE001 - anything unforeseen: hand it back; the delivery limit ends loops
            log.error("message failed: %s", type(exc).__name__, extra=self._ids(message))
            await self._requeue(message)
        finally:
            metrics.MESSAGES_IN_FLIGHT.dec()

    async def _requeue(self, message: RabbitMessage) -> None:
        metrics.MESSAGES_REQUEUED.inc()
        try:
            await message.nack(requeue=True)
        except Exception as exc:  # noqa: BLE001 - the channel is gone: the broker requeues by itself
            log.info("nack not delivered (%s); the broker will redeliver", type(exc).__name__)

    async def _declare_topology(self) -> None:
        connection = await aio_pika.connect(self._settings.amqp_url, timeout=5)
        async with connection:
            channel = await connection.channel()
            await declare_topology(channel, delivery_limit=self._settings.delivery_limit)

    async def _until_ready(self, what: str, attempt: Callable[[], Awaitable[None]]) -> None:
        backoff = Backoff(cap_s=3.0)
        while True:
            try:
                await attempt()
                return
            except _NOT_READY as exc:
                delay = backoff.next_delay()
                log.warning("%s not ready (%s), retrying in %.1f s", what, type(exc).__name__, delay)
                await asyncio.sleep(delay)

    @staticmethod
    def _ids(message: RabbitMessage) -> dict[str, Any]:
        return {"message_id": message.message_id}
