"""The shred ledger in the key store: signed, hash-chained entries shared by every replica; a changed,
deleted or reordered entry refuses startup; an old ledger file is imported once; and re-applying it on
start stops a key store restored from an old backup from handing out shredded keys."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from redis.asyncio import Redis

from keyservice.app import create_app
from keyservice.bootstrap import ServiceOptions, open_service
from keyservice.ledger import GENESIS, LedgerEntry, ShredLedger, UserFloor, digest_of, summarize
from keyservice.legacyledger import import_legacy_file
from keyservice.wire.errors import LedgerError, StartupRefused
from tests.keyservice.app_calls import DECRYPT, ENCRYPT, send
from tests.keyservice.helpers import Credentials

KEY = Ed25519PrivateKey.generate()


async def test_append_and_load(redis: Redis, prefix: str) -> None:
    ledger = ShredLedger(redis, prefix, KEY)
    assert await ledger.load() == []
    shred = LedgerEntry(
        "shred", "alice", "2026-01-01T00:00:00.000Z", versions_destroyed=(1, 2), max_destroyed=2
    )
    back = LedgerEntry("reinstate", "alice", "2026-01-02T00:00:00.000Z", version=3)
    await ledger.append(shred)
    await ledger.append(back)
    assert await ledger.load() == [shred, back]
    # Another replica on the same key store reads the same ledger.
    assert await ShredLedger(redis, prefix, KEY).load() == [shred, back]
    lines = [line for line in await redis.lrange(ledger.key, 0, -1) if isinstance(line, bytes)]
    assert [json.loads(line)["seq"] for line in lines] == [0, 1]
    assert json.loads(lines[0])["prev"] == GENESIS
    assert json.loads(lines[1])["prev"] == digest_of(lines[0])


async def test_concurrent_appends_by_two_replicas_keep_one_chain(redis: Redis, prefix: str) -> None:
    one, two = ShredLedger(redis, prefix, KEY), ShredLedger(redis, prefix, KEY)
    entries = [
        LedgerEntry("shred", f"u{i}", "t", versions_destroyed=(1,), max_destroyed=1) for i in range(20)
    ]
    await asyncio.gather(*((one if i % 2 else two).append(e) for i, e in enumerate(entries)))
    loaded = await one.load()
    assert sorted(e.user_id for e in loaded) == sorted(e.user_id for e in entries)


async def test_a_changed_deleted_or_reordered_entry_is_detected(redis: Redis, prefix: str) -> None:
    ledger = ShredLedger(redis, prefix, KEY)
    for user in "abc":
        await ledger.append(LedgerEntry("shred", user, "t", versions_destroyed=(1,), max_destroyed=1))
    lines = [line for line in await redis.lrange(ledger.key, 0, -1) if isinstance(line, bytes)]

    async def stored(new: list[bytes]) -> None:
        await redis.delete(ledger.key)
        await redis.rpush(ledger.key, *new)

    changed = json.loads(lines[1])
    changed["user_id"] = "z"
    await stored([lines[0], json.dumps(changed).encode(), lines[2]])
    with pytest.raises(LedgerError, match="entry 1: signature does not verify"):
        await ledger.load()
    await stored([lines[0], lines[2]])  # the middle one deleted
    with pytest.raises(LedgerError, match="entry 1: out of place"):
        await ledger.load()
    await stored([lines[1], lines[0], lines[2]])  # reordered
    with pytest.raises(LedgerError, match="entry 0: out of place"):
        await ledger.load()
    await stored([b"{}"])
    with pytest.raises(LedgerError, match="not a ledger entry"):
        await ledger.load()
    await stored(lines)
    assert len(await ledger.load()) == 3
    with pytest.raises(LedgerError, match="signature"):
        await ShredLedger(redis, prefix, Ed25519PrivateKey.generate()).load()


async def test_an_old_ledger_file_is_imported_once(redis: Redis, prefix: str, tmp_path: Path) -> None:
    path = tmp_path / "shred-ledger.ndjson"
    body = {"event": "shred", "user_id": "old", "at": "t", "versions_destroyed": [1], "max_destroyed": 1}
    signed = b"pulseseal-shred-ledger/v1\n" + json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    signature = base64.b64encode(KEY.sign(signed)).decode()
    path.write_text(json.dumps({**body, "signature": signature}) + "\n" + '{"event":"shred","user')
    ledger = ShredLedger(redis, prefix, KEY)
    assert await import_legacy_file(ledger, path, KEY) == 1
    assert await import_legacy_file(ledger, path, KEY) == 0
    assert [e.user_id for e in await ledger.load()] == ["old"]
    path.write_text(json.dumps({**body, "user_id": "changed", "signature": signature}) + "\n")
    with pytest.raises(LedgerError, match="line 1: signature does not verify"):
        await import_legacy_file(ledger, path, KEY)


def test_summarize() -> None:
    entries = [
        LedgerEntry("shred", "a", "t", versions_destroyed=(1, 2), max_destroyed=2),
        LedgerEntry("reinstate", "a", "t", version=3),
        LedgerEntry("shred", "b", "t", versions_destroyed=(), max_destroyed=0),
        LedgerEntry("reinstate", "c", "t", version=1),
        LedgerEntry("shred", "c", "t", versions_destroyed=(1, 2, 3), max_destroyed=3),
    ]
    assert summarize(entries) == {
        "a": UserFloor(2, False, 3),
        "b": UserFloor(0, True, 0),
        "c": UserFloor(3, True, 1),
    }


@pytest.mark.integration
async def test_a_restored_backup_never_hands_out_shredded_keys(
    options: ServiceOptions, creds: Credentials, redis: Redis
) -> None:
    service = await open_service(options)
    transport = httpx.ASGITransport(app=create_app(service))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
        users = {"user_ids": ["victim", "reinstated", "bystander"]}
        before = (await send(http, creds, "encryptor", "POST", ENCRYPT, users)).json()["keys"]
        # The backup, taken before any shred.
        backup = {u: await redis.dump(service.store.user_key(u)) for u in users["user_ids"]}
        await send(http, creds, "admin", "DELETE", "/v1/users/victim")
        await send(http, creds, "admin", "DELETE", "/v1/users/reinstated")
        assert (await send(http, creds, "admin", "POST", "/v1/users/reinstated/reinstate")).json()[
            "version"
        ] == 2
    await service.close()

    # Disaster: the key store is restored from the old backup; the shredded keys are back in Redis.
    for user, dumped in backup.items():
        assert dumped is not None
        await redis.restore(service.store.user_key(user), 0, dumped, replace=True)

    service = await open_service(options)  # re-applies the ledger before serving
    transport = httpx.ASGITransport(app=create_app(service))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
        enc = (
            await send(
                http, creds, "encryptor", "POST", ENCRYPT, {"user_ids": ["victim", "reinstated", "bystander"]}
            )
        ).json()
        refs = [{"user_id": k["user_id"], "version": 1} for k in before]
        dec = (await send(http, creds, "auditor", "POST", DECRYPT, {"keys": refs, "purpose": "check"})).json()
    await service.close()
    handed_out = {k["key"] for k in enc["keys"]} | {k["key"] for k in dec["keys"]}
    old = {k["user_id"]: k["key"] for k in before}
    assert old["victim"] not in handed_out
    assert old["reinstated"] not in handed_out
    assert enc["refused"] == [{"user_id": "victim", "reason": "shredded"}]
    # The reinstated user gets a version above every destroyed one, and above the lost reinstated one.
    assert [(k["user_id"], k["version"]) for k in enc["keys"]] == [("reinstated", 3), ("bystander", 1)]
    assert {(m["user_id"], m["reason"]) for m in dec["missing"]} == {
        ("victim", "shredded"),
        ("reinstated", "shredded"),
    }
    assert [k["key"] for k in dec["keys"]] == [old["bystander"]]


@pytest.mark.integration
async def test_a_tampered_ledger_refuses_startup(options: ServiceOptions, redis: Redis) -> None:
    await redis.rpush(f"{options.prefix}ledger", b'{"event":"shred","user_id":"a","signature":"AAAA"}')
    with pytest.raises(StartupRefused, match="shred ledger"):
        await open_service(options)
