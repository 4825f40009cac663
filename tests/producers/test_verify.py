"""`verify_store` (producers/verify.py) on the real MongoDB-compatible server: the partitioned passes find the
same problems as one pass, `since` checks only what is newer, and a chain walked from part-way is checked
against the manifest it names."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pymongo.asynchronous.collection import AsyncCollection

from consumers.manifests import ManifestWriter
from consumers.store import insert_sealed
from producers.verify import Finding, partition_of, verify_store
from pulseseal import mongo
from pulseseal.envelope import DataKey, seal_many
from schemas import validate_event
from tests.factories import valid_event

pytestmark = pytest.mark.integration

SIGNING = Ed25519PrivateKey.generate()
KEYS = {"encryptor": SIGNING.public_key()}
USERS = ("ann", "ben", "cy")
DATA_KEYS = {u: DataKey(u, 1, os.urandom(32)) for u in USERS}


@pytest.fixture
async def store(mongo_url: str, mongo_db: str) -> AsyncIterator[tuple[Any, Any]]:
    """`sealed_events` and `seal_manifests` of a database of this test's own."""
    client = mongo.connect(mongo_url)
    name = f"{mongo_db}_v{uuid.uuid4().hex[:8]}"
    yield mongo.sealed_events(client, name), mongo.seal_manifests(client, name)
    await client.drop_database(name)
    await client.close()


async def flush(writer: ManifestWriter, sealed: AsyncCollection[dict[str, Any]], count: int) -> list[str]:
    events = [
        validate_event(valid_event("heart_rate", event_id=str(uuid.uuid4()), user_id=USERS[n % 3]))
        for n in range(count)
    ]
    docs = seal_many(events, DATA_KEYS)
    await writer.record(docs, await insert_sealed(sealed, docs))
    return [doc["_id"] for doc in docs]


async def run(sealed: Any, manifests: Any, **options: Any) -> tuple[list[Finding], str]:
    found: list[Finding] = []
    summary = await verify_store(sealed, manifests, KEYS, found.append, **options)
    return sorted(found, key=lambda f: (f.kind, f.subject)), summary.line()


async def test_partitions_find_what_one_pass_finds(store: tuple[Any, Any]) -> None:
    sealed, manifests = store
    writer = ManifestWriter(manifests, sealed, SIGNING, "encryptor")
    ids = [i for _ in range(4) for i in await flush(writer, sealed, 15)]
    await sealed.delete_one({"_id": ids[3]})
    await sealed.update_one({"_id": ids[20]}, {"$set": {"sealed_at": datetime(2020, 1, 1, tzinfo=UTC)}})
    [extra] = seal_many(
        [validate_event(valid_event("steps", event_id=str(uuid.uuid4()), user_id="ann"))], DATA_KEYS
    )
    await sealed.insert_one(extra)

    one = await run(sealed, manifests)
    several = await run(sealed, manifests, partition_documents=8)

    assert one == several
    assert [(f.kind, f.subject) for f in one[0]] == sorted(
        [("missing", ids[3]), ("altered", ids[20]), ("unlisted", extra["_id"])]
    )
    assert one[1] == "verified 60 records against 4 manifests in 1 chains: 1 altered, 1 missing, 1 unlisted"
    assert len({partition_of(i, 8) for i in ids}) > 1


async def test_since_checks_only_newer_manifests_and_records(store: tuple[Any, Any]) -> None:
    sealed, manifests = store
    writer = ManifestWriter(manifests, sealed, SIGNING, "encryptor")
    old = await flush(writer, sealed, 6)
    await asyncio.sleep(0.05)
    since = datetime.now(UTC)
    await asyncio.sleep(0.05)
    await flush(writer, sealed, 6)
    await sealed.delete_one({"_id": old[0]})  # before `since`: not this run's business

    found, line = await run(sealed, manifests, since=since)
    assert found == []
    assert line == "verified 6 records against 1 manifests in 1 chains: no problems"

    # The manifest before `since` that the newer one names is gone: the link is checked all the same.
    await manifests.delete_one({"_id": f"{writer.chain}:000000000001"})
    found, _ = await run(sealed, manifests, since=since)
    assert [(f.kind, f.subject) for f in found] == [("chain", f"manifest {writer.chain}:000000000002")]


async def test_a_redelivered_batch_lists_what_is_stored(store: tuple[Any, Any]) -> None:
    sealed, manifests = store
    writer = ManifestWriter(manifests, sealed, SIGNING, "encryptor")
    events = [
        validate_event(valid_event("sleep", event_id=str(uuid.uuid4()), user_id="ben")) for _ in range(5)
    ]
    first = seal_many(events, DATA_KEYS)
    await insert_sealed(sealed, first)  # killed before its manifest
    again = seal_many(events, DATA_KEYS, now=datetime.now(UTC) + timedelta(seconds=1))
    outcome = await insert_sealed(sealed, again)
    assert outcome.duplicates == 5
    await writer.record(again, outcome)

    found, line = await run(sealed, manifests)
    assert found == []
    assert line.startswith("verified 5 records against 1 manifests")
