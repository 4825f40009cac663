"""The encryptor's batch manifests (docs/replay.md): one signed manifest document per flush.

After a flush's `insert_many` and before any of its messages is acknowledged, `ManifestWriter.record`
lists every document of the batch that is now stored — the ones this flush inserted, with the hash of the
document it wrote, and the ones that were already there (a redelivery), with the hash of the document as
stored, read back — and inserts one manifest, signed with the encryptor's own Ed25519 key, into
`seal_manifests`. So a document is listed by at least one manifest before its message is acked, whether
the flush that first wrote it lived to write its manifest or was killed in between.

Each encryptor process keeps its own chain (`chain` = signer and a random tag): sequence numbers 1, 2, ...
each naming the previous manifest's hash. Manifests are written one at a time, in sequence order, so a
crash never leaves a gap behind a stored manifest. The first manifest of a chain names the newest manifest
of the same signer found in the store at start, so a whole chain that was deleted leaves a dangling link.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError, PyMongoError

from consumers.store import InsertOutcome
from pulseseal import mongo
from pulseseal.envelope import to_millis
from pulseseal.manifest import (
    GENESIS,
    Header,
    Listing,
    document_hash,
    manifest_id,
    manifest_root,
    pack_parts,
    read_header,
    sign_header,
)

log = logging.getLogger("pulseseal.encryptor")

T = TypeVar("T")

HEADER_FIELDS = {"users": False, "parts": False}  # a projection: everything but the (large) listings


class ManifestWriter:
    """Build, sign and store one manifest per flush, chained per encryptor process.

    Args:
        manifests: `seal_manifests`, with the write concern of the sealed documents.
        sealed: `sealed_events`, to read back documents a redelivered batch found already stored.
        signing_key: The encryptor's manifest signing key.
        signer: The name replay knows the public key by (in the manifest keys file).
        clock: `created_at` of each manifest (injectable for tests).
        chain: This process's chain id (default: the signer and 64 random bits).
    """

    def __init__(
        self,
        manifests: AsyncCollection[dict[str, Any]],
        sealed: AsyncCollection[dict[str, Any]],
        signing_key: Ed25519PrivateKey,
        signer: str,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        chain: str | None = None,
    ) -> None:
        self._manifests = manifests
        self._sealed = sealed
        self._key = signing_key
        self.signer = signer
        self.chain = chain if chain is not None else f"{signer}-{os.urandom(8).hex()}"
        self._clock = clock
        self._lock = asyncio.Lock()
        self._seq = 0
        self._prev_id: str | None = None
        self._prev = GENESIS
        self._started = False

    async def start(self) -> None:
        """Create the indexes and find the newest manifest of this signer, which the chain starts from.

        Raises:
            PyMongoError: MongoDB is not answering (the encryptor retries start-up).
        """
        await self._manifests.create_index(
            [("signer", ASCENDING), ("created_at", DESCENDING)], name="signer_created_at"
        )
        # FerretDB on PostgreSQL indexes an array field as one B-tree entry of the whole array, which a
        # batch of a few hundred users overflows (PostgreSQL's 2704-byte row limit): every manifest
        # insert would then fail. There, replay finds a user's manifests without this index.
        if await mongo.ferretdb_backend(self._manifests) != "postgresql":
            await self._manifests.create_index([("users", ASCENDING)], name="users")
        newest = await self._manifests.find_one(
            {"signer": self.signer}, HEADER_FIELDS, sort=[("created_at", DESCENDING), ("_id", DESCENDING)]
        )
        if newest is not None and self._seq == 0:
            # The link is checked by replay against that manifest's own header: a wrong value here shows
            # up as a broken link, it never goes unseen.
            self._prev_id, self._prev = str(newest["_id"]), read_header(newest).digest()
        self._started = True

    async def record(self, docs: Sequence[Mapping[str, Any]], outcome: InsertOutcome) -> None:
        """List the batch's stored documents in one signed manifest; return once it is durably written.

        Retries MongoDB until it answers (the batcher cancels this at shutdown; then nothing of the batch
        is acknowledged and the redelivery lists it).
        """
        if not self._started:
            await self._retry(self.start)
        listed = [
            (doc, document_hash(doc))
            for doc in docs
            if doc["_id"] not in outcome.failed
            and doc["_id"] not in outcome.duplicate_ids
            and doc["_id"] not in outcome.conflicts  # stored for another user: not ours to list
        ]
        # Duplicates are listed as the store holds them (the insert looked them up; no `$in` here: FerretDB
        # answers that with a scan of the whole collection).
        listed += [(doc, document_hash(doc)) for doc in outcome.found]
        if not listed:
            return
        users: dict[str, list[Listing]] = {}
        for doc, digest in listed:
            users.setdefault(doc["user_id"], []).append(
                Listing(doc["_id"], to_millis(doc["occurred_at"]), digest)
            )
        order, parts, roots = pack_parts(users)
        root = manifest_root(roots)
        # One manifest at a time, in sequence order: a later one is never stored ahead of an earlier.
        async with self._lock:
            created = self._clock()
            header = Header(
                manifest_id=manifest_id(self.chain, self._seq + 1),
                chain=self.chain,
                signer=self.signer,
                seq=self._seq + 1,
                prev_id=self._prev_id,
                prev=self._prev,
                created_ms=to_millis(created),
                root=root,
                docs=len(listed),
            )
            document = {
                "_id": header.manifest_id,
                "v": 1,
                "chain": header.chain,
                "signer": header.signer,
                "seq": header.seq,
                "prev_id": header.prev_id,
                "prev": header.prev,
                "created_at": created,
                "root": root,
                "docs": header.docs,
                "users": order,
                "parts": parts,
                "sig": sign_header(header, self._key),
            }
            await self._retry(lambda: self._insert(document))
            self._seq, self._prev_id, self._prev = header.seq, header.manifest_id, header.digest()

    async def _insert(self, document: dict[str, Any]) -> None:
        # A duplicate is our own earlier attempt, which got through before its answer was lost: the
        # chain id is this process's alone.
        with contextlib.suppress(DuplicateKeyError):
            await self._manifests.insert_one(document)

    async def _retry(self, operation: Callable[[], Awaitable[T]]) -> T:
        delay = 0.1
        while True:
            try:
                return await operation()
            except PyMongoError as exc:
                log.warning("MongoDB unavailable for the manifest (%s); retrying", type(exc).__name__)
                await asyncio.sleep(random.uniform(delay / 2, delay))
                delay = min(delay * 2, 5.0)
