"""Key-store backups on the real key-store Redis: a lost store comes back whole, a restore never undoes
what happened after the backup (new keys, rotations, shreds), and a damaged or foreign backup is refused."""

from __future__ import annotations

import base64
import json
import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest
from redis.asyncio import Redis

from keyservice.backup import BackupError, backup_keystore, restore_keystore
from keyservice.backupkeys import BackupExpired, BackupKeyring
from keyservice.ledger import LedgerEntry
from keyservice.store import KeyStore
from keyservice.wire.errors import KeyUnwrapError
from keyservice.wrapping import MasterKey

pytestmark = pytest.mark.integration


async def _wipe(redis: Redis, prefix: str) -> None:
    # The keys are lost, not the backup keys: a backup can only be restored while its backup key exists.
    async for name in redis.scan_iter(match=f"{prefix}*"):
        if name != f"{prefix}backup-keys".encode():
            await redis.delete(name)


@pytest.fixture
def keyring(redis: Redis, prefix: str, master: MasterKey) -> BackupKeyring:
    """The backup keys of this test's key store (30 days' retention)."""
    return BackupKeyring(redis, prefix, master, 30)


async def _b64(store: KeyStore, refs: list[tuple[str, int]]) -> dict[tuple[str, int], str]:
    lookup = await store.keys_at(refs)
    return {(k.user_id, k.version): k.b64() for k in lookup.found}


async def test_a_lost_store_comes_back_whole_and_the_file_holds_no_key_in_clear(
    store: KeyStore, redis: Redis, prefix: str, master: MasterKey, tmp_path: Path, keyring: BackupKeyring
) -> None:
    users = [f"b-{i}" for i in range(700)]
    keys, _ = await store.current_keys(users)
    await store.rotate("b-1")
    before = await _b64(store, [(u, 1) for u in users] + [("b-1", 2)])
    path = tmp_path / "keys.backup"
    report = await backup_keystore(redis, master, prefix, path, keyring=keyring)
    assert (report.users, report.key_versions) == (700, 701)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert all(k.b64() not in text for k in keys)
    await _wipe(redis, prefix)
    restored = await restore_keystore(redis, master, prefix, path, [], keyring=keyring)
    assert (restored.users, restored.key_versions_written) == (700, 701)
    assert await _b64(store, list(before)) == before
    assert (await store.current_keys(["b-1"]))[0][0].version == 2
    again = await restore_keystore(redis, master, prefix, path, [], keyring=keyring)
    assert again.key_versions_written == 0  # safe to repeat


async def test_a_restore_keeps_what_happened_after_the_backup(
    store: KeyStore, redis: Redis, prefix: str, master: MasterKey, tmp_path: Path, keyring: BackupKeyring
) -> None:
    await store.current_keys(["rotated", "shredded", "kept"])
    path = tmp_path / "keys.backup"
    await backup_keystore(redis, master, prefix, path, keyring=keyring)
    await store.rotate("rotated")
    new_user, _ = await store.current_keys(["newcomer"])
    shredded = await store.shred("shredded")
    await restore_keystore(redis, master, prefix, path, [], keyring=keyring)  # even without the ledger
    assert (await store.current_keys(["rotated"]))[0][0].version == 2
    assert (await store.current_keys(["newcomer"]))[0][0].b64() == new_user[0].b64()
    keys, refused = await store.current_keys(["shredded"])
    assert (keys, refused) == ([], ["shredded"])
    assert (await store.keys_at([("shredded", 1)])).missing == [("shredded", 1, "shredded")]
    assert shredded.versions == (1,)


async def test_the_ledger_is_reapplied_for_users_the_backup_does_not_name(
    store: KeyStore, redis: Redis, prefix: str, master: MasterKey, tmp_path: Path, keyring: BackupKeyring
) -> None:
    path = tmp_path / "keys.backup"
    await backup_keystore(redis, master, prefix, path, keyring=keyring)  # empty
    await _wipe(redis, prefix)
    ledger = [
        LedgerEntry("shred", "gone", "2026-11-29T00:00:00Z", versions_destroyed=(1, 2), max_destroyed=2)
    ]
    report = await restore_keystore(redis, master, prefix, path, ledger, keyring=keyring)
    assert report.users_shredded_again == 1
    assert (await store.current_keys(["gone"]))[1] == ["gone"]  # no fresh version 1 for them


