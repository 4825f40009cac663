"""The shred ledger: signed, fsync'd lines; tampering refuses startup; a torn tail is cut; and re-applying
it on start stops a key store restored from an old backup from handing out shredded keys."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from redis.asyncio import Redis

from keyservice.app import create_app
from keyservice.bootstrap import ServiceOptions, open_service
from keyservice.ledger import LedgerEntry, ShredLedger, UserFloor, summarize
from keyservice.wire.errors import LedgerError, StartupRefused
from tests.keyservice.helpers import Credentials
from tests.keyservice.test_app import DECRYPT, ENCRYPT, send

KEY = Ed25519PrivateKey.generate()


async def test_append_and_load(tmp_path: Path) -> None:
    ledger = ShredLedger(tmp_path / "ks" / "shred-ledger.ndjson", KEY)
    assert ledger.load() == []
    shred = LedgerEntry(
        "shred", "alice", "2026-01-01T00:00:00.000Z", versions_destroyed=(1, 2), max_destroyed=2
    )
    back = LedgerEntry("reinstate", "alice", "2026-01-02T00:00:00.000Z", version=3)
    await ledger.append(shred)
    await ledger.append(back)
    assert ledger.load() == [shred, back]
    assert (ledger.path.stat().st_mode & 0o777) == 0o600
    assert (ledger.path.parent.stat().st_mode & 0o777) == 0o700


async def test_tampered_line_refuses(tmp_path: Path) -> None:
    ledger = ShredLedger(tmp_path / "l.ndjson", KEY)
    await ledger.append(LedgerEntry("shred", "alice", "t", versions_destroyed=(1,), max_destroyed=1))
    line = json.loads(ledger.path.read_text())
    line["user_id"] = "bob"
    ledger.path.write_text(json.dumps(line) + "\n")
    with pytest.raises(LedgerError, match="line 1: signature does not verify"):
        ledger.load()
    ledger.path.write_text("{}\n")
    with pytest.raises(LedgerError, match="not a ledger entry"):
        ledger.load()
    # The untouched line, checked with another service's key, does not verify either.
    ledger.path.write_text(json.dumps({**line, "user_id": "alice"}) + "\n")
    assert len(ledger.load()) == 1
    with pytest.raises(LedgerError, match="signature"):
        ShredLedger(ledger.path, Ed25519PrivateKey.generate()).load()


async def test_torn_last_line_is_cut(tmp_path: Path) -> None:
    ledger = ShredLedger(tmp_path / "l.ndjson", KEY)
    entry = LedgerEntry("shred", "alice", "t", versions_destroyed=(1,), max_destroyed=1)
    await ledger.append(entry)
    with ledger.path.open("ab") as f:
        f.write(b'{"event":"shred","user_id":"bo')
    assert ledger.load() == [entry]
    await ledger.append(entry)
    assert ledger.load() == [entry, entry]


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
async def test_a_tampered_ledger_refuses_startup(options: ServiceOptions) -> None:
    options.ledger_file.parent.mkdir(parents=True)
    options.ledger_file.write_text('{"event":"shred","user_id":"a","signature":"AAAA"}\n')
    with pytest.raises(StartupRefused, match="shred ledger"):
        await open_service(options)
