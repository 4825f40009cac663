"""The ceilings of the encryptor's stages, each measured alone on the data of the drain.

- `raw_consume`: the same 1000-event NDJSON messages consumed from `pulseseal.seal` by a bare aio-pika
  consumer with the encryptor's prefetch, acking each message (`no_ack=False`), parsing nothing.
- `raw_insert`: real sealed documents of the same events (sealed beforehand), `insert_many(ordered=False)`
  in batches of the encryptor's size, journaled write concern, into an empty `sealed_events` with the
  `{user_id, occurred_at}` index, as in production; as many calls in flight as the encryptor keeps
  (`PULSESEAL_FLUSHES_IN_FLIGHT`), so the server never waits for the next call — and, for comparison,
  one call at a time.
- `raw_seal`: `seal_many` of the validated events with every key in memory (a key-cache hit), batches
  of the encryptor's size; and, for the profile, decoding the NDJSON plus sealing (the encryptor's CPU
  work per event).

`python -m bench.ceilings load SECONDS CORES` is a CPU load shaped like the encryptor's (decoding and
sealing, duty-cycled to use CORES of a core): `raw_insert` run beside it, with CORES set to what the
encryptor used during the drain, shows what the database gets when the encryptor takes its share of the
two cores.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from bench.scratch import Scratch
from bench.timing import Rate, measure_rate
from bench.traffic import LocalSealer, Workload, make_workload, publish
from consumers.messages import decode_message
from pulseseal import mongo
from pulseseal.envelope import DataKey, seal_many
from pulseseal.topology import NDJSON, SEAL_QUEUE
from schemas import HealthEvent


async def raw_consume(scratch: Scratch, workload: Workload, events: int, *, prefetch: int) -> float:
    """Events per second of a bare consumer over `events` events pre-loaded as 1000-event messages."""
    await scratch.reset_queues()
    messages = workload.batches(events)
    await publish(scratch.amqp_url, messages, sealer=LocalSealer())
    connection = await aio_pika.connect(scratch.amqp_url, timeout=10)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        queue = await channel.get_queue(SEAL_QUEUE)
        done: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        seen = 0
        first = 0.0

        async def on_message(message: AbstractIncomingMessage) -> None:
            nonlocal seen, first
            if seen == 0:
                first = time.perf_counter()
            await message.ack()
            seen += 1
            if seen == len(messages) and not done.done():
                done.set_result(time.perf_counter())

        tag = await queue.consume(on_message, no_ack=False)
        last = await asyncio.wait_for(done, 300)
        await queue.cancel(tag)
    # The first message's ack to the last one's, counting the messages after the first: the same span
    # and the same counting as the drain.
    return events * (len(messages) - 1) / len(messages) / max(last - first, 1e-9)


def memory_keys(workload: Workload) -> dict[str, DataKey]:
    """A random key in memory for every user of `workload`."""
    return {f"user-{n:05d}": DataKey(f"user-{n:05d}", 1, os.urandom(32)) for n in range(workload.users)}


def sealed_batches(
    events: Sequence[HealthEvent], keys: dict[str, DataKey], *, batch: int
) -> list[list[dict[str, Any]]]:
    """The documents the encryptor would write for `events`, in batches of `batch`."""
    now = datetime.now(UTC)
    return [seal_many(events[start : start + batch], keys, now=now) for start in range(0, len(events), batch)]


async def raw_insert(scratch: Scratch, batches: Sequence[list[dict[str, Any]]], *, in_flight: int) -> float:
    """Documents per second of `insert_many` calls alone, `in_flight` at a time, into an empty collection.

    Timed from the first call to the last answer; the documents are sealed beforehand.
    """
    database = scratch.new_database()
    collection = mongo.sealed_events(scratch.mongo, database, write_concern="journaled")
    await mongo.ensure_indexes(collection, postgresql=scratch.postgresql)
    slots = asyncio.Semaphore(in_flight)

    async def insert(docs: list[dict[str, Any]]) -> None:
        async with slots:
            await collection.insert_many(docs, ordered=False)

    try:
        started = time.perf_counter()
        await asyncio.gather(*(insert(docs) for docs in batches))
        elapsed = time.perf_counter() - started
    finally:
        await scratch.drop_database(database)
    return sum(len(docs) for docs in batches) / elapsed


def raw_seal(
    events: Sequence[HealthEvent], keys: dict[str, DataKey], *, batch: int, min_seconds: float, repeats: int
) -> Rate:
    """`seal_many` with every key in memory, `batch` events a call."""
    now = datetime.now(UTC)
    return measure_rate(
        lambda chunk: seal_many(chunk, keys, now=now),
        events,
        chunk=batch,
        min_seconds=min_seconds,
        repeats=repeats,
    )


def decode_and_seal(
    workload: Workload, events: int, keys: dict[str, DataKey], *, batch: int, min_seconds: float, repeats: int
) -> Rate:
    """Decoding 1000-event NDJSON messages and sealing their events: the encryptor's CPU per event."""
    bodies = [message.body for message in workload.batches(events)]
    now = datetime.now(UTC)
    per_call = max(1, batch // 1000)

    def run(chunk: Sequence[bytes]) -> None:
        parsed: list[HealthEvent] = []
        for body in chunk:
            parsed.extend(decode_message(body, NDJSON, now=now).events)
        seal_many(parsed, keys, now=now)

    rate = measure_rate(run, bodies, chunk=per_call, min_seconds=min_seconds, repeats=repeats)
    # measure_rate counts messages; a message holds 1000 events.
    scale = events / len(bodies)
    return Rate(
        per_s=rate.per_s * scale,
        best_per_s=rate.best_per_s * scale,
        per_cpu_s=rate.per_cpu_s * scale,
        repeats=rate.repeats,
        items_per_repeat=int(rate.items_per_repeat * scale),
        samples=tuple(s * scale for s in rate.samples),
    )


async def start_cpu_load(seconds: float, cores: float) -> asyncio.subprocess.Process:
    """`python -m bench.ceilings load SECONDS CORES` in the background (stop it when done)."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.ceilings",
        "load",
        str(seconds),
        str(cores),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


def _cpu_load(seconds: float, cores: float) -> None:
    workload = make_workload(2_000, 1000, seed=3)
    keys = memory_keys(workload)
    lines = workload.lines
    now = datetime.now(UTC)
    busy = min(max(cores, 0.0), 1.0)
    deadline = time.monotonic() + seconds
    index = 0
    # Work for `busy` of every 20 ms and sleep the rest: 100 events at a time are ~2 ms of work.
    while time.monotonic() < deadline:
        started = time.process_time()
        while time.process_time() - started < 0.02 * busy:
            body = b"\n".join(lines[index : index + 100])
            index = (index + 100) % len(lines)
            seal_many(decode_message(body, NDJSON, now=now).events, keys, now=now)
        time.sleep(0.02 * (1 - busy))


if __name__ == "__main__":  # python -m bench.ceilings load SECONDS CORES
    if len(sys.argv) != 4 or sys.argv[1] != "load":
        sys.exit("usage: python -m bench.ceilings load SECONDS CORES")
    _cpu_load(float(sys.argv[2]), float(sys.argv[3]))
