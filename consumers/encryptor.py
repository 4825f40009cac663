"""The encryptor: a FastStream subscriber on `pulseseal.seal` feeding the micro-batcher.

Each delivered message runs in its own handler task (aio-pika starts one per delivery, up to the
prefetch). The handler submits the message to the batcher, waits until its events are durably written,
dead-letters what must be, and only then acks. A crash at any point before the ack leaves the message
with the broker, which redelivers it; `_id` = event id makes the rewrite harmless.

A message waits for its batch as the bytes it arrived in, and is decoded when the batch is flushed:
parsed events take over ten times the memory of their JSON and are objects the garbage collector must
walk, so decoding the whole prefetch at once (64 messages of 1000 events) took a peak RSS of 292 MB
(157 MB now) and doubled the time spent parsing (docs/benchmarks.md, scenario 3). One message that fails
to decode fails alone; its batch neighbours are sealed.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiormq.exceptions import AMQPConnectionError
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from faststream import AckPolicy, FastStream
from faststream.message import StreamMessage
from faststream.rabbit import Channel, RabbitQueue
from faststream.rabbit.annotations import RabbitMessage
from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError

from consumers import metrics
from consumers.batcher import BatcherClosed, MicroBatcher
from consumers.deadletters import DEAD_LETTER_CHANNEL, publish_dead_letters
from consumers.failover_broker import FailoverRabbitBroker
from consumers.keys import KeySource
from consumers.manifests import ManifestWriter
from consumers.messages import Rejected, decode_or_fail, estimated_events
from consumers.readiness import BROKER, CONSUMING, KEYSERVICE, STORE, Readiness, ReadinessWatch
from consumers.sealing import MessageResult, Sealer
from consumers.store import InsertOutcome
from consumers.transit import TransportGate
from consumers.usage import UsageReporter
from pulseseal import amqp_failover, mongo
from pulseseal.ferretdb_sql import postgres_target
from pulseseal.retry import Backoff, retry
from pulseseal.settings import Settings, redact_url
from pulseseal.topology import SEAL_QUEUE, declare_topology

log = logging.getLogger("pulseseal.encryptor")

# How long a SIGTERM may take: in-flight handlers get this long to finish, then the batcher this long
# to flush; whatever is still unwritten is handed back to the broker.
SHUTDOWN_GRACE_S = 10.0


_NOT_READY = (OSError, TimeoutError, AMQPConnectionError, PyMongoError)
_START_BACKOFF = Backoff(initial_s=0.1, cap_s=3.0)

# The subscriber's description in the AsyncAPI document (docs/asyncapi.json, `make docs`).
SUBSCRIBER_DESCRIPTION = (
    "Health events to seal. Producers publish to the topic exchange `pulseseal.events` (routing key "
    "`events.<type>` for one event, `events.batch` for a batch, `events.redrive` for a redriven dead "
    "letter); this quorum queue is bound to it with `events.#` and declared with the arguments "
    "`x-delivery-limit` and `x-dead-letter-exchange` = `pulseseal.dead`. A message is one event "
    "(`application/json`) or an NDJSON batch (`application/x-ndjson`, at most 1000 events and 1 MiB), "
    "persistent, and transport-sealed for the encryptors (HPKE MLKEM768-X25519/HKDF-SHA256/AES-256-GCM, "
    "headers `x-pulseseal-transport` and `x-pulseseal-transport-key`; docs/envelope.md): the encryptor opens "
    "it first, and dead-letters one without the headers (`unsealed_transport`) or that does not open "
    "(`transport_unopenable`) without storing it. The encryptor seals every valid event with its user's current data key, writes it to "
    "MongoDB and acknowledges the message only after every event is durably stored or dead-lettered; "
    "invalid events and shredded users' events go to `pulseseal.dead`, the rest of the batch is sealed."
)


def tune_garbage_collector() -> None:
    """Set up the collector for a long-running encryptor process; call once, after start-up.

    Everything loaded by then (modules, schemas, the broker) lives as long as the process: frozen, the
    collector stops walking it on every full collection. And a batch allocates thousands of parsed
    events and documents that hold no reference cycles and are freed by reference counting alone; with
    the default threshold (700) they set off a young collection every few dozen events. Together these
    took 15-20 % of the CPU of decoding and sealing (docs/benchmarks.md, scenario 3). Cycles are still
    collected, only less often. Not done by `Encryptor` itself: the collector is process-wide, and tests
    run encryptors inside the test process.
    """
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def _raw_body(message: StreamMessage[Any]) -> bytes:
    # Keep the bytes: decoding (JSON or NDJSON, event by event) is ours, so one bad line cannot make
    # FastStream reject a whole batch.
    return message.body


@dataclass(frozen=True, slots=True)
class Delivered:
    """A delivered message as it waits for its batch: still bytes."""

    body: bytes
    content_type: str | None
    redelivered: bool = False


class Encryptor:
    """One encryptor process: broker subscription, batcher, sealer.

    Args:
        settings: PulseSeal settings.
        keys: Where current data keys come from.
        mongo_client: Client for the MongoDB-compatible server.
        transport: Opens deliveries and seals dead letters (transport keys).
        clock: The clock for the 24 h future bound and `sealed_at` (injectable for tests).
        readiness: Where `/readyz` reads this encryptor's checks (a fresh one by default).
        manifest_key: The key that signs each flush's batch manifest (docs/replay.md); None writes none.
        usage: Where seals per key version are counted and reported (None: not counted).
    """

    def __init__(
        self,
        settings: Settings,
        keys: KeySource,
        mongo_client: AsyncMongoClient[dict[str, Any]],
        *,
        transport: TransportGate,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        readiness: Readiness | None = None,
        manifest_key: Ed25519PrivateKey | None = None,
        usage: UsageReporter | None = None,
    ) -> None:
        self._settings = settings
        self.transport = transport
        self._clock = clock
        self._collection = mongo.sealed_events(
            mongo_client, settings.mongo_db, write_concern=settings.mongo_write_concern
        )
        self.manifests: ManifestWriter | None = None
        if manifest_key is not None:
            manifests = mongo.seal_manifests(
                mongo_client, settings.mongo_db, write_concern=settings.mongo_write_concern
            )
            self.manifests = ManifestWriter(
                manifests, self._collection, manifest_key, settings.manifest_signer, clock=clock
            )
        self.usage = usage
        self.sealer = Sealer(keys, self._collection, clock=clock, after_store=self._stored)
        self.batcher: MicroBatcher[Delivered, MessageResult] = MicroBatcher(
            self.decode_and_seal,
            max_items=settings.batch_max_events,
            max_delay_s=settings.batch_max_ms / 1000,
            max_waiting=settings.prefetch,
            max_concurrent=settings.flushes_in_flight,
        )
        self.broker = FailoverRabbitBroker(
            settings.amqp_url,
            graceful_timeout=SHUTDOWN_GRACE_S,
            reconnect_interval=1.0,
            logger=None,
            default_channel=DEAD_LETTER_CHANNEL,
        )
        self.subscriber = self.broker.subscriber(
            RabbitQueue(SEAL_QUEUE, declare=False),
            channel=Channel(prefetch_count=settings.prefetch),
            ack_policy=AckPolicy.MANUAL,
            decoder=_raw_body,
            title=SEAL_QUEUE,
            description=SUBSCRIBER_DESCRIPTION,
        )
        self.subscriber(self.handle)
        self.readiness = readiness if readiness is not None else Readiness()
        self.readiness_watch = ReadinessWatch(
            self.readiness,
            {
                BROKER: lambda: self.broker.ping(timeout=1.0),
                CONSUMING: self._consuming,
                KEYSERVICE: keys.reachable,
                STORE: lambda: mongo.reachable(self._collection),
            },
        )
        self.app = FastStream(
            self.broker,
            on_startup=[self.prepare],
            after_startup=[self.readiness_watch.start],
            on_shutdown=[self.drain],
            logger=None,
        )

    async def prepare(self) -> None:
        """Wait for RabbitMQ and MongoDB, declare the topology and the index, start the flusher."""
        await self._until_ready("RabbitMQ", self._declare_topology)
        postgresql = postgres_target(self._settings)
        await self._until_ready(
            "MongoDB", lambda: mongo.ensure_indexes(self._collection, postgresql=postgresql)
        )
        if self.manifests is not None:
            await self._until_ready("MongoDB", self.manifests.start)
        if self.usage is not None:
            self.usage.start()
        self.batcher.start()
        log.info(
            "encryptor ready",
            extra={"amqp": redact_url(self._settings.amqp_url), "prefetch": self._settings.prefetch},
        )

    async def drain(self) -> None:
        """Stop consuming, let in-flight messages finish and flush; bounded by `SHUTDOWN_GRACE_S` twice."""
        log.info("encryptor stopping: draining in-flight messages")
        await self.readiness_watch.stop()
        await self.subscriber.stop()
        await self.batcher.close(SHUTDOWN_GRACE_S)
        if self.usage is not None:
            await self.usage.close(SHUTDOWN_GRACE_S)

    async def _stored(self, docs: Sequence[dict[str, Any]], outcome: InsertOutcome) -> None:
        # Before the ack: the manifest lists what is now stored (consumers/manifests.py).
        if self.usage is not None:
            self.usage.count(docs)
        if self.manifests is not None:
            await self.manifests.record(docs, outcome)

    async def handle(self, body: bytes, message: RabbitMessage) -> None:
        """Seal one message's events; ack after they are written or dead-lettered, else requeue."""
        metrics.MESSAGES_IN_FLIGHT.inc()
        try:
            # Opened here, not in the flush: the batcher sizes batches by the plaintext's line count.
            opened = await self.transport.open(body, message.headers, message.content_type)
            if opened.body is None:
                await self._dead_letter_and_ack(message, opened.rejected)
                return
            body = opened.body
            result = await self.batcher.submit(
                Delivered(body, message.content_type, _redelivered(message)),
                estimated_events(body, message.content_type),
            )
            if result.failure is not None:
                log.error("message failed: %s", result.failure, extra=self._ids(message))
                await self._requeue(message)
                return
            if result.retry:
                log.warning("MongoDB refused events; handing the message back", extra=self._ids(message))
                await self._requeue(message)
                return
            await self._dead_letter_and_ack(message, result.dead)
        except BatcherClosed:
            await self._requeue(message)
        except Exception as exc:  # noqa: BLE001 - anything unforeseen: hand it back; the delivery limit ends loops
            log.error("message failed: %s", type(exc).__name__, extra=self._ids(message))
            await self._requeue(message)
        finally:
            metrics.MESSAGES_IN_FLIGHT.dec()

    async def decode_and_seal(self, batch: Sequence[Delivered]) -> list[MessageResult]:
        """The batcher's flush: decode every message of the batch, then seal and store their events.

        Returns one result per message; its `dead` lists the message's invalid events first, then those
        of shredded users.
        """
        now = self._clock()
        decoded = [decode_or_fail(d.body, d.content_type, now=now) for d in batch]
        for message, delivered in zip(decoded, batch, strict=True):
            message.redelivered = delivered.redelivered
        return await self.sealer.flush(decoded)

    async def _consuming(self) -> bool:
        return bool(self.subscriber.running)

    async def _dead_letter_and_ack(self, message: RabbitMessage, dead: Sequence[Rejected]) -> None:
        if dead:
            await publish_dead_letters(
                self.broker,
                dead,
                sealer=self.transport.sealer,
                message_id=message.message_id,
                content_type=message.content_type,
            )
        await message.ack()
        metrics.MESSAGES_ACKED.inc()

    async def _requeue(self, message: RabbitMessage) -> None:
        metrics.MESSAGES_REQUEUED.inc()
        try:
            await message.nack(requeue=True)
        except Exception as exc:  # noqa: BLE001 - the channel is gone: the broker requeues by itself
            log.info("nack not delivered (%s); the broker will redeliver", type(exc).__name__)

    async def _declare_topology(self) -> None:
        connection = await amqp_failover.connect(self._settings.amqp_url, timeout_s=5)
        async with connection:
            channel = await connection.channel()
            await declare_topology(channel, delivery_limit=self._settings.delivery_limit)

    async def _until_ready(self, what: str, attempt: Callable[[], Awaitable[None]]) -> None:
        def note(exc: BaseException, delay: float) -> None:
            log.warning("%s not ready (%s), retrying in %.1f s", what, type(exc).__name__, delay)

        await retry(
            attempt, on=lambda exc: isinstance(exc, _NOT_READY), backoff=_START_BACKOFF, before_sleep=note
        )

    @staticmethod
    def _ids(message: RabbitMessage) -> dict[str, Any]:
        return {"message_id": message.message_id}


def _redelivered(message: RabbitMessage) -> bool:
    # RabbitMQ's own flag; a message is redelivered after a broker restart, a lost channel or a requeue.
    return bool(message.raw_message.redelivered)
