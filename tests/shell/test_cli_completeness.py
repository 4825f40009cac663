"""Completeness against the signed batch manifests, as a user sees it: `pulseseal replay` and `pulseseal verify`
as subprocesses against the real MongoDB-compatible server and key service, and real encryptors fed through
RabbitMQ for the redelivery tests. Each test has a database of its own (a manifest edited in one test must
not be the link another test's chain starts from)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pymongo.asynchronous.collection import AsyncCollection

from consumers.store import insert_sealed
from keyservice.client import KeyServiceClient
from pulseseal import mongo
from pulseseal.ferretdb_sql import PostgresTarget
from pulseseal.settings import Settings
from tests.consumers.helpers import open_channel, publish_batch, wait_for
from tests.manifests import dev_writer, manifests_of, store_listed
from tests.processes import ROOT, Component, free_port, start, wait_healthy
from tests.processes import start_encryptor as start_ready_encryptor
from tests.shell.test_cli_replay import (
    BASE,
    PURPOSE,
    canonical,
    events_of,
    lines,
    new_user,
    replay_in_thread,
    seal_with_current_keys,
)
from tests.transit import keyservice_keys

pytestmark = pytest.mark.integration

Store = tuple[dict[str, str], AsyncCollection[dict[str, Any]]]


@pytest.fixture
def ks_settings(pipeline_env: dict[str, str], keyservice_process: Component) -> Settings:
    """Client settings for this session's key service (credentials from `PULSESEAL_HOME`)."""
    return Settings(keyservice_url=pipeline_env["PULSESEAL_KEYSERVICE_URL"])


@pytest.fixture
async def store(
    mongo_url: str, pipeline_env: dict[str, str], ferretdb_postgresql: PostgresTarget | None
) -> AsyncIterator[Store]:
    """A database of this test's own: the environment naming it, and its `sealed_events`."""
    name = f"{pipeline_env['PULSESEAL_MONGO_DB']}_{uuid.uuid4().hex[:8]}"
    client = mongo.connect(mongo_url)
    sealed = mongo.sealed_events(client, name)
    await mongo.ensure_indexes(sealed, postgresql=ferretdb_postgresql)
    yield {**pipeline_env, "PULSESEAL_MONGO_DB": name}, sealed
    await client.drop_database(name)
    await client.close()


