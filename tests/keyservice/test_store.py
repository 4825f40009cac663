"""The key store on the real key-store Redis: create-once (also from two OS processes), rotation,
shredding, reinstating, wrapped-only storage, and refusing keys under a retired master key."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import time

import pytest
from redis.asyncio import Redis

from keyservice.store import KeyStore
from keyservice.wire.errors import (
    KeyServiceUnavailable,
    KeyShredded,
    KeyUnwrapError,
    StartupRefused,
    UserNotShredded,
)
from keyservice.wrapping import WRAPPED_BYTES, MasterKey
from tests.keyservice.helpers import ROOT

pytestmark = pytest.mark.integration


def raw(key: object) -> bytes:
    return base64.b64decode(key.b64())  # type: ignore[attr-defined]


async def test_first_use_creates_version_1_and_keeps_it(store: KeyStore, redis: Redis) -> None:
    keys, shredded = await store.current_keys(["a", "b"])
    assert shredded == []
    assert [(k.user_id, k.version) for k in keys] == [("a", 1), ("b", 1)]
    again, _ = await store.current_keys(["b", "a"])
    assert {k.user_id: raw(k) for k in again} == {k.user_id: raw(k) for k in keys}
    stored = await redis.hgetall(store.user_key("a"))
    assert set(stored) == {b"cur", b"v:1"}
    assert len(stored[b"v:1"]) == WRAPPED_BYTES
    assert raw(keys[0]) not in stored[b"v:1"]  # only wrapped at rest


async def test_concurrent_first_use_in_one_process_creates_once(store: KeyStore) -> None:
    users = [f"c{n}" for n in range(50)]
    results = await asyncio.gather(*(store.current_keys(users) for _ in range(20)))
    for keys, _ in results:
        assert {k.user_id: raw(k) for k in keys} == {k.user_id: raw(k) for k in results[0][0]}


async def test_two_processes_hammering_first_use_create_exactly_one_version_1(
    redis_url: str, prefix: str, master: MasterKey, redis: Redis
) -> None:
    master_b64 = base64.b64encode(os.urandom(32)).decode()
    count, start = 300, time.time() + 2.0
    cmd = [
        sys.executable,
        str(ROOT / "tests" / "keyservice" / "hammer_create.py"),
        redis_url,
        prefix,
        master_b64,
        str(count),
        str(start),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        await asyncio.create_subprocess_exec(*cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        for _ in range(2)
    ]
    outputs = [await asyncio.wait_for(p.communicate(), 60) for p in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err.decode()
    seen = [json.loads(out) for out, _ in outputs]
    assert len(seen[0]) == len(seen[1]) == count
    assert seen[0] == seen[1]  # both processes got the very same key for every user
    assert {version for version, _ in seen[0].values()} == {1}
    store = KeyStore(redis, MasterKey.from_base64(master_b64), prefix=prefix)
    for n in range(count):
        assert set(await redis.hkeys(store.user_key(f"hammer-{n}"))) == {b"cur", b"v:1"}


async def test_rotate_adds_a_version_and_old_ones_still_open(store: KeyStore) -> None:
    [v1], _ = await store.current_keys(["r"])
    assert await store.rotate("r") == 2
    assert await store.rotate("r") == 3
    [current], _ = await store.current_keys(["r"])
    assert current.version == 3
    lookup = await store.keys_at([("r", 1), ("r", 2), ("r", 3), ("r", 4)])
    assert [(k.version) for k in lookup.found] == [1, 2, 3]
    assert raw(lookup.found[0]) == raw(v1)
    assert lookup.missing == [("r", 4, "unknown")]


async def test_rotate_unknown_user_creates_version_1(store: KeyStore) -> None:
    assert await store.rotate("fresh") == 1


async def test_shred_destroys_every_version_and_blocks_creation(store: KeyStore, redis: Redis) -> None:
    await store.current_keys(["s"])
    await store.rotate("s")
    shredded = await store.shred("s")
    assert (shredded.versions, shredded.max_destroyed) == ((1, 2), 2)
    fields = await redis.hgetall(store.user_key("s"))
    assert fields.keys() == {b"shredded", b"floor", b"d:1", b"d:2"}  # no key left; when each was destroyed
    assert (fields[b"shredded"], fields[b"floor"]) == (b"1", b"2")
    keys, refused = await store.current_keys(["s", "t"])
    assert ([k.user_id for k in keys], refused) == (["t"], ["s"])
    assert (await store.keys_at([("s", 1)])).missing == [("s", 1, "shredded")]
    with pytest.raises(KeyShredded):
        await store.rotate("s")
    again = await store.shred("s")
    assert (again.versions, again.max_destroyed) == ((), 2)


async def test_shred_of_a_user_without_keys_blocks_them_too(store: KeyStore) -> None:
    assert (await store.shred("never")).versions == ()
    assert await store.current_keys(["never"]) == ([], ["never"])


async def test_reinstate_gives_a_version_above_every_destroyed_one(store: KeyStore) -> None:
    await store.current_keys(["re"])
    await store.rotate("re")
    await store.shred("re")
    with pytest.raises(UserNotShredded):
        await store.reinstate("other-user", 1)
    assert await store.reinstate("re", 3) == 3
    [key], _ = await store.current_keys(["re"])
    assert key.version == 3
    assert (await store.keys_at([("re", 2)])).missing == [("re", 2, "shredded")]


async def test_reinstate_with_a_stale_version_moves_up(store: KeyStore) -> None:
    await store.shred("stale")
    assert await store.reinstate("stale", 1) == 1
    await store.shred("stale")
    assert await store.reinstate("stale", 1) == 2  # retried at the version the store asked for


async def test_a_tampered_wrapped_key_fails_closed(store: KeyStore, redis: Redis) -> None:
    await store.current_keys(["tamper"])
    wrapped = await redis.hget(store.user_key("tamper"), "v:1")
    assert isinstance(wrapped, bytes)
    await redis.hset(store.user_key("tamper"), "v:1", wrapped[:-1] + bytes([wrapped[-1] ^ 1]))
    with pytest.raises(KeyUnwrapError):
        await store.current_keys(["tamper"])
    # A wrapped key moved to another user does not open either.
    await store.current_keys(["victim"])
    await redis.hset(store.user_key("victim"), "v:1", wrapped)
    with pytest.raises(KeyUnwrapError):
        await store.current_keys(["victim"])


async def test_a_different_master_key_is_refused(store: KeyStore, redis: Redis, prefix: str) -> None:
    other = KeyStore(redis, MasterKey(os.urandom(32)), prefix=prefix)
    with pytest.raises(StartupRefused, match="does not match the key store"):
        await other.check_master()
    # Even without the startup check, it creates nothing under a key the store does not know.
    with pytest.raises(KeyServiceUnavailable):
        await other.current_keys(["new-user"])


async def test_no_keys_are_created_while_a_rewrap_is_in_progress(store: KeyStore, redis: Redis) -> None:
    await redis.hset(store.meta_key, "rewrap_to", "0011223344556677")
    with pytest.raises(KeyServiceUnavailable, match="re-wrapped"):
        await store.current_keys(["during-rewrap"])
    with pytest.raises(StartupRefused, match="rewrap is in progress"):
        await store.check_master()


async def test_store_reports_aof(store: KeyStore) -> None:
    assert await store.durability() is True


async def test_redis_down_is_unavailable(master: MasterKey, prefix: str) -> None:
    dead = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    store = KeyStore(dead, master, prefix=prefix)
    with pytest.raises(KeyServiceUnavailable):
        await store.current_keys(["x"])
    await dead.aclose()
