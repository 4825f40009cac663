"""Scenario 6, replay: one user's 1,000 events among 10k and among 1M sealed documents.

An audit replay must cost what the user's own records cost, not what the whole collection costs: the
target is ≤ 1 s among 1M documents and the two sizes within 3x of each other. The replayed user's
1,000 events are really sealed, and replay opens every one (`producers.replay.replay_user`, the code
behind `pulseseal replay`) with the key handed over in process — the key service's share is scenario
2's. The other users' documents have the sealed shape and size (random nonce and ciphertext bytes, as
the seal would make them) but are never opened, so filling 1M costs inserts only. The collection gets
the indexes every writer makes (`pulseseal.mongo.ensure_indexes`: on FerretDB with PostgreSQL, the GIN
indexes). Timings: the median of several replays, each a fresh query and cursor.
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.harness import BenchContext
from bench.results import Figure, ScenarioResult, ratio
from bench.workload import sized_events
from keyservice.client import DecryptKeys
from producers.replay import TimeRange, find_sealed, replay_user
from pulseseal import mongo
from pulseseal.envelope import DataKey, seal_many
from pulseseal.ferretdb_sql import postgres_target

USER = "replayed-user"
USER_EVENTS = 1000
EVENT_BYTES = 300
FILLER_PER_USER = 1000
INSERT_BATCH = 1000
INSERT_IN_FLIGHT = 4
REPEATS = 5


class _KeysInProcess:
    """The replayed user's key, handed over without the key service (its latency is scenario 2's)."""

    def __init__(self, key: DataKey) -> None:
        self._key = key

    async def decrypt_keys(self, refs: Iterable[tuple[str, int]], *, purpose: str) -> DecryptKeys:
        return DecryptKeys(keys={ref: self._key for ref in refs if ref == (USER, 1)}, missing={})

    async def report_replay(
        self, user_id: str, *, purpose: str, opened: int, failed: int, unreadable: int
    ) -> object:
        return None


def filler(start: int, count: int, rng: random.Random) -> list[dict[str, Any]]:
    """`count` sealed-shaped documents of other users (never opened), numbered from `start`."""
    base = datetime(2026, 1, 1, tzinfo=UTC)
    sealed_at = datetime.now(UTC)
    docs = []
    for n in range(start, start + count):
        docs.append(
            {
                "_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                "user_id": f"user-{n // FILLER_PER_USER:06d}",
                "occurred_at": base + timedelta(seconds=n % FILLER_PER_USER * 60),
                "key_version": 1,
                "alg": "AES-256-GCM",
                "v": 1,
                "nonce": os.urandom(12),
                "ciphertext": os.urandom(EVENT_BYTES + 16),
                "sealed_at": sealed_at,
            }
        )
    return docs


async def fill(collection: Any, start: int, count: int, rng: random.Random) -> None:
    """Insert `count` filler documents, `INSERT_IN_FLIGHT` batches at a time."""
    slots = asyncio.Semaphore(INSERT_IN_FLIGHT)

    async def insert(first: int, size: int) -> None:
        async with slots:
            await collection.insert_many(filler(first, size, rng), ordered=False)

    await asyncio.gather(
        *(
            insert(first, min(INSERT_BATCH, start + count - first))
            for first in range(start, start + count, INSERT_BATCH)
        )
    )


async def time_replays(collection: Any, key: DataKey) -> tuple[list[float], int]:
    """Seconds of each of `REPEATS` whole replays of the user, and the events the last one wrote."""
    seconds = []
    written = 0
    for _ in range(REPEATS):
        lines = 0

        def sink(data: bytes) -> None:
            nonlocal lines
            lines += data.count(b"\n")

        started = time.perf_counter()
        window = TimeRange(None, None)
        summary = await replay_user(
            find_sealed(collection, USER, window),
            _KeysInProcess(key),
            sink,
            user_id=USER,
            purpose="benchmark",
            window=window,
            on_failed=lambda _id, _why: None,
        )
        seconds.append(time.perf_counter() - started)
        if summary.opened != USER_EVENTS or lines != USER_EVENTS:
            raise RuntimeError(f"replay opened {summary.opened} and wrote {lines} of {USER_EVENTS} events")
        written = lines
    return seconds, written


async def time_id_finds(collection: Any, ids: list[str]) -> float:
    """Median milliseconds of a find by `_id`."""
    samples = []
    for event_id in ids:
        started = time.perf_counter()
        if await collection.find_one({"_id": event_id}) is None:
            raise RuntimeError("a sealed event is missing")
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


async def run(ctx: BenchContext, result: ScenarioResult) -> None:
    """Fill to the small size, replay; fill to the large size, replay again; compare."""
    small, large = 10_000, ctx.pick(quick=50_000, full=1_000_000)
    rng = random.Random(ctx.seed)
    client = mongo.connect(ctx.settings.mongo_url)
    database = f"pulseseal_bench_replay_{os.urandom(3).hex()}"
    collection = mongo.sealed_events(client, database, write_concern="acknowledged")
    try:
        await mongo.ensure_indexes(collection, postgresql=postgres_target(ctx.settings))
        key = DataKey(USER, 1, os.urandom(32))
        events = sized_events(USER_EVENTS, EVENT_BYTES, [USER], rng)
        documents = seal_many(events, {USER: key})
        await collection.insert_many(documents, ordered=False)
        ids = [str(d["_id"]) for d in documents[:: USER_EVENTS // 20]]
        stored = USER_EVENTS
        figures: dict[int, float] = {}
        for size, which in ((small, "small"), (large, "large")):
            ctx.say(f"replay: filling to {size:,} documents")
            started = time.perf_counter()
            await fill(collection, stored, size - stored, rng)
            fill_rate = (size - stored) / (time.perf_counter() - started)
            stored = size
            seconds, _ = await time_replays(collection, key)
            figures[size] = statistics.median(seconds)
            result.add(
                Figure(
                    f"replay_{which}_s",
                    f"replay of 1,000 events among {size:,} documents",
                    figures[size],
                    "s",
                    note=f"median of {REPEATS}; fill at {fill_rate:,.0f} docs/s",
                    detail={"samples_s": seconds, "fill_docs_per_s": fill_rate},
                )
            )
            result.add(
                Figure(
                    f"id_find_{which}_ms",
                    f"find by _id among {size:,} documents",
                    await time_id_finds(collection, ids),
                    "ms",
                    note="median of 20",
                )
            )
        result.add(
            Figure(
                "replay_growth",
                f"replay time at {large:,} ÷ at {small:,}",
                ratio(figures[large], figures[small]),
                "x",
            )
        )
        info = await client.admin.command("buildInfo")
        backend = ctx.settings.ferretdb_backend if "ferretdbVersion" in info else "MongoDB"
        result.notes.append(f"store: {'FerretDB on ' + backend if backend != 'MongoDB' else 'MongoDB'}")
    finally:
        await client.drop_database(database)
        await client.close()
