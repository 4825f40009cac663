"""Master-key rotation: every data key re-wrapped in process, safe to re-run after an interruption, and
no key created under the old master key while it runs."""

from __future__ import annotations

import base64
import os

import pytest
from redis.asyncio import Redis

from keyservice.rewrap import RewrapRefused, rewrap
from keyservice.store import KeyStore
from keyservice.wire.errors import KeyServiceUnavailable, StartupRefused
from keyservice.wrapping import MasterKey

pytestmark = pytest.mark.integration


async def populate(store: KeyStore, count: int) -> dict[tuple[str, int], bytes]:
    users = [f"rw-{n}" for n in range(count)]
    _keys, _ = await store.current_keys(users)
    await store.rotate("rw-0")
    await store.rotate("rw-0")
    await store.shred("rw-1")
    everything = await store.keys_at([(u, v) for u in users for v in (1, 2, 3)])
    return {(k.user_id, k.version): base64.b64decode(k.b64()) for k in everything.found}


async def assert_same_keys(store: KeyStore, expected: dict[tuple[str, int], bytes]) -> None:
    found = await store.keys_at(list(expected))
    assert {(k.user_id, k.version): base64.b64decode(k.b64()) for k in found.found} == expected


async def test_rewrap_moves_every_key_to_the_new_master_key(redis: Redis, prefix: str) -> None:
    old, new = MasterKey(os.urandom(32)), MasterKey(os.urandom(32))
    store = KeyStore(redis, old, prefix=prefix)
    await store.check_master()
    expected = await populate(store, 50)
    report = await rewrap(redis, old, new, prefix=prefix)
    assert (report.keys_rewrapped, report.already_done) == (len(expected), False)
    moved = KeyStore(redis, new, prefix=prefix)
    await moved.check_master()
    await assert_same_keys(moved, expected)
    assert (await moved.current_keys(["rw-1"]))[1] == ["rw-1"]  # still shredded
    with pytest.raises(StartupRefused, match="does not match"):
        await store.check_master()
    # Running it again is harmless.
    assert (await rewrap(redis, old, new, prefix=prefix)).already_done


async def test_an_interrupted_rewrap_carries_on_when_run_again(redis: Redis, prefix: str) -> None:
    old, new = MasterKey(os.urandom(32)), MasterKey(os.urandom(32))
    store = KeyStore(redis, old, prefix=prefix)
    await store.check_master()
    expected = await populate(store, 1500)

    def crash(done: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        await rewrap(redis, old, new, prefix=prefix, on_batch=crash)
    wrapped = [
        w
        for (u, v) in expected
        for w in [await redis.hget(store.user_key(u), f"v:{v}")]
        if isinstance(w, bytes)
    ]
    assert any(new.owns(w) for w in wrapped)
    assert any(old.owns(w) for w in wrapped)

    # Meanwhile: a service with either key refuses to start, and the running one creates nothing.
    with pytest.raises(StartupRefused, match="rewrap is in progress"):
        await store.check_master()
    with pytest.raises(StartupRefused, match="rewrap is in progress"):
        await KeyStore(redis, new, prefix=prefix).check_master()
    with pytest.raises(KeyServiceUnavailable):
        await store.current_keys(["brand-new-user"])
    with pytest.raises(RewrapRefused, match="another master key"):
        await rewrap(redis, old, MasterKey(os.urandom(32)), prefix=prefix)

    report = await rewrap(redis, old, new, prefix=prefix)
    assert 0 < report.keys_rewrapped < len(expected)
    moved = KeyStore(redis, new, prefix=prefix)
    await moved.check_master()
    await assert_same_keys(moved, expected)


async def test_rewrap_refuses_keys_that_do_not_match(redis: Redis, prefix: str) -> None:
    old = MasterKey(os.urandom(32))
    await KeyStore(redis, old, prefix=prefix).check_master()
    with pytest.raises(RewrapRefused, match="does not match"):
        await rewrap(redis, MasterKey(os.urandom(32)), MasterKey(os.urandom(32)), prefix=prefix)
    # Re-wrapping to the key the store already uses is nothing to do.
    assert (await rewrap(redis, old, old, prefix=prefix)).already_done