async def test_a_damaged_or_foreign_backup_is_refused(
    store: KeyStore, redis: Redis, prefix: str, master: MasterKey, tmp_path: Path, keyring: BackupKeyring
) -> None:
    await store.current_keys(["x"])
    path = tmp_path / "keys.backup"
    await backup_keystore(redis, master, prefix, path, keyring=keyring)
    lines = path.read_bytes().splitlines(keepends=True)
    cut = tmp_path / "cut.backup"
    cut.write_bytes(b"".join(lines[:-1]))
    with pytest.raises(BackupError, match=r"cut short|not a readable"):
        await restore_keystore(redis, master, prefix, cut, [], keyring=keyring)
    edited = tmp_path / "edited.backup"
    entry = json.loads(lines[1])
    entry["user_id"] = "y"
    edited.write_bytes(lines[0] + json.dumps(entry).encode() + b"\n" + lines[2])
    with pytest.raises(BackupError, match="checksum"):
        await restore_keystore(redis, master, prefix, edited, [], keyring=keyring)
    with pytest.raises(BackupError, match="master key"):
        await restore_keystore(redis, MasterKey(os.urandom(32)), prefix, path, [], keyring=keyring)
    old = tmp_path / "v1.backup"
    old.write_bytes(lines[0].replace(b"backup/v2", b"backup/v1") + b"".join(lines[1:]))
    with pytest.raises(BackupError, match="v1 backup"):
        await restore_keystore(redis, master, prefix, old, [], keyring=keyring)


async def test_a_backup_forgets_when_its_retention_ends(
    store: KeyStore, redis: Redis, prefix: str, master: MasterKey, tmp_path: Path, keyring: BackupKeyring
) -> None:
    """Past `unreadable_after` the backup key is destroyed: the restore is refused with one clear line, and
    even with the master key and the key store's Redis nothing in the file opens any more."""
    keys, _ = await store.current_keys(["kept"])
    taken = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
    path = tmp_path / "keys.backup"
    report = await backup_keystore(redis, master, prefix, path, keyring=keyring, now=taken)
    assert report.unreadable_after == "2027-01-01T00:00:00.000Z"  # end of its day + 30 days
    assert keys[0].b64() not in path.read_text()
    header = json.loads(path.read_bytes().splitlines()[0])
    assert header["backup_key"] == "2026-12-01"
    # Within the retention it restores (the key store lost the user, the backup brings them back).
    await _wipe(redis, prefix)
    last_day = datetime(2026, 12, 31, 23, 59, tzinfo=UTC)
    restored = await restore_keystore(redis, master, prefix, path, [], keyring=keyring, now=last_day)
    assert restored.key_versions_written == 1
    # One second past it: refused, whether or not the sweep has run yet ...
    after = datetime(2027, 1, 1, 0, 0, 1, tzinfo=UTC)
    with pytest.raises(BackupExpired, match=r"has expired and can never be restored.*2027-01-01T00:00:00"):
        await restore_keystore(redis, master, prefix, path, [], keyring=keyring, now=after)
    # ... and once swept, the backup key is gone from the key store for good.
    assert await keyring.sweep(after) == ["2026-12-01"]
    assert not await redis.exists(keyring.key)
    with pytest.raises(BackupExpired, match="destroyed"):
        await restore_keystore(redis, master, prefix, path, [], keyring=keyring, now=taken)
    # The file's wrapped keys open under neither the master key nor anything the store still has.
    line = json.loads(path.read_bytes().splitlines()[1])
    wrapped = base64.b64decode(line["fields"]["v:1"])
    with pytest.raises(KeyUnwrapError):
        master.unwrap("kept", 1, wrapped)


async def test_backups_unreadable_after_covers_every_backup_key_that_exists(
    redis: Redis, keyring: BackupKeyring
) -> None:
    now = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
    assert await keyring.unreadable_after(now) == "2026-12-04T12:00:00.000Z"  # no backup: nothing to wait for
    await keyring.for_backup(datetime(2026, 12, 2, tzinfo=UTC))
    await keyring.for_backup(now)
    assert await keyring.unreadable_after(now) == "2027-01-04T00:00:00.000Z"
    assert len(await redis.hgetall(keyring.key)) == 2  # one key per day, shared by that day's backups
    await keyring.for_backup(now)
    assert len(await redis.hgetall(keyring.key)) == 2


async def test_a_symlink_planted_at_the_backup_name_is_never_followed(
    store: KeyStore, redis: Redis, prefix: str, master: MasterKey, tmp_path: Path, keyring: BackupKeyring
) -> None:
    await store.current_keys(["planted"])
    victim = tmp_path / "elsewhere" / "victim.txt"
    victim.parent.mkdir()
    victim.write_text("keep me\n")
    path = tmp_path / "keys.backup"
    path.symlink_to(victim)
    await backup_keystore(redis, master, prefix, path, keyring=keyring)
    # The backup is written to a new file (O_EXCL|O_NOFOLLOW) and renamed over the name: the link itself
    # is replaced, what it pointed to is untouched.
    assert victim.read_text() == "keep me\n"
    assert not path.is_symlink()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
