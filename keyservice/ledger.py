"""The shred ledger: a signed, hash-chained record of every shred and reinstate, kept in the key-store
Redis beside the keys and shared by every key-service replica; re-applied on every start.

Its job is restores: a key store restored from a backup taken before a shred still holds the shredded
keys, and re-applying the ledger destroys them again before any is handed out. Being in the key-store
Redis (a list `<prefix>ledger`), it is as durable as the keys (AOF, `appendfsync always`), one for all
replicas, and a fresh replica with an empty disk knows every shred.

Each entry is one JSON line: `seq` (0, 1, ...), `prev` (SHA-256, hex, of the previous line's exact bytes;
64 zeros for the first), the event's fields, and `signature` (Ed25519, the key service's receipt key, over
`pulseseal-shred-ledger/v2\\n` + the compact, key-sorted JSON without `signature`). A changed, deleted,
inserted or reordered entry breaks a signature, a `seq` or the chain, and the service refuses to start
(or, running, to hand out keys). Appends are compare-and-set on the list's length and last line, so two
replicas never fork the chain. Entries hold user ids, versions and times, never key material.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from redis.asyncio import Redis
from redis.exceptions import RedisError

from keyservice.wire.errors import LedgerError

log = logging.getLogger(__name__)
_CONTEXT = b"pulseseal-shred-ledger/v2\n"
GENESIS = "0" * 64
_RETRIES = 50

# KEYS[1] the ledger list; ARGV expected length, expected last line ('' when empty), the new lines.
# {1, new length} appended | {0, length} someone else appended first: read the tail again.
_APPEND = """
local n = redis.call('LLEN', KEYS[1])
local last = redis.call('LINDEX', KEYS[1], -1) or ''
if n ~= tonumber(ARGV[1]) or last ~= ARGV[2] then return {0, n} end
redis.call('RPUSH', KEYS[1], unpack(ARGV, 3))
return {1, n + #ARGV - 2}
"""
# {length, last line or false}, read together.
_TAIL = """
return {redis.call('LLEN', KEYS[1]), redis.call('LINDEX', KEYS[1], -1)}
"""


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One shred (versions destroyed, highest version ever destroyed) or reinstate (new version)."""

    event: Literal["shred", "reinstate"]
    user_id: str
    at: str
    versions_destroyed: tuple[int, ...] = ()
    max_destroyed: int = 0
    version: int = 0

    def body(self) -> dict[str, Any]:
        """The event's fields."""
        if self.event == "shred":
            return {
                "event": "shred",
                "user_id": self.user_id,
                "at": self.at,
                "versions_destroyed": list(self.versions_destroyed),
                "max_destroyed": self.max_destroyed,
            }
        return {"event": "reinstate", "user_id": self.user_id, "at": self.at, "version": self.version}


@dataclass(frozen=True, slots=True)
class UserFloor:
    """What the ledger says about one user: the highest destroyed version, and whether keys are allowed."""

    max_destroyed: int
    shredded: bool
    reinstated_version: int


@dataclass(frozen=True, slots=True)
class LedgerHead:
    """Where a reader of the ledger stands: entries read, and the hash of the last one."""

    length: int = 0
    digest: str = GENESIS


def _signed(body: dict[str, Any]) -> bytes:
    return _CONTEXT + json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def digest_of(line: bytes) -> str:
    """The chain hash of one stored line."""
    return hashlib.sha256(line).hexdigest()


class ShredLedger:
    """The ledger list in the key-store Redis.

    Args:
        redis: The key-store Redis.
        prefix: The key store's prefix (the list is `<prefix>ledger`).
        signing_key: The key service's Ed25519 key; entries are verified with its public half.
    """

    def __init__(self, redis: Redis, prefix: str, signing_key: Ed25519PrivateKey) -> None:
        self._redis = redis
        self.key = f"{prefix}ledger"
        self._key = signing_key
        self._append = redis.register_script(_APPEND)
        self._tail = redis.register_script(_TAIL)
        # Appends waiting to go in together; one writer task at a time, so this process's own appends
        # never race each other (only other replicas').
        self._queue: list[tuple[LedgerEntry, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def load(self) -> list[LedgerEntry]:
        """Read and verify every entry.

        Raises:
            LedgerError: Redis does not answer, or an entry does not verify (named by its position).
        """
        entries, _ = await self.read_after(LedgerHead())
        return entries

    async def length(self) -> int:
        """How many entries the ledger has.

        Raises:
            LedgerError: Redis does not answer.
        """
        try:
            return int(await self._redis.llen(self.key))
        except RedisError:
            raise LedgerError("the shred ledger in the key store cannot be read") from None

    async def read_after(self, head: LedgerHead) -> tuple[list[LedgerEntry], LedgerHead]:
        """The entries after `head`, verified as a continuation of it, and the new head.

        Raises:
            LedgerError: Redis does not answer; an entry does not verify; or the entries do not continue
                the chain at `head` (the ledger was cut, rolled back or rewritten).
        """
        try:
            raw: list[bytes | str] = await self._redis.lrange(self.key, head.length, -1)
            lines = [line.encode() if isinstance(line, str) else line for line in raw]
        except RedisError:
            raise LedgerError("the shred ledger in the key store cannot be read") from None
        entries = []
        digest = head.digest
        for offset, line in enumerate(lines):
            entries.append(self._parse(head.length + offset, line, digest))
            digest = digest_of(line)
        return entries, LedgerHead(head.length + len(lines), digest)

    def _parse(self, seq: int, line: bytes, prev: str) -> LedgerEntry:
        where = f"shred ledger {self.key} entry {seq}"
        try:
            document = json.loads(line)
            signature = base64.b64decode(document.pop("signature"), validate=True)
            self._key.public_key().verify(signature, _signed(document))
            if document.pop("seq") != seq or document.pop("prev") != prev:
                raise LedgerError(
                    f"{where}: out of place (an entry before it was deleted, inserted or reordered)"
                )
            if document["event"] == "shred":
                return LedgerEntry(
                    "shred",
                    str(document["user_id"]),
                    str(document["at"]),
                    versions_destroyed=tuple(int(v) for v in document["versions_destroyed"]),
                    max_destroyed=int(document["max_destroyed"]),
                )
            if document["event"] == "reinstate":
                return LedgerEntry(
                    "reinstate",
                    str(document["user_id"]),
                    str(document["at"]),
                    version=int(document["version"]),
                )
        except InvalidSignature:
            raise LedgerError(
                f"{where}: signature does not verify (tampered, or another signing key)"
            ) from None
        except LedgerError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError, binascii.Error):
            raise LedgerError(f"{where}: not a ledger entry") from None
        raise LedgerError(f"{where}: unknown event")

    def _line(self, entry: LedgerEntry, seq: int, prev: str) -> bytes:
        body = {**entry.body(), "seq": seq, "prev": prev}
        signature = base64.b64encode(self._key.sign(_signed(body))).decode("ascii")
        return json.dumps({**body, "signature": signature}, sort_keys=True, separators=(",", ":")).encode()

    async def append(self, entry: LedgerEntry) -> None:
        """Append one signed entry at the end of the chain (durable once Redis answered: AOF always).

        Appends waiting at the same time in this process go in together, in one compare-and-set (group
        commit: the key store fsyncs each write, and a thousand shreds must not wait for a thousand).

        Raises:
            LedgerError: Redis does not answer, or other replicas' appends kept winning the race.
        """
        done = asyncio.get_running_loop().create_future()
        self._queue.append((entry, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_queued())
        await asyncio.shield(done)

    async def append_many(self, entries: Sequence[LedgerEntry]) -> None:
        """Append entries in order (see `append`).

        Raises:
            LedgerError: as `append`.
        """
        for entry in entries:
            await self.append(entry)

    async def _write_queued(self) -> None:
        while self._queue:
            batch, self._queue = self._queue, []
            try:
                await self._append_batch([entry for entry, _ in batch])
            except Exception as exc:  # noqa: BLE001 - handed to every waiter of this batch
                for _, done in batch:
                    done.set_exception(exc)
                    done.exception()  # retrieved: a waiter that went away must not leave a warning
            else:
                for _, done in batch:
                    done.set_result(None)

    async def _append_batch(self, entries: list[LedgerEntry]) -> None:
        try:
            for _ in range(_RETRIES):
                length, last = await self._tail(keys=[self.key], args=())
                last = last or b""
                digest = digest_of(last) if last else GENESIS
                lines = []
                for offset, entry in enumerate(entries):
                    lines.append(self._line(entry, int(length) + offset, digest))
                    digest = digest_of(lines[-1])
                appended, _ = await self._append(keys=[self.key], args=[length, last, *lines])
                if appended == 1:
                    return
        except RedisError:
            raise LedgerError("cannot append to the shred ledger: the key store does not answer") from None
        raise LedgerError("cannot append to the shred ledger: other appends kept racing; repeat the request")


def apply(floors: dict[str, UserFloor], entry: LedgerEntry) -> None:
    """Fold one more entry into `floors` (in place). Folding an entry a second time after later ones
    changes nothing their own fold would not: the floors only grow, and the last word on a user wins."""
    prev = floors.get(entry.user_id, UserFloor(0, False, 0))
    if entry.event == "shred":
        top = max([prev.max_destroyed, entry.max_destroyed, *entry.versions_destroyed])
        floors[entry.user_id] = UserFloor(top, True, prev.reinstated_version)
    else:
        floors[entry.user_id] = UserFloor(
            prev.max_destroyed, False, max(prev.reinstated_version, entry.version)
        )


def summarize(entries: Iterable[LedgerEntry]) -> dict[str, UserFloor]:
    """Fold the ledger into one `UserFloor` per user, in ledger order."""
    floors: dict[str, UserFloor] = {}
    for entry in entries:
        apply(floors, entry)
    return floors
