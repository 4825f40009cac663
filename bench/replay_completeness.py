"""What completeness verification adds to a replay: `python -m bench.replay_completeness [RECORDS]`.

Seals RECORDS events of one user (default 100,000) into a scratch database of the configured MongoDB
server, in flushes of 2000 with a signed manifest each, as the encryptor does; then replays the user
alternately without and with the completeness check (`producers/completeness.py`), twice each, and prints
the times. The key comes from a fixed in-process source, so the figures are the store, the opening and
the check, not the key service. Writes nothing outside its scratch database, which it drops.
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import sys
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from consumers.manifests import ManifestWriter
from consumers.store import insert_sealed
from keyservice.client import DecryptKeys
from producers.completeness import UserCompleteness
from producers.replay import TimeRange, find_sealed, replay_user
from pulseseal import mongo
from pulseseal.envelope import DataKey, seal_many
from pulseseal.ferretdb_sql import postgres_target
from pulseseal.settings import load_settings
from schemas import validate_event
from shell.synthetic import events

USER = "bench-replay-user"
FLUSH = 2000


class FixedKeys:
    """The one key version of the user, as the key service would grant it."""

    def __init__(self, key: DataKey) -> None:
        self._key = key

    async def decrypt_keys(self, refs: Iterable[tuple[str, int]], *, purpose: str) -> DecryptKeys:
        return DecryptKeys(keys={ref: self._key for ref in refs}, missing={})

    async def report_replay(
        self, user_id: str, *, purpose: str, opened: int, failed: int, unreadable: int
    ) -> object:
        return None


async def main(records: int) -> None:
    """Load, replay without and with the check, print the figures, drop the database."""
    settings = load_settings()
    client = mongo.connect(settings.mongo_url)
    database = f"pulseseal_bench_replay_{secrets.token_hex(4)}"
    sealed = mongo.sealed_events(client, database)
    manifests = mongo.seal_manifests(client, database)
    signing = Ed25519PrivateKey.generate()
    key = DataKey(USER, 1, os.urandom(32))
    try:
        await mongo.ensure_indexes(sealed, postgresql=postgres_target(settings))
        writer = ManifestWriter(manifests, sealed, signing, "encryptor")
        await writer.start()
        rng = random.Random(7)
        now = datetime.now(UTC)
        generated = events(records, [USER], rng, now=now, span=timedelta(days=365))
        parsed = [validate_event(event) for event in generated]
        started = time.perf_counter()
        for at in range(0, records, FLUSH):
            docs = seal_many(parsed[at : at + FLUSH], {USER: key})
            await writer.record(docs, await insert_sealed(sealed, docs))
        print(f"loaded {records} records in {time.perf_counter() - started:.1f} s", flush=True)
        keys = {"encryptor": signing.public_key()}
        for check in (False, True, True, False):
            started = time.perf_counter()
            problems = 0
            cursor = find_sealed(sealed, USER, TimeRange())
            if check:
                completeness = await UserCompleteness.load(manifests, keys, USER, TimeRange(), print)
                source = completeness.watch(cursor)
            else:
                source = cursor
            summary = await replay_user(
                source,
                FixedKeys(key),
                lambda _: None,
                user_id=USER,
                purpose="benchmark",
                window=TimeRange(),
                on_failed=lambda *_: None,
            )
            if check:
                completeness.finish()
                problems = completeness.problems
            seconds = time.perf_counter() - started
            label = "with completeness check   " if check else "without completeness check"
            print(
                f"replay {label}: {summary.opened} records in {seconds:.2f} s "
                f"({summary.opened / seconds:,.0f} records/s), {problems} problems",
                flush=True,
            )
    finally:
        await client.drop_database(database)
        await client.close()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000))
