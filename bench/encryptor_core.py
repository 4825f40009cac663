"""Scenario 7, the encryptor with the store excluded: events per second per encryptor core.

What one encryptor core can do when neither the broker nor the store is the limit — the figure the
capacity model (docs/scaling.md) divides 1M events/s by. Per 1000-event NDJSON message, timed: the
transport open (`pulseseal.transit`, the encryptor's own HPKE recipe), `decode_message` (parse and validate every
event) and `Sealer.flush` — the encryptor's own flush, keys from memory as on a key-cache hit, sealing
with AES-256-GCM — writing into a sink whose `insert_many` does nothing. Not timed: making and sealing the
messages for transport beforehand, as producers do. The figure is events per CPU second of this process
(`time.process_time`), so a busy machine slows the wall clock but not the figure much; both are reported.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, cast

from pymongo.asynchronous.collection import AsyncCollection

from bench.harness import BenchContext
from bench.results import Figure, ScenarioResult
from bench.workload import sized_events
from consumers.messages import decode_message
from consumers.sealing import Sealer
from keyservice.client import EncryptKeys
from pulseseal.envelope import DataKey
from pulseseal.topology import NDJSON
from pulseseal.transit import SealedMessage, TransportPrivateKey, open_message, seal
from schemas import canonical_json

EVENTS_PER_MESSAGE = 1000
EVENT_BYTES = 300
USERS = 500


class _KeysInMemory:
    """Every user's current key, as the encryptor's key cache holds them on a hit."""

    def __init__(self, keys: dict[str, DataKey]) -> None:
        self._keys = keys

    async def encrypt_keys(self, user_ids: Collection[str]) -> EncryptKeys:
        return EncryptKeys(keys={user: self._keys[user] for user in user_ids}, refused={})

    async def reachable(self) -> bool:
        return True


@dataclass(frozen=True, slots=True)
class _Inserted:
    inserted_ids: list[Any]


class _NullSink:
    """A `sealed_events` stand-in whose writes cost nothing (and keep nothing)."""

    async def insert_many(self, docs: list[dict[str, Any]], ordered: bool = True) -> _Inserted:
        return _Inserted([doc["_id"] for doc in docs])


async def run(ctx: BenchContext, result: ScenarioResult) -> None:
    """Open, decode, seal and 'store' the messages; report events per CPU second and per wall second."""
    messages = ctx.pick(quick=10, full=100)
    rng = random.Random(ctx.seed)
    users = [f"user-{n:04d}" for n in range(USERS)]
    keys = {user: DataKey(user, 1, os.urandom(32)) for user in users}
    private_key = TransportPrivateKey.generate()
    ring = {private_key.key_id: private_key}
    bodies: list[SealedMessage] = []
    for _ in range(messages):
        events = sized_events(EVENTS_PER_MESSAGE, EVENT_BYTES, users, rng)
        body = b"".join(canonical_json(event) + b"\n" for event in events)
        bodies.append(seal(body, private_key.public_key, NDJSON))
    sealer = Sealer(_KeysInMemory(keys), cast(AsyncCollection[dict[str, Any]], _NullSink()))
    sealed = 0
    cpu_started, wall_started = time.process_time(), time.perf_counter()
    for sealed_body in bodies:
        body = open_message(sealed_body, ring)
        decoded = decode_message(body, NDJSON)
        if decoded.rejected:
            raise RuntimeError(f"{len(decoded.rejected)} events of the workload were rejected")
        (outcome,) = await sealer.flush([decoded])
        sealed += outcome.stored
    cpu_s, wall_s = time.process_time() - cpu_started, time.perf_counter() - wall_started
    if sealed != messages * EVENTS_PER_MESSAGE:
        raise RuntimeError(f"sealed {sealed} of {messages * EVENTS_PER_MESSAGE} events")
    result.add(
        Figure(
            "events_per_core_s",
            "encryptor events/s per core (open + decode + seal, store excluded)",
            sealed / cpu_s,
            "events/s",
            note=f"{sealed:,} events of {EVENT_BYTES} B in {messages} messages; {cpu_s:.2f} CPU s",
        )
    )
    opens_started = time.process_time()
    for sealed_body in bodies:
        open_message(sealed_body, ring)
    open_s = time.process_time() - opens_started
    result.add(
        Figure(
            "transport_open_share",
            "share of the CPU that the transport open takes",
            open_s / cpu_s * 100,
            "%",
            note=f"{open_s / messages * 1e6:,.0f} µs per 1000-event message",
        )
    )
    result.add(Figure("events_per_wall_s", "the same per wall-clock second", sealed / wall_s, "events/s"))
    result.add(
        Figure(
            "cpu_us_per_event",
            "CPU per event",
            cpu_s / sealed * 1e6,
            "µs",
            note="busy machine: other work shares the cores",
        )
    )
