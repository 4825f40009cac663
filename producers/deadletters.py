"""Inspecting and re-queueing `pulseseal.dead`: counts by code and reason (never bodies), and redrive.

`list_dead` takes every message with `basic.get` without acknowledging it and then closes its channel,
which hands them all back to the queue: nothing is consumed, and only one message at a time is held in
memory here. `redrive` republishes each dead letter to `pulseseal.events` with the routing key
`events.redrive` (same body, content type and transport headers: a dead letter is transport-sealed, and
the redrive passes it on sealed without ever opening it; one from before transport sealing, still
plaintext, is sealed on its way out), and acknowledges the dead one only after the broker
confirmed the copy — a crash in between leaves a duplicate, never a loss.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage, AbstractQueue
from aiormq.exceptions import AMQPError

from producers.confirms import InOrderConfirms
from producers.publisher import MessageSealer, Publisher, PublishFailed
from pulseseal import amqp_failover
from pulseseal.settings import redact_url
from pulseseal.topology import (
    DEAD_QUEUE,
    ERROR_HEADER,
    JSON,
    REASON_HEADER,
    REDRIVE_ROUTING_KEY,
    TopologyMismatch,
    declare_topology,
)
from pulseseal.transit import TransportUnopenable, TransportUnsealed, sealed_from

REDRIVEN_HEADER = "x-pulseseal-redriven"
_LINE_PREFIX = re.compile(r"^line \d+: ")
_WINDOW = 64
_MAX_REASON = 200


class DeadLetterError(Exception):
    """The dead queue could not be read or a redrive could not finish; the message says what to do."""


@dataclass(frozen=True, slots=True)
class DeadGroup:
    """Dead letters that share a code and a reason."""

    code: str
    reason: str
    count: int


@dataclass(frozen=True, slots=True)
class DeadReport:
    """What `pulseseal.dead` holds: its length and the groups of the messages inspected."""

    in_queue: int
    inspected: int
    groups: tuple[DeadGroup, ...]


@dataclass(frozen=True, slots=True)
class RedriveReport:
    """Messages moved back to `pulseseal.events`, and those left in `pulseseal.dead`."""

    moved: int
    left: int


def classify(headers: Mapping[str, Any] | None) -> tuple[str, str]:
    """The (code, reason) of a dead letter, from PulseSeal's headers or RabbitMQ's `x-death`.

    Line numbers are taken out of reasons so that one rule broken on many lines is one group.
    """
    headers = headers or {}
    code = headers.get(ERROR_HEADER)
    if code is not None:
        reason = _LINE_PREFIX.sub("", _text(headers.get(REASON_HEADER, "")))
        return _text(code), reason[:_MAX_REASON]
    deaths = headers.get("x-death")
    first = headers.get("x-first-death-reason")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], Mapping):
        queue = _text(deaths[0].get("queue", "?"))
        return _text(first or deaths[0].get("reason", "unknown")), f"dead-lettered by RabbitMQ from {queue}"
    return "unknown", "no PulseSeal or RabbitMQ dead-letter header"


async def list_dead(url: str, *, delivery_limit: int, limit: int | None = None) -> DeadReport:
    """Count the dead letters by code and reason, leaving every one in the queue.

    Args:
        url: The AMQP URL.
        delivery_limit: For declaring the topology (the dead queue may not exist yet).
        limit: Inspect at most this many (default: all).

    Raises:
        DeadLetterError: RabbitMQ cannot be reached or its topology does not match.
    """
    connection = await _connect(url)
    try:
        channel, queue, in_queue = await _open_dead_queue(connection, delivery_limit)
        counts: Counter[tuple[str, str]] = Counter()
        for _ in range(in_queue if limit is None else min(limit, in_queue)):
            message = await queue.get(no_ack=False, fail=False)
            if message is None:
                break
            counts[classify(message.headers)] += 1
        # Closing the channel requeues every message taken above, unacknowledged.
        await channel.close()
    except AMQPError as exc:
        raise DeadLetterError(f"RabbitMQ failed while reading {DEAD_QUEUE} ({type(exc).__name__})") from None
    finally:
        await connection.close()
    groups = tuple(DeadGroup(code, reason, n) for (code, reason), n in counts.most_common())
    return DeadReport(in_queue, sum(counts.values()), groups)


async def redrive(
    url: str,
    *,
    sealer: MessageSealer,
    delivery_limit: int,
    code: str | None = None,
    limit: int | None = None,
    confirm_timeout_s: float = 30.0,
) -> RedriveReport:
    """Move dead letters back to `pulseseal.events` (routing key `events.redrive`).

    Only the messages present when it starts are considered, so letters that are dead-lettered again
    while it runs are not moved in a loop.

    Args:
        url: The AMQP URL.
        sealer: Seals the dead letters that are not transport-sealed yet (closed when done).
        delivery_limit: For declaring the topology.
        code: Move only dead letters with this code (others stay).
        limit: Move at most this many.
        confirm_timeout_s: How long each copy may wait for its confirm.

    Raises:
        DeadLetterError: RabbitMQ cannot be reached, or refused a copy (what was confirmed is moved,
            the rest stays in the dead queue).
    """
    connection = await _connect(url)
    publisher = Publisher(
        url,
        sealer=sealer,
        delivery_limit=delivery_limit,
        confirm_timeout_s=confirm_timeout_s,
        app_id="pulseseal-redrive",
    )

    async def acknowledge(message: AbstractIncomingMessage) -> None:
        await message.ack()

    # Each dead letter is acked once its copy is confirmed, in order: a failure leaves it and later ones.
    mover = InOrderConfirms(
        lambda message: _copy(publisher, message), max_in_flight=_WINDOW, on_confirmed=acknowledge
    )
    try:
        await publisher.connect()
        channel, queue, in_queue = await _open_dead_queue(connection, delivery_limit)
        for _ in range(in_queue):
            if limit is not None and mover.submitted >= limit:
                break
            message = await queue.get(no_ack=False, fail=False)
            if message is None:
                break
            if code is not None and classify(message.headers)[0] != code:
                continue  # left unacknowledged: back in the queue when the channel closes
            if _malformed_envelope(message):
                continue  # could never be opened: moving it would only dead-letter it again
            await mover.submit(message)
        await mover.drain()
        await channel.close()
    except PublishFailed as exc:
        raise DeadLetterError(
            f"{exc}; {mover.settled} moved, the rest is still in {DEAD_QUEUE} — retry later"
        ) from None
    except AMQPError as exc:
        raise DeadLetterError(
            f"RabbitMQ failed during the redrive ({type(exc).__name__}); {mover.settled} moved"
        ) from None
    finally:
        mover.abandon()
        await publisher.close()
        await connection.close()
    return RedriveReport(mover.settled, in_queue - mover.settled)


async def _copy(publisher: Publisher, message: AbstractIncomingMessage) -> None:
    headers = {k: v for k, v in (message.headers or {}).items() if not _is_dead_letter_header(k)}
    previous = (message.headers or {}).get(REDRIVEN_HEADER)
    headers[REDRIVEN_HEADER] = (previous if isinstance(previous, int) else 0) + 1
    content_type = message.content_type or JSON
    try:
        sealed = sealed_from(message.body, message.headers, content_type)
    except TransportUnsealed:
        # A dead letter from before transport sealing: it leaves sealed, like every message we publish.
        await publisher.publish(
            message.body, routing_key=REDRIVE_ROUTING_KEY, content_type=content_type, headers=headers
        )
        return
    await publisher.publish_sealed(sealed, routing_key=REDRIVE_ROUTING_KEY, headers=headers)


def _malformed_envelope(message: AbstractIncomingMessage) -> bool:
    try:
        sealed_from(message.body, message.headers, message.content_type)
    except TransportUnsealed:
        return False
    except TransportUnopenable:
        return True
    return False


def _is_dead_letter_header(name: str) -> bool:
    return name.startswith(("x-pulseseal-", "x-death", "x-first-death", "x-last-death", "x-delivery-count"))


async def _connect(url: str) -> AbstractConnection:
    try:
        return await amqp_failover.connect(url, timeout_s=5)
    except (AMQPError, OSError, TimeoutError) as exc:
        raise DeadLetterError(
            f"cannot reach RabbitMQ at {redact_url(url)} ({type(exc).__name__}) — start it "
            "(`pulseseal services up`) or set PULSESEAL_AMQP_URL"
        ) from None


async def _open_dead_queue(
    connection: AbstractConnection, delivery_limit: int
) -> tuple[AbstractChannel, AbstractQueue, int]:
    channel = await connection.channel(publisher_confirms=False)
    try:
        await declare_topology(channel, delivery_limit=delivery_limit)
    except TopologyMismatch as exc:
        raise DeadLetterError(str(exc)) from None
    queue = await channel.declare_queue(DEAD_QUEUE, durable=True, arguments={"x-queue-type": "quorum"})
    count = queue.declaration_result.message_count
    return channel, queue, int(count or 0)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)
