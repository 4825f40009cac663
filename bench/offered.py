"""A fixed offered load: events published at a steady rate, and the latency from publish to stored.

One encryptor runs on an empty queue; messages of `per_message` events (a gateway request's worth) are
published on a fixed schedule, each without waiting for the previous one's confirm, so a slow confirm
never slows the offered rate.

When was a message stored? Looking its events up in the database does not work here: on FerretDB's
SQLite backend a lookup by `_id` scans the collection (30 ms at 30k documents, more as it grows), and the
lookups would slow the very inserts being timed. Instead the encryptor's own count of durably stored
events (`pulseseal_events_sealed_total`, raised after the write concern confirmed a batch) is polled
every `POLL_S`. The queue is FIFO and the encryptor batches messages in arrival order, so the k-th
message counts as stored when the count first reaches all events up to and including it; its latency is
that time minus the moment just before it was published. With two flushes in flight a later batch can
finish first, which this attributes to the earlier messages: a latency can be off by up to one batch's
insert, and the polling interval bounds the resolution.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aio_pika
import httpx

from bench.encryptors import DUPLICATES, SEALED, EncryptorProcess, encryptor_env, encryptors
from bench.keyservice import RunningKeyService
from bench.scratch import Scratch
from bench.timing import Latency, latency
from bench.traffic import Workload
from keyservice.client.transport_public import TransportSealer
from pulseseal.topology import BATCH_ROUTING_KEY, NDJSON, declare_topology

POLL_S = 0.025


@dataclass(frozen=True, slots=True)
class OfferedLoad:
    """What was offered and what it took to store it."""

    target_per_s: float
    offered_per_s: float
    """Events actually published per second over the schedule."""
    seconds: float
    latency: Latency
    peak_rss_mb: float
    events: int
    """Events published."""
    stored: int
    """Documents in the collection afterwards (`collStats`): must equal `events`."""


async def offered_load(
    scratch: Scratch,
    service: RunningKeyService,
    workload: Workload,
    *,
    rate: float,
    seconds: float,
    per_message: int = 100,
    settle_s: float = 60.0,
) -> OfferedLoad:
    """Publish `rate` events/s for `seconds` (fewer if the workload runs out) and time each message.

    Raises:
        RuntimeError: not everything was stored within `settle_s` after the schedule ended.
    """
    messages = min(int(rate * seconds / per_message), len(workload.lines) // per_message)
    bodies = [batch.body for batch in workload.batches(messages * per_message, per_message)]
    interval = per_message / rate
    await scratch.reset_queues()
    database = scratch.new_database()
    published: list[float] = []
    with tempfile.TemporaryDirectory(prefix="pulseseal-bench-home-") as home:
        env = encryptor_env(scratch, database, service, Path(home))
        async with (
            encryptors(1, env) as running,
            httpx.AsyncClient(timeout=5, trust_env=False) as http,
            TransportSealer(service.url) as sealer,
        ):
            await sealer.public_key()  # fetched before the schedule starts
            samples: list[tuple[float, float]] = []
            poller = asyncio.create_task(_poll(running[0], http, samples))
            connection = await aio_pika.connect(scratch.amqp_url, timeout=10)
            async with connection:
                channel = await connection.channel(publisher_confirms=True)
                exchange = await declare_topology(channel, delivery_limit=5)
                sends: list[asyncio.Task[object]] = []
                started = time.perf_counter()
                for index in range(messages):
                    delay = started + index * interval - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    # Sealed on the schedule, as a producer does: its cost is part of the latency.
                    sealed = await sealer.seal(bodies[index], NDJSON)
                    message = aio_pika.Message(
                        sealed.body,
                        content_type=NDJSON,
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        headers=sealed.headers,
                    )
                    published.append(time.perf_counter())
                    sends.append(asyncio.create_task(exchange.publish(message, BATCH_ROUTING_KEY)))
                offered_for = time.perf_counter() - started + interval
                await asyncio.gather(*sends)
            total = messages * per_message
            deadline = time.perf_counter() + settle_s
            while not samples or samples[-1][1] < total:
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"{total - (samples[-1][1] if samples else 0):.0f} events not stored")
                await asyncio.sleep(POLL_S)
            poller.cancel()
            peak = running[0].memory_mb()
    stored = await scratch.stored(database)
    await scratch.drop_database(database)
    return OfferedLoad(
        rate,
        total / offered_for,
        offered_for,
        _latencies(published, samples, per_message),
        peak,
        total,
        stored,
    )


async def _poll(
    process: EncryptorProcess, http: httpx.AsyncClient, samples: list[tuple[float, float]]
) -> None:
    while True:
        values = await process.metrics(http)
        samples.append((time.perf_counter(), values.get(SEALED, 0.0) + values.get(DUPLICATES, 0.0)))
        await asyncio.sleep(POLL_S)


def _latencies(published: list[float], samples: list[tuple[float, float]], per_message: int) -> Latency:
    # Both lists are in time order: walk them together.
    delays = []
    at = 0
    for index, sent in enumerate(published):
        needed = (index + 1) * per_message
        while samples[at][1] < needed:
            at += 1
        delays.append(max(samples[at][0] - sent, 0.0))
    return latency(delays)
