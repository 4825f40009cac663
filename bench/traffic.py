"""Benchmark traffic: the realistic event mix as NDJSON lines, and publishing it the way producers do.

`Workload` holds the events of a drain as compact JSON lines only (about 250 bytes each; a dict per event
would take several times the memory of the encryptor being measured). `publish` sends message bodies
to `pulseseal.events` transport-sealed (contract §4), with publisher confirms, persistent, `mandatory`,
many in flight at once — as the importer does — so a queue is pre-loaded in seconds. Sealing happens
before the clock of any drain starts, since a pre-load is not what the drain measures.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aio_pika

from bench.harness import BenchContext
from producers.ndjson import pack_ndjson
from producers.publisher import MessageSealer
from pulseseal.topology import BATCH_ROUTING_KEY, JSON, NDJSON, declare_topology, routing_key_for
from pulseseal.transit import SealedMessage, TransportPrivateKey, seal
from schemas import MAX_BATCH_EVENTS, HealthEvent, parse_event
from shell import synthetic

# NDJSON messages carry this many events, the most a message may hold (docs/contract.md §4), as the importer
# sends them.
EVENTS_PER_MESSAGE = MAX_BATCH_EVENTS


@dataclass(frozen=True, slots=True)
class Message:
    """One message to publish: body, content type and routing key."""

    body: bytes
    content_type: str
    routing_key: str


@dataclass(frozen=True, slots=True)
class Workload:
    """`len(lines)` events of `users` users in the realistic mix, one compact JSON object a line."""

    lines: list[bytes]
    users: int

    def batches(self, count: int | None = None, per_message: int = EVENTS_PER_MESSAGE) -> list[Message]:
        """The first `count` events (all by default) as NDJSON messages of `per_message` events."""
        lines = self.lines[: len(self.lines) if count is None else count]
        return [
            Message(body, NDJSON, BATCH_ROUTING_KEY) for body, _ in pack_ndjson(lines, max_events=per_message)
        ]

    def singles(self, count: int, *, offset: int = 0) -> list[Message]:
        """`count` events from `offset` as one `application/json` message each."""
        return [
            Message(line, JSON, routing_key_for(json.loads(line)["type"]))
            for line in self.lines[offset : offset + count]
        ]

    def events(self, count: int) -> list[HealthEvent]:
        """The first `count` events, validated (for the stage ceilings, which start from events)."""
        return [parse_event(line) for line in self.lines[:count]]


def make_workload(n: int, users: int, seed: int, *, now: datetime | None = None) -> Workload:
    """`n` events of `users` users (`user-00000` …), the realistic mix, reproducible from `seed`.

    Times fall in the 23 hours before `now` (default: an hour ago, well inside the 24 h future bound).
    """
    rng = random.Random(seed)
    names = [f"user-{i:05d}" for i in range(users)]
    end = now if now is not None else datetime.now(UTC) - timedelta(hours=1)
    lines: list[bytes] = []
    # In chunks, so the dicts of a 200k-event workload never exist all at once.
    for start in range(0, n, 10_000):
        chunk = synthetic.events(min(10_000, n - start), names, rng, now=end)
        lines.extend(json.dumps(event, separators=(",", ":")).encode() for event in chunk)
    return Workload(lines, users)


USERS = 10_000


@asynccontextmanager
async def _workload(ctx: BenchContext) -> AsyncIterator[Workload]:
    events = ctx.events or ctx.pick(quick=10_000, full=200_000)
    yield await asyncio.to_thread(make_workload, events, USERS, ctx.seed)


def shared_workload(ctx: BenchContext) -> AbstractAsyncContextManager[Workload]:
    """The opener for `ctx.shared("workload", ...)`: the drain's events (`--events`, else quick 10k,
    full 200k; 10k users)."""
    return _workload(ctx)


class LocalSealer:
    """Seals under a transport key of its own, for measurements without a key service (the broker's raw
    consume ceiling): the bodies are as large and as opaque as the real ones."""

    def __init__(self) -> None:
        self._key = TransportPrivateKey.generate()

    async def seal(self, plaintext: bytes, content_type: str) -> SealedMessage:
        """Seal under the local key."""
        return seal(plaintext, self._key.public_key, content_type)

    async def aclose(self) -> None:
        """Nothing to release."""


async def publish(
    amqp_url: str, messages: Iterable[Message], *, sealer: MessageSealer | None, in_flight: int = 32
) -> int:
    """Publish every message persistent and `mandatory`, waiting for each confirm; returns events sent.

    Every message is transport-sealed by `sealer` first, as PulseSeal's producers do. `None` is only for
    the baselines (`bench.baselines`): the pipelines they model have no transport sealing, and their
    consumers could not open a sealed message.

    Raises:
        aio_pika / aiormq errors: the broker refused or lost a message.
    """
    messages = list(messages)
    prepared: list[tuple[bytes, dict[str, Any] | None]] = []
    for message in messages:
        if sealer is None:
            prepared.append((message.body, None))
        else:
            sealed = await sealer.seal(message.body, message.content_type)
            prepared.append((sealed.body, sealed.headers))
    connection = await aio_pika.connect(amqp_url, timeout=10)
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        exchange = await declare_topology(channel, delivery_limit=5)
        window = asyncio.Semaphore(in_flight)
        pending: set[asyncio.Task[None]] = set()
        events = 0

        async def send(message: Message, body: bytes, headers: dict[str, Any] | None) -> None:
            try:
                await exchange.publish(
                    aio_pika.Message(
                        body,
                        content_type=message.content_type,
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        headers=headers,
                    ),
                    message.routing_key,
                    mandatory=True,
                )
            finally:
                window.release()

        for message, (body, headers) in zip(messages, prepared, strict=True):
            await window.acquire()
            task = asyncio.create_task(send(message, body, headers))
            pending.add(task)
            task.add_done_callback(pending.discard)
            events += message.body.count(b"\n") if message.content_type == NDJSON else 1
        await asyncio.gather(*pending)
        return events
