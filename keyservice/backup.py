"""Backing up and restoring the key store (`pulseseal keys backup` / `pulseseal keys restore`).

A backup is one NDJSON file: a header naming the format, the key-store prefix, the master key, and the
*backup key* its data keys are wrapped under (backupkeys.py) with the time that key is destroyed; one line
per user with every field of the user's hash (values base64; each key version re-wrapped from the master
key to the backup key); a trailer with the user count and the SHA-256 of everything before it, so a cut
or edited file is refused. The file is useless without the backup key, which rests only in the key store
(wrapped under the master key) and is destroyed when the retention ends: from then on the backup can
yield no key, even with the master key. A restore of an expired backup is refused.

A restore *merges* the backup into the store, one batch of users per transaction, and re-applies the
shred ledger in that same transaction, so there is no moment when a restored shredded key is in the
store:
- a key version is written only where the store has none and the version is above the store's floor
  (so keys made after the backup survive, and versions destroyed since are not brought back);
- `floor` becomes the higher of the two, a user shredded in either stays shredded (the ledger then
  reinstates whom it reinstated), `cur` the higher version that exists;
- every user the ledger names, in the backup or not, is brought in line with the ledger.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from keyservice import scripts
from keyservice.backupkeys import BackupExpired, BackupKey, BackupKeyring
from keyservice.ledger import LedgerEntry, summarize
from keyservice.wire.errors import KeyServiceError, KeyUnwrapError
from keyservice.wrapping import MasterKey
from pulseseal.files import atomic_write
from schemas.rfc3339 import format_rfc3339

FORMAT = "pulseseal-keystore-backup/v2"
_OLD_FORMAT = "pulseseal-keystore-backup/v1"
_BATCH = 200

# KEYS: user hashes; ARGV per key: n, then n (field, value) pairs from the backup. Returns the number
# of key versions written. See the module docstring for the rules.
MERGE = """
local written = 0
local a = 1
for i = 1, #KEYS do
  local k = KEYS[i]
  local n = tonumber(ARGV[a])
  a = a + 1
  local floor = tonumber(redis.call('HGET', k, 'floor') or '0')
  local bfloor, bcur, bshred = 0, 0, false
  local versions = {}
  for j = 1, n do
    local f, v = ARGV[a], ARGV[a + 1]
    a = a + 2
    if f == 'floor' then bfloor = tonumber(v)
    elseif f == 'cur' then bcur = tonumber(v)
    elseif f == 'shredded' then bshred = true
    elseif string.sub(f, 1, 2) == 'v:' then versions[#versions + 1] = {tonumber(string.sub(f, 3)), f, v}
    elseif string.sub(f, 1, 2) == 'd:' then redis.call('HSETNX', k, f, v)
    end
  end
  floor = math.max(floor, bfloor)
  for _, entry in ipairs(versions) do
    if entry[1] > floor then written = written + redis.call('HSETNX', k, entry[2], entry[3]) end
  end
  if bshred then redis.call('HSET', k, 'shredded', '1') end
  local cur = tonumber(redis.call('HGET', k, 'cur') or '0')
  if bcur > cur and redis.call('HEXISTS', k, 'v:' .. bcur) == 1 then cur = bcur end
  if redis.call('HEXISTS', k, 'shredded') == 1 or cur <= floor then
    redis.call('HDEL', k, 'cur')
  else
    redis.call('HSET', k, 'cur', cur)
  end
  if floor > 0 then redis.call('HSET', k, 'floor', floor) end
end
return written
"""


class BackupError(KeyServiceError):
    """A backup cannot be written, or a file is not a complete backup that fits this key store."""

    default_reason = "backup_error"
    title = "Backup error"


@dataclass(frozen=True, slots=True)
class BackupReport:
    """What a backup holds."""

    path: Path
    users: int
    key_versions: int
    unreadable_after: str = ""


@dataclass(frozen=True, slots=True)
class RestoreReport:
    """What a restore did: users in the backup, key versions written back, ledger re-application."""

    users: int
    key_versions_written: int
    versions_destroyed_again: int
    users_shredded_again: int


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _rewrap(
    user_id: str, fields: Mapping[str, bytes], source: MasterKey, target: MasterKey
) -> dict[str, bytes]:
    """The user's fields with every key version unwrapped from `source` and wrapped under `target`."""
    out = dict(fields)
    for name, value in fields.items():
        if name.startswith("v:"):
            version = int(name[2:])
            out[name] = target.wrap(user_id, version, source.unwrap(user_id, version, value))
    return out


async def backup_keystore(
    redis: Redis,
    master: MasterKey,
    prefix: str,
    path: Path,
    *,
    keyring: BackupKeyring,
    now: datetime | None = None,
) -> BackupReport:
    """Write every user's keys under `prefix` to `path` (mode 0600, written to a temporary file, then
    renamed, so a crash never leaves a half backup under the real name).

    Each user's hash is read atomically; users created while the backup runs may or may not be in it.

    Raises:
        BackupError: the store is not wrapped under `master`, a rewrap is in progress, Redis does not
            answer, a stored key does not open, or the file cannot be written.
    """
    moment = now or datetime.now(UTC)
    try:
        raw = await redis.hgetall(f"{prefix}meta")
        meta = {_text(k): _text(v) for k, v in raw.items()}
    except RedisError:
        raise BackupError("the key-store Redis does not answer") from None
    if meta.get("rewrap_to"):
        raise BackupError("a master-key rewrap is in progress; finish it before taking a backup")
    if meta and meta.get("mk_check") != master.check_value:
        raise BackupError("the key store is wrapped under another master key than the one configured")
    try:
        backup_key = await keyring.for_backup(moment)
    except KeyServiceError as exc:
        raise BackupError(f"no backup key: {exc.detail}") from None
    header = {
        "format": FORMAT,
        "prefix": prefix,
        "created_at": format_rfc3339(moment),
        "master_key_id": master.key_id_hex,
        "master_check": master.check_value,
        "backup_key": backup_key.key_id,
        "backup_key_check": backup_key.key.check_value,
        "unreadable_after": format_rfc3339(backup_key.unreadable_after),
    }
    digest = hashlib.sha256()
    users = versions = 0
    try:
        with atomic_write(path) as out:

            def emit(obj: Mapping[str, Any]) -> None:
                line = json.dumps(obj, separators=(",", ":"), sort_keys=True).encode() + b"\n"
                digest.update(line)
                out.write(line)

            emit(header)
            async for user_id, raw_fields in _user_hashes(redis, prefix):
                fields = _rewrap(
                    user_id, {f.decode(): v for f, v in raw_fields.items()}, master, backup_key.key
                )
                emit({"user_id": user_id, "fields": {f: _b64(v) for f, v in fields.items()}})
                users += 1
                versions += sum(1 for f in fields if f.startswith("v:"))
            out.write(
                json.dumps({"end": True, "users": users, "sha256": digest.hexdigest()}).encode() + b"\n"
            )
    except RedisError:
        raise BackupError("the key-store Redis stopped answering during the backup") from None
    except KeyUnwrapError:
        raise BackupError("a stored key does not open under the master key (tampered key store?)") from None
    except OSError as exc:
        raise BackupError(f"cannot write {path}: {exc.strerror or type(exc).__name__}") from None
    return BackupReport(path, users, versions, format_rfc3339(backup_key.unreadable_after))


async def _user_hashes(redis: Redis, prefix: str) -> AsyncIterator[tuple[str, dict[bytes, bytes]]]:
    pattern = f"{prefix}u:*"
    start = len(prefix) + 2
    names: list[bytes] = []
    async for name in redis.scan_iter(match=pattern, count=1000, _type="hash"):
        names.append(name)
        if len(names) >= 500:
            for item in await _read(redis, names, start):
                yield item
            names = []
    for item in await _read(redis, names, start):
        yield item


async def _read(redis: Redis, names: list[bytes], start: int) -> list[tuple[str, dict[bytes, bytes]]]:
    if not names:
        return []
    pipe = redis.pipeline(transaction=False)
    for name in names:
        pipe.hgetall(name)
    replies = await pipe.execute()
    return [(n[start:].decode(), fields) for n, fields in zip(names, replies, strict=True) if fields]


def read_backup(path: Path) -> tuple[dict[str, Any], list[tuple[str, dict[str, bytes]]]]:
    """Read and check a backup file: its header, and each user's fields.

    Raises:
        BackupError: unreadable, not a backup, cut short or changed (checksum), or malformed.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BackupError(f"cannot read {path}: {exc.strerror or type(exc).__name__}") from None
    lines = data.splitlines(keepends=True)
    try:
        header = json.loads(lines[0])
        trailer = json.loads(lines[-1])
        body = lines[1:-1]
        if header.get("format") == _OLD_FORMAT:
            raise BackupError(
                f"{path} is a v1 backup (keys under the master key only, never forgetting a shred): this "
                "version restores only v2 backups; take a new backup with `pulseseal keys backup`"
            )
        if header.get("format") != FORMAT:
            raise BackupError(f"{path} is not a PulseSeal key-store backup ({FORMAT})")
        if trailer.get("end") is not True or trailer.get("users") != len(body):
            raise BackupError(f"{path} is cut short: it has no complete trailer")
        if hashlib.sha256(b"".join(lines[:-1])).hexdigest() != trailer.get("sha256"):
            raise BackupError(f"{path} does not match its checksum: it was changed or damaged")
        users = []
        for line in body:
            entry = json.loads(line)
            fields = {str(f): base64.b64decode(v, validate=True) for f, v in entry["fields"].items()}
            users.append((str(entry["user_id"]), fields))
    except BackupError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError, IndexError):
        raise BackupError(f"{path} is not a readable key-store backup") from None
    return header, users


async def _backup_key(
    keyring: BackupKeyring, path: Path, header: Mapping[str, Any], now: datetime
) -> BackupKey:
    try:
        key = await keyring.for_restore(str(header.get("backup_key")), now)
    except BackupExpired as exc:
        raise BackupExpired(f"{path} has expired and can never be restored: {exc.detail}") from None
    except KeyServiceError as exc:
        raise BackupError(exc.detail) from None
    if key.key.check_value != header.get("backup_key_check"):
        raise BackupError(f"{path} does not match the backup key it names (another key store's backup?)")
    return key


async def restore_keystore(
    redis: Redis,
    master: MasterKey,
    prefix: str,
    path: Path,
    ledger: Sequence[LedgerEntry],
    *,
    keyring: BackupKeyring,
    now: datetime | None = None,
) -> RestoreReport:
    """Merge a backup into the key store under `prefix` and re-apply the shred ledger with it.

    Safe to run again (a second run writes nothing new) and safe next to a running key service.

    Raises:
        BackupExpired: the backup's retention is over (its backup key is destroyed).
        BackupError: the file is not a good backup, was made under another master key, or the store
            is wrapped under another master key or mid-rewrap; or Redis does not answer.
    """
    header, users = read_backup(path)
    if header.get("master_check") != master.check_value:
        raise BackupError(
            f"{path} was made under master key {header.get('master_key_id')}, not the configured "
            f"{master.key_id_hex}: restore with that master key"
        )
    backup_key = await _backup_key(keyring, path, header, now or datetime.now(UTC))
    try:
        users = [(u, _rewrap(u, fields, backup_key.key, master)) for u, fields in users]
    except (KeyUnwrapError, ValueError):
        raise BackupError(f"{path}: a key in it does not open under its backup key (changed?)") from None
    merge = redis.register_script(MERGE)
    reapply = redis.register_script(scripts.REAPPLY)
    floors = summarize(ledger)
    meta_key = f"{prefix}meta"
    written = destroyed = reshredded = 0
    try:
        meta = {_text(k): _text(v) for k, v in (await redis.hgetall(meta_key)).items()}
        if meta.get("rewrap_to"):
            raise BackupError("a master-key rewrap is in progress on the key store; finish it first")
        if meta and meta.get("mk_check") != master.check_value:
            raise BackupError("the key store is wrapped under another master key than the backup")
        await redis.hsetnx(meta_key, "mk_id", master.key_id_hex)
        await redis.hsetnx(meta_key, "mk_check", master.check_value)
        named = {u for u, _ in users}
        batches: list[list[tuple[str, dict[str, bytes]]]] = list(_chunks(users))
        batches += [[(u, {})] for u in floors if u not in named]
        for batch in batches:
            pipe = redis.pipeline(transaction=True)
            keys = [f"{prefix}u:{u}" for u, _ in batch]
            args: list[Any] = []
            for _, fields in batch:
                args.append(len(fields))
                for name, value in fields.items():
                    args += [name, value]
            await merge(keys=keys, args=args, client=pipe)
            in_ledger = [u for u, _ in batch if u in floors]
            if in_ledger:
                ledger_args: list[Any] = []
                for u in in_ledger:
                    floor = floors[u]
                    ledger_args += [floor.max_destroyed, 1 if floor.shredded else 0, floor.reinstated_version]
                await reapply(keys=[f"{prefix}u:{u}" for u in in_ledger], args=ledger_args, client=pipe)
            replies = await pipe.execute()
            written += int(replies[0])
            if in_ledger:
                destroyed += int(replies[1][0])
                reshredded += int(replies[1][1])
    except RedisError:
        raise BackupError("the key-store Redis does not answer (the restore can be run again)") from None
    return RestoreReport(len(users), written, destroyed, reshredded)


def _chunks(users: list[tuple[str, dict[str, bytes]]]) -> Iterator[list[tuple[str, dict[str, bytes]]]]:
    for start in range(0, len(users), _BATCH):
        yield users[start : start + _BATCH]
