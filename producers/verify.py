"""Checking sealed documents against the signed batch manifests (docs/replay.md).

Three questions, each answered by `_id`: is every document a manifest lists present and unchanged
(`missing`, `altered`, `rolled back` when it is an older copy a manifest once listed), is every stored
document listed (`unlisted`), and is every manifest chain whole (each manifest's signature, sequence
numbers without a gap, each link naming the hash of the manifest before it)?

`ChainWalk` checks chains from manifest headers fed in chain and sequence order. `verify_store` checks
the whole store (`pulseseal verify`) in bounded memory: documents are split into partitions by a hash of
their `_id`, and each partition is one pass over the manifests (collecting that partition's listings) and
one over the documents. The user-level check that `pulseseal replay` runs is `producers/completeness.py`.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection

from pulseseal.manifest import (
    Header,
    ManifestInvalid,
    document_hash,
    verify_header,
    verify_manifest,
)

PARTITION_DOCUMENTS = 250_000  # listings held in memory at once by `verify_store`, about
BATCH = 500
HEADER_ONLY = {"users": False, "parts": False}

Report = Callable[["Finding"], None]
FetchHeader = Callable[[str], Awaitable[Mapping[str, Any] | None]]


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem: `kind` is missing, altered, rolled back, unlisted, manifest or chain."""

    kind: str
    subject: str
    detail: str

    def line(self) -> str:
        """The finding as one line (no event data: ids, manifest ids and what is wrong)."""
        if self.kind == "manifest":
            return f"{self.subject} is invalid: {self.detail}"
        if self.kind == "chain":
            return f"{self.subject} breaks its chain: {self.detail}"
        return f"{self.subject} {self.kind} ({self.detail})"


@dataclass(slots=True)
class Expected:
    """What the newest manifest listing a document says it is, and the hashes older manifests listed."""

    digest: bytes
    manifest_id: str
    order: tuple[int, str]
    older: frozenset[bytes] = frozenset()  # almost always empty: one shared object, not a set per record

    def add(self, digest: bytes, manifest_id: str, order: tuple[int, str]) -> None:
        """Take another listing of the same document; the newest (by manifest time, then id) wins."""
        if order > self.order:
            if digest != self.digest:
                self.older |= {self.digest}
            self.digest, self.manifest_id, self.order = digest, manifest_id, order
        elif digest != self.digest:
            self.older |= {digest}

    def compare(self, document: Mapping[str, Any]) -> Finding | None:
        """None when `document` is what the newest listing says; else what is wrong with it."""
        digest = document_hash(document)
        if digest == self.digest:
            return None
        subject = str(document.get("_id"))
        if digest in self.older:
            return Finding("rolled back", subject, f"an older copy than manifest {self.manifest_id} lists")
        return Finding("altered", subject, f"not the document manifest {self.manifest_id} lists")


def listing_order(header: Header) -> tuple[int, str]:
    """The order of manifests for "the newest listing wins": creation time, then `_id`."""
    return (header.created_ms, header.manifest_id)


class ChainWalk:
    """Check manifest chains from their headers, given chain by chain in sequence order.

    Args:
        public_keys: Signer name → Ed25519 public key.
        fetch_header: Reads a manifest by `_id` (header fields suffice), to check the link of the first
            manifest walked in a chain; None when absent.
        report: Called with every problem found.
        from_start: True when every chain is walked from its first manifest (a chain whose first stored
            manifest is not sequence 1 then has a gap); False when walking from a point in time.
    """

    def __init__(
        self,
        public_keys: Mapping[str, Ed25519PublicKey],
        fetch_header: FetchHeader,
        report: Report,
        *,
        from_start: bool,
    ) -> None:
        self._keys = public_keys
        self._fetch = fetch_header
        self._report = report
        self._from_start = from_start
        self._last: Header | None = None
        self._last_digest = b""
        self.chains = 0
        self.manifests = 0

    async def add(self, document: Mapping[str, Any]) -> Header | None:
        """Check one manifest's signature and its link to the one before; None if its signature fails."""
        try:
            header = verify_header(document, self._keys)
        except ManifestInvalid as exc:
            self._report(Finding("manifest", f"manifest {document.get('_id')}", str(exc)))
            return None
        self.manifests += 1
        last = self._last
        if last is None or last.chain != header.chain:
            self.chains += 1
            await self._check_start(header)
        elif header.seq != last.seq + 1:
            self._gap(header, f"manifests {last.seq + 1} to {header.seq - 1} are missing")
        elif header.prev_id != last.manifest_id or header.prev != self._last_digest:
            self._gap(header, f"its link does not name manifest {last.manifest_id}")
        self._last, self._last_digest = header, header.digest()
        return header

    async def _check_start(self, header: Header) -> None:
        if header.prev_id is None:
            if header.seq != 1 or any(header.prev):
                self._gap(header, "a chain's first manifest links to nothing but is not sequence 1")
            return
        if header.seq == 1 or not self._from_start:
            # A chain's first manifest names the newest manifest its encryptor found at start; a walk
            # that starts part-way names the one before it. Either must be there, and be what it says.
            before = await self._fetch(header.prev_id)
            if before is None:
                self._gap(header, f"the manifest it links to, {header.prev_id}, is missing")
                return
            try:
                digest = verify_header(before, self._keys).digest()
            except ManifestInvalid as exc:
                self._gap(header, f"the manifest it links to, {header.prev_id}, is invalid: {exc}")
                return
            if digest != header.prev:
                self._gap(header, f"its link does not match manifest {header.prev_id}")
            return
        self._gap(header, f"manifests 1 to {header.seq - 1} of its chain are missing")

    def _gap(self, header: Header, why: str) -> None:
        self._report(Finding("chain", f"manifest {header.manifest_id}", why))


