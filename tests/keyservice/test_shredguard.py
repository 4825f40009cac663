"""The key service's in-memory copy of the shred ledger: follows the ledger in the key store as other
replicas append to it, and never forgets a shred when the ledger shrinks or is rewritten."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from redis.asyncio import Redis

from keyservice.ledger import LedgerEntry, ShredLedger
from keyservice.shredguard import ShredGuard
from keyservice.wire.errors import KeyServiceUnavailable

pytestmark = pytest.mark.integration

KEY = Ed25519PrivateKey.generate()
AT = "2026-11-29T00:00:00Z"


def shred(user: str, top: int) -> LedgerEntry:
    return LedgerEntry("shred", user, AT, versions_destroyed=tuple(range(1, top + 1)), max_destroyed=top)


async def test_it_follows_appends_by_other_replicas_and_forbids_destroyed_versions(
    redis: Redis, prefix: str
) -> None:
    ledger = ShredLedger(redis, prefix, KEY)
    guard = ShredGuard(ledger)
    await guard.refresh()
    assert not guard.forbids("a", 1)
    other = ShredLedger(redis, prefix, KEY)  # another key-service replica on the same key store
    await other.append(shred("a", 2))
    await other.append(LedgerEntry("reinstate", "a", AT, version=3))
    await guard.refresh()
    assert guard.forbids("a", 2)
    assert not guard.forbids("a", 3)
    assert not guard.shredded("a")
    await other.append(shred("b", 1))
    await guard.refresh()
    assert guard.shredded("b")
    assert guard.forbids("b", 7)


async def test_a_ledger_that_shrinks_or_is_rewritten_does_not_make_it_forget(
    redis: Redis, prefix: str
) -> None:
    ledger = ShredLedger(redis, prefix, KEY)
    await ledger.append(shred("a", 1))
    guard = ShredGuard(ledger)
    await guard.refresh()
    await redis.delete(ledger.key)  # the key store rolled back to files from before the shred
    await guard.refresh()
    assert guard.shredded("a")
    await ledger.append(shred("b", 1))  # a new, shorter chain
    await guard.refresh()
    assert guard.shredded("a")
    assert guard.shredded("b")


async def test_a_ledger_that_stops_verifying_fails_closed(redis: Redis, prefix: str) -> None:
    ledger = ShredLedger(redis, prefix, KEY)
    guard = ShredGuard(ledger)
    await guard.refresh()
    await redis.rpush(ledger.key, b'{"event":"shred","user_id":"a"}')
    with pytest.raises(KeyServiceUnavailable, match="does not verify"):
        await guard.refresh()