def verify(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[bytes]:
    """Run `pulseseal verify ARGS` to completion."""
    return subprocess.run(
        [sys.executable, "-m", "shell", "verify", *args],
        env={**os.environ, **env},
        cwd=ROOT,
        capture_output=True,
        timeout=120,
        check=False,
    )


async def verify_in_thread(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[bytes]:
    return await asyncio.to_thread(verify, env, *args)


async def replay_user(env: dict[str, str], user: str) -> subprocess.CompletedProcess[bytes]:
    return await replay_in_thread(env, "--user-id", user, "--purpose", PURPOSE)


async def stored_user(
    store: Store, ks_settings: Settings, count: int, *, flushes: int = 2
) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]]]:
    """A new user's events, sealed and stored in `flushes` flushes with manifests, checked clean."""
    env, sealed = store
    user = new_user()
    events = events_of(user, count)
    docs = await seal_with_current_keys(ks_settings, events)
    step = -(-count // flushes)
    for at in range(0, count, step):
        await store_listed(sealed, docs[at : at + step])
    clean = await replay_user(env, user)
    assert clean.returncode == 0, clean.stderr.decode()
    assert clean.stdout == canonical(events)
    return user, events, docs


async def test_a_deleted_record_is_reported_missing_by_id(store: Store, ks_settings: Settings) -> None:
    env, sealed = store
    user, events, docs = await stored_user(store, ks_settings, 30)
    gone = docs[7]["_id"]
    await sealed.delete_one({"_id": gone})

    result = await replay_user(env, user)

    assert result.returncode == 3
    assert result.stdout == canonical([e for e in events if e["event_id"] != gone])
    reported = lines(result.stderr)
    assert reported[0].startswith(f"replay: {gone} missing (listed by manifest encryptor-")
    assert reported[1].startswith(f"replay: the range of user {user} is not complete and unchanged: 1 ")
    assert reported[-1] == f"replayed 29 events of user {user} (0 failed to open, 0 unreadable)"
    whole = await verify_in_thread(env)
    assert whole.returncode == 3
    assert whole.stdout.decode().strip() == "verified 29 records against 2 manifests in 2 chains: 1 missing"
    assert [line for line in lines(whole.stderr) if gone in line] == [lines(whole.stderr)[0]]


async def test_a_range_misses_only_its_own_records(store: Store, ks_settings: Settings) -> None:
    env, sealed = store
    user, events, docs = await stored_user(store, ks_settings, 20)
    await sealed.delete_one({"_id": docs[15]["_id"]})  # 15 minutes in: outside the range replayed
    until = (BASE + timedelta(minutes=10)).isoformat()

    result = await replay_in_thread(env, "--user-id", user, "--until", until, "--purpose", PURPOSE)

    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == canonical(events[:10])


async def test_a_rolled_back_record_is_reported(store: Store, ks_settings: Settings) -> None:
    env, sealed = store
    user, events, docs = await stored_user(store, ks_settings, 10)
    target = docs[3]["_id"]
    older = await sealed.find_one({"_id": target})
    assert older is not None
    # The record is written again (deleted, then re-imported and sealed anew): the newer manifest wins.
    await sealed.delete_one({"_id": target})
    await asyncio.sleep(0.01)  # manifests are ordered by their creation time (ms)
    [resealed] = await seal_with_current_keys(ks_settings, [events[3]])
    await store_listed(sealed, [resealed])
    assert (await replay_user(env, user)).returncode == 0
    # Then someone restores last week's copy over it.
    await sealed.replace_one({"_id": target}, older)

    result = await replay_user(env, user)

    assert result.returncode == 3
    assert result.stdout == canonical(events)  # the old copy still opens: only the manifests tell
    assert lines(result.stderr)[0].startswith(f"replay: {target} rolled back (an older copy than manifest ")


async def test_an_altered_record_is_reported(store: Store, ks_settings: Settings) -> None:
    env, sealed = store
    user, _, docs = await stored_user(store, ks_settings, 10)
    target = docs[4]["_id"]
    await sealed.update_one({"_id": target}, {"$set": {"sealed_at": BASE}})  # opens fine: not in the AD

    result = await replay_user(env, user)

    assert result.returncode == 3
    assert lines(result.stderr)[0].startswith(f"replay: {target} altered (not the document manifest ")


async def test_a_validly_sealed_record_no_manifest_lists_is_reported(
    store: Store, ks_settings: Settings
) -> None:
    env, sealed = store
    user, events, _ = await stored_user(store, ks_settings, 10)
    extra = events_of(user, 1, start=BASE + timedelta(hours=1))
    [forged] = await seal_with_current_keys(ks_settings, extra)  # a genuine key, but no manifest
    await sealed.insert_one(forged)

    result = await replay_user(env, user)

    assert result.returncode == 3
    assert result.stdout == canonical(events + extra)
    assert lines(result.stderr)[0] == f"replay: {forged['_id']} unlisted (no manifest lists it)"
    whole = await verify_in_thread(env)
    assert whole.returncode == 3
    assert whole.stdout.decode().strip().endswith(": 1 unlisted")


@pytest.mark.parametrize(
    ("edit", "why"),
    [
        ({"$set": {"created_at": BASE}}, "signature does not verify"),
        ({"$set": {"root": bytes(32)}}, "signature does not verify"),
        ({"$push": {"users": "someone-else"}}, "malformed manifest"),
    ],
)
async def test_an_edited_manifest_fails_its_check(
    store: Store, ks_settings: Settings, edit: dict[str, Any], why: str
) -> None:
    env, sealed = store
    user, _, _ = await stored_user(store, ks_settings, 10, flushes=1)
    manifests = manifests_of(sealed)
    manifest = await manifests.find_one({"users": user})
    assert manifest is not None
    await manifests.update_one({"_id": manifest["_id"]}, edit)

    result = await replay_user(env, user)

    assert result.returncode == 3
    assert lines(result.stderr)[0] == f"replay: manifest {manifest['_id']} is invalid: {why}"
    # What it listed is no longer vouched for.
    assert any(line.endswith("unlisted (no manifest lists it)") for line in lines(result.stderr))
    whole = await verify_in_thread(env)
    assert whole.returncode == 3
    assert f"verify: manifest {manifest['_id']} is invalid" in whole.stderr.decode()


async def test_a_deleted_manifest_leaves_a_gap_in_its_chain(store: Store, ks_settings: Settings) -> None:
    env, sealed = store
    user = new_user()
    docs = await seal_with_current_keys(ks_settings, events_of(user, 9))
    manifests = manifests_of(sealed)
    writer = dev_writer(sealed)
    for at in range(0, 9, 3):
        await store_listed(sealed, docs[at : at + 3], writer)
    # Records and manifest of the middle flush gone together: only the chain tells.
    second = await manifests.find_one({"_id": f"{writer.chain}:000000000002"})
    assert second is not None
    await sealed.delete_many({"_id": {"$in": [doc["_id"] for doc in docs[3:6]]}})
    await manifests.delete_one({"_id": second["_id"]})

    result = await replay_user(env, user)

    assert result.returncode == 3
    assert lines(result.stderr)[0] == (
        f"replay: manifest {writer.chain}:000000000003 breaks its chain: manifests 2 to 2 are missing"
    )
    whole = await verify_in_thread(env)
    assert whole.returncode == 3
    assert "1 chain" in whole.stdout.decode()


# --- the encryptor, redelivery and crashes ---


def start_encryptor(env: dict[str, str], where: Path, name: str = "encryptor") -> Component:
    """A real `pulseseal encryptor`, ready; each `name` logs to a directory of its own."""
    return start_ready_encryptor(env, where / name)


async def publish(env: dict[str, str], events: list[dict[str, Any]], size: int) -> None:
    keys = await keyservice_keys(env["PULSESEAL_KEYSERVICE_URL"])
    connection, channel = await open_channel(env["PULSESEAL_AMQP_URL"], transport_keys=keys)
    try:
        for at in range(0, len(events), size):
            await publish_batch(channel, events[at : at + size])
    finally:
        await connection.close()


async def all_stored(sealed: AsyncCollection[dict[str, Any]], users: list[str], count: int) -> None:
    async def done() -> bool:
        return await sealed.count_documents({"user_id": {"$in": users}}) == count

    await wait_for(done, timeout_s=120, what=f"{count} sealed documents")


async def test_a_flush_killed_between_insert_and_manifest_is_listed_on_redelivery(
    store: Store, ks_settings: Settings, tmp_path: Path
) -> None:
    env, sealed = store
    user = new_user()
    events = events_of(user, 400)
    # What a flush killed after its insert and before its manifest leaves behind: documents, no manifest.
    orphans = await seal_with_current_keys(ks_settings, events[:150])
    await insert_sealed(sealed, orphans)
    encryptor = start_encryptor(env, tmp_path)
    try:
        await publish(env, events, 100)  # the broker redelivers the whole batch
        await all_stored(sealed, [user], len(events))
    finally:
        encryptor.stop()

    result = await replay_user(env, user)

    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == canonical(events)
    whole = await verify_in_thread(env)
    assert whole.returncode == 0, whole.stderr.decode()


async def test_an_encryptor_killed_mid_drain_then_redelivered_still_verifies_clean(
    store: Store, ks_settings: Settings, tmp_path: Path
) -> None:
    env = {**store[0], "PULSESEAL_BATCH_MAX_EVENTS": "300"}
    sealed = store[1]
    users = [new_user() for _ in range(3)]
    # Enough that the kill lands mid-drain even on a quiet machine (3,000 were drained between two polls).
    events = [event for user in users for event in events_of(user, 5000)]
    await publish(env, events, 500)
    first = start_encryptor(env, tmp_path, "encryptor-killed")

    async def some_stored() -> bool:
        return await sealed.count_documents({}) > 0

    await wait_for(some_stored, timeout_s=60, what="the first documents")
    first.kill()  # SIGKILL: no drain, no ack of what was in flight
    killed_at = await sealed.count_documents({})
    second = start_encryptor(env, tmp_path, "encryptor-after")
    try:
        await all_stored(sealed, users, len(events))
    finally:
        second.stop()

    assert killed_at < len(events), "the first encryptor finished before it was killed"
    for user in users:
        result = await replay_user(env, user)
        assert result.returncode == 0, result.stderr.decode()
        assert result.stdout == canonical([e for e in events if e["user_id"] == user])
    whole = await verify_in_thread(env)
    assert whole.returncode == 0, whole.stderr.decode()
    assert whole.stdout.decode().startswith(f"verified {len(events)} records against ")


# --- usage-budgeted rotation, end to end ---


async def test_the_encryptor_reports_seals_and_a_tiny_budget_rotates_the_key(
    store: Store, tmp_path: Path
) -> None:
    env, sealed = store
    port = free_port()
    env = {
        **env,
        "PULSESEAL_KEYSERVICE_PORT": str(port),
        "PULSESEAL_KEYSERVICE_URL": f"http://127.0.0.1:{port}",
        "PULSESEAL_KEY_SEAL_BUDGET": "50",
        "PULSESEAL_KEY_USAGE_REPORT_S": "0.2",
    }
    keyservice = start("keyservice-budget", ["keyservice"], env, tmp_path)
    try:
        wait_healthy(keyservice, env["PULSESEAL_KEYSERVICE_URL"] + "/healthz")
        user = new_user()
        events = events_of(user, 200)
        encryptor = start_encryptor(env, tmp_path)
        try:
            await publish(env, events[:60], 20)
            await all_stored(sealed, [user], 60)
            settings = Settings(keyservice_url=env["PULSESEAL_KEYSERVICE_URL"])

            async def rotated() -> bool:
                async with KeyServiceClient.from_settings(settings, "admin") as admin:
                    records = await admin.audit(user_id=user)
                return any(r.action == "rotate" and r.reason == "seal_budget" for r in records)

            await wait_for(rotated, timeout_s=30, what="the automatic rotation")
            await publish(env, events[60:], 20)
            await all_stored(sealed, [user], len(events))
        finally:
            encryptor.stop()
        async with KeyServiceClient.from_settings(settings, "admin") as admin:
            automatic = [r for r in await admin.audit(user_id=user) if r.action == "rotate"]
        first = automatic[0]
        assert (first.caller, first.reason, first.versions) == ("keyservice", "seal_budget", [2])
        versions = {doc["key_version"] async for doc in sealed.find({"user_id": user})}
        assert {1, 2} <= versions  # sealed under the old version, then the new one
        result = await replay_user(env, user)
        assert result.returncode == 0, result.stderr.decode()
        assert result.stdout == canonical(events)
    finally:
        keyservice.stop()


async def test_a_listing_edited_inside_a_manifest_fails_the_users_part(
    store: Store, ks_settings: Settings
) -> None:
    env, sealed = store
    user, _, _ = await stored_user(store, ks_settings, 5, flushes=1)
    manifests = manifests_of(sealed)
    manifest = await manifests.find_one({"users": user})
    assert manifest is not None
    parts = bytearray(manifest["parts"])
    parts[-1] ^= 0x01  # the last byte of the last listing's document hash
    await manifests.update_one({"_id": manifest["_id"]}, {"$set": {"parts": bytes(parts)}})

    result = await replay_user(env, user)

    assert result.returncode == 3
    assert lines(result.stderr)[0] == (
        f"replay: manifest {manifest['_id']} is invalid: a user's part does not match its root"
    )