@dataclass(slots=True)
class StoreSummary:
    """What `verify_store` checked and found."""

    documents: int = 0
    manifests: int = 0
    chains: int = 0
    problems: Mapping[str, int] = field(default_factory=dict)

    def line(self) -> str:
        """The one summary line of `pulseseal verify`."""
        counts = ", ".join(f"{n} {kind}" for kind, n in sorted(self.problems.items())) or "no problems"
        return (
            f"verified {self.documents} records against {self.manifests} manifests in {self.chains} "
            f"chains: {counts}"
        )


def partition_of(doc_id: object, partitions: int) -> int:
    """Which partition a document `_id` falls in (stable, spread evenly)."""
    digest = hashlib.sha256(str(doc_id).encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") % partitions


async def verify_store(
    sealed: AsyncCollection[dict[str, Any]],
    manifests: AsyncCollection[dict[str, Any]],
    public_keys: Mapping[str, Ed25519PublicKey],
    report: Report,
    *,
    since: datetime | None = None,
    partition_documents: int = PARTITION_DOCUMENTS,
) -> StoreSummary:
    """Check every sealed document and every manifest (from `since` on: sealed or created then).

    Args:
        sealed: `sealed_events`.
        manifests: `seal_manifests`.
        public_keys: The manifest signers' public keys.
        report: Called with every problem, as it is found.
        since: Only documents sealed and manifests created at or after this time.
        partition_documents: Listings held in memory at once, about.

    Raises:
        PyMongoError: MongoDB failed.
    """
    summary = StoreSummary()
    problems: dict[str, int] = {}

    def found(finding: Finding) -> None:
        problems[finding.kind] = problems.get(finding.kind, 0) + 1
        report(finding)

    time_query: dict[str, Any] = {} if since is None else {"$gte": since}
    manifest_query = {"created_at": time_query} if time_query else {}
    sealed_query = {"sealed_at": time_query} if time_query else {}
    total = await sealed.estimated_document_count()
    partitions = max(1, math.ceil(total / partition_documents))

    async def fetch_header(manifest_id: str) -> Mapping[str, Any] | None:
        return await manifests.find_one({"_id": manifest_id}, HEADER_ONLY)

    walk = ChainWalk(public_keys, fetch_header, found, from_start=since is None)
    for partition in range(partitions):
        expected: dict[str, Expected] = {}
        cursor = manifests.find(manifest_query, batch_size=50).sort("_id", ASCENDING)
        async for document in cursor:
            if partition == 0 and await walk.add(document) is None:
                continue
            try:
                verified = verify_manifest(document, public_keys)
            except ManifestInvalid as exc:
                if partition == 0:
                    found(Finding("manifest", f"manifest {document.get('_id')}", str(exc)))
                continue
            order = listing_order(verified.header)
            for listings in verified.listings.values():
                for listing in listings:
                    if partitions == 1 or partition_of(listing.doc_id, partitions) == partition:
                        known = expected.get(listing.doc_id)
                        if known is None:
                            expected[listing.doc_id] = Expected(listing.digest, verified.manifest_id, order)
                        else:
                            known.add(listing.digest, verified.manifest_id, order)
        async for document in sealed.find(sealed_query, batch_size=BATCH):
            doc_id = document.get("_id")
            if partitions > 1 and partition_of(doc_id, partitions) != partition:
                continue
            summary.documents += 1
            _check_one(document, expected, found)
        # Listed documents the pass did not meet: sealed before `since` (a redelivery listed them
        # again), or gone. One lookup each; normally there are none.
        for doc_id in sorted(expected):
            stored = await sealed.find_one({"_id": doc_id})
            if stored is None:
                manifest = expected[doc_id].manifest_id
                found(Finding("missing", doc_id, f"listed by manifest {manifest}, not in the store"))
            else:
                _check_one(stored, expected, found)
    summary.manifests, summary.chains, summary.problems = walk.manifests, walk.chains, problems
    return summary


def _check_one(document: Mapping[str, Any], expected: dict[str, Expected], report: Report) -> None:
    doc_id = document.get("_id")
    known = expected.pop(doc_id, None) if isinstance(doc_id, str) else None
    if known is None:
        report(Finding("unlisted", str(doc_id), "no manifest lists it"))
        return
    problem = known.compare(document)
    if problem is not None:
        report(problem)
