"""`pulseseal keys backup|restore`: back up the key store to a file, and merge a backup back in.

Both run the key service's own code against the key-store Redis with the key service's settings (master
key, prefix, receipt key, backup retention); neither needs the key service to run, and both are safe
while it does. A backup's data keys are wrapped under the day's backup key, which is destroyed
`PULSESEAL_BACKUP_RETENTION_DAYS` after that day: both commands first destroy the backup keys whose
retention ended (and rewrite the key store's append-only file after them), and a restore of an expired
backup is refused. Restore re-applies the shred ledger (kept in the key store) in the same transactions,
so a backup taken before a shred never brings the shredded keys back (docs/reliability.md).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from redis.asyncio import Redis

from keyservice.backup import BackupReport, RestoreReport, backup_keystore, restore_keystore
from keyservice.backupkeys import BackupKeyring
from keyservice.bootstrap import ServiceOptions, options_from_settings, store_client
from keyservice.client.tokens import load_private_key
from keyservice.compaction import AofRewriter
from keyservice.ledger import ShredLedger
from keyservice.wire.errors import KeyServiceError
from pulseseal.settings import load_settings
from shell.cli.errors import CliError


def backup(
    out: Annotated[Path, typer.Option("--out", help="The backup file to write (mode 0600).")],
) -> None:
    """Back up every data key (wrapped under a backup key that expires) to one file."""
    try:
        report = asyncio.run(_backup(out))
    except KeyServiceError as exc:
        raise CliError(f"backup failed: {exc.detail}") from None
    print(
        f"backed up {report.key_versions} key versions of {report.users} users to {report.path} "
        f"(restorable until {report.unreadable_after})"
    )


async def _keyring(redis: Redis, options: ServiceOptions, now: datetime) -> BackupKeyring:
    keyring = BackupKeyring(redis, options.prefix, options.master, options.backup_retention_days)
    if await keyring.sweep(now):
        await AofRewriter(redis).rewrite()
    return keyring


async def _backup(out: Path) -> BackupReport:
    options = options_from_settings(load_settings())
    redis = store_client(options)
    now = datetime.now(UTC)
    try:
        keyring = await _keyring(redis, options, now)
        return await backup_keystore(redis, options.master, options.prefix, out, keyring=keyring, now=now)
    finally:
        await redis.aclose()


def restore(
    path: Annotated[Path, typer.Argument(help="A file written by `pulseseal keys backup`.")],
) -> None:
    """Merge a backup into the key store and re-apply the shred ledger (safe to repeat)."""
    try:
        report = asyncio.run(_restore(path))
    except KeyServiceError as exc:
        raise CliError(f"restore failed: {exc.detail}") from None
    print(
        f"restored {report.key_versions_written} key versions of {report.users} users; shred ledger "
        f"re-applied: {report.versions_destroyed_again} versions destroyed again, "
        f"{report.users_shredded_again} users shredded again"
    )


async def _restore(path: Path) -> RestoreReport:
    options = options_from_settings(load_settings())
    redis = store_client(options)
    now = datetime.now(UTC)
    try:
        keyring = await _keyring(redis, options, now)
        ledger = ShredLedger(redis, options.prefix, load_private_key(options.signing_key_file))
        entries = await ledger.load()
        return await restore_keystore(
            redis, options.master, options.prefix, path, entries, keyring=keyring, now=now
        )
    finally:
        await redis.aclose()
