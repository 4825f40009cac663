"""Key-store backups on the real key-store Redis: a lost store comes back whole, a restore never undoes
what happened after the backup (new keys, rotations, shreds), and a damaged or foreign backup is refused."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from redis.asyncio import Redis

from keyservice.backup import BackupError, backup_keystore, restore_keystore
from keyservice.ledger import LedgerEntry
from keyservice.store import KeyStore
from keyservice.wrapping import MasterKey

pytestmark = pytest.mark.integration


async def _wipe(redis: Redis, prefix: str) -> None:
    async for name in redis.scan_iter(match=f"{prefix}*"):
        await redis.delete(name)


async def _b64(store: KeyStore, refs: list[tuple[str, int]]) -> dict[tuple[str, int], str]:
    lookup = await store.keys_at(refs)
    return {(k.user_id, k.version): k.b64() for k in lookup.found}


async def test_a_lost_store_comes_back_whole_and_the_file_holds_no_key_in_clear(
    store: KeyStore, redis: Redis, prefix: str, master: MasterKey, tmp_path: Path
) -> None:
    users = [f"b-{i}" for i in range(700)]
    keys, _ = await store.current_keys(users)
    await store.rotate("b-1")
    before = await _b64(store, [(u, 1) for u in users] + [("b-1", 2)])
    path = tmp_path / "keys.backup"
    report = await backup_keystore(redis, master, prefix, path)
    assert (report.users, report.key_versions) == (700, 701)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert all(k.b64() not in text for k in keys)
    await _wipe(redis, prefix)
    restored = await restore_keystore(redis, master, prefix, path, [])
    assert (restored.users, restored.key_versions_written) == (700, 701)
    assert await _b64(store, list(before)) == before
    assert (await store.current_keys(["b-1"]))[0][0].version == 2
    again = await restore_keystore(redis, master, prefix, path, [])
    assert again.key_versions_written == 0  # safe to repeat


async def test_a_restore_keeps_what_happened_after_the_backup(
    store: KeyStore, redis: Redis, prefix: str, master: MasterKey, tmp_path: Path
) -> None:
    await store.current_keys(["rotated", "shredded", "kept"])
    path = tmp_path / "keys.backup"
    await backup_keystore(redis, master, prefix, path)
    await store.rotate("rotated")
    new_user, _ = await store.current_keys(["newcomer"])
    shredded = await store.shred("shredded")
    await restore_keystore(redis, master, prefix, path, [])  # even without the ledger
    assert (await store.current_keys(["rotated"]))[0][0].version == 2
    assert (await store.current_keys(["newcomer"]))[0][0].b64() == new_user[0].b64()
    keys, refused = await store.current_keys(["shredded"])
    assert (keys, refused) == ([], ["shredded"])
    assert (await store.keys_at([("shredded", 1)])).missing == [("shredded", 1, "shredded")]
    assert shredded.versions == (1,)


async def test_the_ledger_is_reapplied_for_users_the_backup_does_not_name(
    store: KeyStore, redis: Redis, prefix: str, master: MasterKey, tmp_path: Path
) -> None:
    path = tmp_path / "keys.backup"
    await backup_keystore(redis, master, prefix, path)  # empty
    await _wipe(redis, prefix)
    ledger = [
        LedgerEntry("shred", "gone", "2026-11-29T00:00:00Z", versions_destroyed=(1, 2), max_destroyed=2)
    ]
    report = await restore_keystore(redis, master, prefix, path, ledger)
    assert report.users_shredded_again == 1
    assert (await store.current_keys(["gone"]))[1] == ["gone"]  # no fresh version 1 for them


async def test_a_damaged_or_foreign_backup_is_refused(
    store: KeyStore, redis: Redis, prefix: str, master: MasterKey, tmp_path: Path
) -> None:
    await store.current_keys(["x"])
    path = tmp_path / "keys.backup"
    await backup_keystore(redis, master, prefix, path)
    lines = path.read_bytes().splitlines(keepends=True)
    cut = tmp_path / "cut.backup"
    cut.write_bytes(b"".join(lines[:-1]))
    with pytest.raises(BackupError, match=r"cut short|not a readable"):
        await restore_keystore(redis, master, prefix, cut, [])
    edited = tmp_path / "edited.backup"
    entry = json.loads(lines[1])
    entry["user_id"] = "y"
    edited.write_bytes(lines[0] + json.dumps(entry).encode() + b"\n" + lines[2])
    with pytest.raises(BackupError, match="checksum"):
        await restore_keystore(redis, master, prefix, edited, [])
    with pytest.raises(BackupError, match="master key"):
        await restore_keystore(redis, MasterKey(os.urandom(32)), prefix, path, [])


async def test_a_symlink_planted_at_the_temporary_name_is_never_followed(
    store: KeyStore, redis: Redis, prefix: str, master: MasterKey, tmp_path: Path
) -> None:
    await store.current_keys(["planted"])
    victim = tmp_path / "elsewhere" / "victim.txt"
    victim.parent.mkdir()
    victim.write_text("keep me\n")
    path = tmp_path / "keys.backup"
    (tmp_path / ".keys.backup.partial").symlink_to(victim)
    await backup_keystore(redis, master, prefix, path)
    assert victim.read_text() == "keep me\n"  # O_TRUNC through the symlink used to overwrite it
    assert not path.is_symlink()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
