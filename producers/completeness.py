"""Completeness of one user's replay (docs/replay.md): every record the manifests list for the user and the
range is there and unchanged, every record there is listed, and the chains holding those manifests are
whole from the first manifest listing the user to their end.

    check = await UserCompleteness.load(manifests, public_keys, user_id, window, report)
    await replay_user(check.watch(find_sealed(...)), ...)      # each document is checked as it streams
    await check.finish()                                       # what was listed and never came: missing

Memory: one entry per listed record of the user in the range (the replay of one user), nothing per
record of anyone else.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection

from producers.replay import TimeRange
from producers.verify import HEADER_ONLY, ChainWalk, Expected, Finding, Report, listing_order
from pulseseal.envelope import to_millis
from pulseseal.manifest import ManifestInvalid, verify_manifest


class UserCompleteness:
    """The listings of one user in one range, checked against the documents a replay streams."""

    def __init__(self, window: TimeRange, report: Report) -> None:
        self._report = report
        bounds = window.stored_bounds()
        self._low = to_millis(bounds["$gte"]) if "$gte" in bounds else None
        self._high = to_millis(bounds["$lt"]) if "$lt" in bounds else None
        self.expected: dict[str, Expected] = {}
        self.problems = 0
        self._seen: set[tuple[str, str]] = set()

    @classmethod
    async def load(
        cls,
        manifests: AsyncCollection[dict[str, Any]],
        public_keys: Mapping[str, Ed25519PublicKey],
        user_id: str,
        window: TimeRange,
        report: Report,
    ) -> UserCompleteness:
        """Read and check every manifest that lists the user, and the chains they are in.

        Raises:
            PyMongoError: MongoDB failed.
        """
        check = cls(window, report)
        starts: dict[str, int] = {}
        async for document in manifests.find({"users": user_id}, batch_size=50):
            try:
                verified = verify_manifest(document, public_keys, users={user_id})
            except ManifestInvalid as exc:
                check.found(Finding("manifest", f"manifest {document.get('_id')}", str(exc)))
                continue
            header = verified.header
            starts[header.chain] = min(header.seq, starts.get(header.chain, header.seq))
            order = listing_order(header)
            for listing in verified.listings.get(user_id, ()):
                if check.in_range(listing.occurred_ms):
                    known = check.expected.get(listing.doc_id)
                    if known is None:
                        check.expected[listing.doc_id] = Expected(listing.digest, header.manifest_id, order)
                    else:
                        known.add(listing.digest, header.manifest_id, order)
        await check._walk_chains(manifests, public_keys, starts)
        return check

    async def _walk_chains(
        self,
        manifests: AsyncCollection[dict[str, Any]],
        public_keys: Mapping[str, Ed25519PublicKey],
        starts: Mapping[str, int],
    ) -> None:
        # From the first manifest listing the user to the chain's end: a deleted manifest that listed the
        # user's later records leaves a gap here even when none of the user's later manifests is left.
        async def fetch_header(manifest_id: str) -> Mapping[str, Any] | None:
            return await manifests.find_one({"_id": manifest_id}, HEADER_ONLY)

        walk = ChainWalk(public_keys, fetch_header, self.found, from_start=False)
        for chain in sorted(starts):
            query = {"chain": chain, "seq": {"$gte": starts[chain]}}
            async for document in manifests.find(query, HEADER_ONLY, batch_size=500).sort("seq", ASCENDING):
                await walk.add(document)

    def in_range(self, occurred_ms: int) -> bool:
        """Whether a listed record's stored `occurred_at` falls in the replayed range."""
        return (self._low is None or self._low <= occurred_ms) and (
            self._high is None or occurred_ms < self._high
        )

    def found(self, finding: Finding) -> None:
        """Count and report one problem (once: a manifest whose signature fails is met twice)."""
        if (finding.kind, finding.subject) in self._seen:
            return
        self._seen.add((finding.kind, finding.subject))
        self.problems += 1
        self._report(finding)

    def check(self, document: Mapping[str, Any]) -> None:
        """Check one streamed document of the user against its listing."""
        doc_id = document.get("_id")
        known = self.expected.pop(doc_id, None) if isinstance(doc_id, str) else None
        if known is None:
            self.found(Finding("unlisted", str(doc_id), "no manifest lists it"))
            return
        problem = known.compare(document)
        if problem is not None:
            self.found(problem)

    async def watch(self, documents: AsyncIterable[Mapping[str, Any]]) -> AsyncIterator[Mapping[str, Any]]:
        """Pass `documents` through, checking each."""
        async for document in documents:
            self.check(document)
            yield document

    def finish(self) -> None:
        """Report every listed record the stream did not bring: missing from the store."""
        for doc_id in sorted(self.expected):
            manifest = self.expected[doc_id].manifest_id
            self.found(Finding("missing", doc_id, f"listed by manifest {manifest}, not in the store"))
        self.expected.clear()
