"""Audit replay (docs/contract.md §8, `pulseseal replay`): one user's sealed documents, opened in `occurred_at`
order and written back as the events that were ingested, one canonical JSON line each.

The documents come off a MongoDB cursor sorted by `occurred_at` (the `{user_id, occurred_at}` index) and
are handled a chunk at a time: one `decrypt_keys` for the key versions the chunk needs (the client keeps
each key no longer than its TTL), every document opened, the chunk's lines written, the chunk dropped. So
memory stays flat however many records the user has; all that is remembered across chunks is the few key
versions that could not be had (destroyed or unknown) and the counts. A document that fails to open is
reported by `_id` and the replay goes on. When it ends, or fails part-way, its outcome goes to the key
service's audit log with its purpose.

Order: MongoDB dates have millisecond resolution and events keep microseconds, so a chunk only ever ends
where the stored millisecond changes, and each chunk's events are sorted by their exact instant, then
`event_id`: the same range always replays to the same bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.cursor import AsyncCursor

from keyservice.client import DecryptKeys
from keyservice.wire.errors import KeyServiceError
from keyservice.wire.models import MissingReason
from pulseseal.envelope import (
    MAX_KEY_VERSION,
    DataKey,
    IntegrityError,
    KeyExpired,
    from_millis,
    open_sealed,
    to_millis,
)
from schemas import HealthEvent, canonical_json

CHUNK_DOCUMENTS = 500
REPORT_TIMEOUT_S = 10.0  # how long a replay that failed part-way still tries to record its outcome

Ref = tuple[str, int]
Document = Mapping[str, Any]


class ReplayKeys(Protocol):
    """What replay needs of the key service (`keyservice.client.KeyServiceClient` with `keys:decrypt`)."""

    async def decrypt_keys(self, refs: Iterable[Ref], *, purpose: str) -> DecryptKeys:
        """The key versions asked for, and the missing ones with why."""
        ...

    async def report_replay(
        self, user_id: str, *, purpose: str, opened: int, failed: int, unreadable: int
    ) -> object:
        """Write the replay's outcome to the audit log."""
        ...


@dataclass(frozen=True, slots=True)
class TimeRange:
    """`since ≤ occurred_at < until`, compared as instants; an end that is None is open.

    Raises:
        ValueError: a naive time, or `since` not before `until`.
    """

    since: datetime | None = None
    until: datetime | None = None

    def __post_init__(self) -> None:
        if any(t is not None and t.tzinfo is None for t in (self.since, self.until)):
            raise ValueError("replay times need an offset")
        if self.since is not None and self.until is not None and not self.since < self.until:
            raise ValueError("since must be before until")

    def contains(self, moment: datetime) -> bool:
        """Whether an event at `moment` is in the range."""
        return (self.since is None or self.since <= moment) and (self.until is None or moment < self.until)

    def stored_bounds(self) -> dict[str, datetime]:
        """The range on stored `occurred_at` (whole milliseconds), widened to every millisecond that may
        hold an event of the range; `contains` then decides on the event's exact time."""
        bounds = {}
        if self.since is not None:
            bounds["$gte"] = from_millis(to_millis(self.since))
        if self.until is not None:
            floor = to_millis(self.until)
            bounds["$lt"] = from_millis(floor if from_millis(floor) == self.until else floor + 1)
        return bounds


@dataclass(slots=True)
class ReplaySummary:
    """What a replay did: records opened (written), failed to open, and unreadable because their keys were
    destroyed, by the time they were destroyed (None where the key service has no date)."""

    opened: int = 0
    failed: int = 0
    unreadable: int = 0
    destroyed: Counter[str | None] = field(default_factory=Counter)

    @property
    def records(self) -> int:
        """Every record of the range that the replay met."""
        return self.opened + self.failed + self.unreadable


def find_sealed(
    collection: AsyncCollection[dict[str, Any]], user_id: str, window: TimeRange
) -> AsyncCursor[dict[str, Any]]:
    """A cursor over the user's sealed documents in the range, by stored `occurred_at`, fetched in batches."""
    query: dict[str, Any] = {"user_id": user_id}
    bounds = window.stored_bounds()
    if bounds:
        query["occurred_at"] = bounds
    return collection.find(query, batch_size=CHUNK_DOCUMENTS).sort("occurred_at", ASCENDING)


async def chunks(documents: AsyncIterable[Document], size: int) -> AsyncIterator[list[Document]]:
    """Consecutive documents, about `size` at a time, never splitting one stored millisecond."""
    chunk: list[Document] = []
    async for document in documents:
        if len(chunk) >= size and document.get("occurred_at") != chunk[-1].get("occurred_at"):
            yield chunk
            chunk = []
        chunk.append(document)
    if chunk:
        yield chunk


async def replay_user(
    documents: AsyncIterable[Document],
    keys: ReplayKeys,
    write: Callable[[bytes], object],
    *,
    user_id: str,
    purpose: str,
    window: TimeRange,
    on_failed: Callable[[str, str], None],
    chunk_size: int = CHUNK_DOCUMENTS,
) -> ReplaySummary:
    """Open one user's sealed documents, in order, and write each event's canonical JSON line.

    Args:
        documents: The user's sealed documents by stored `occurred_at` (`find_sealed`).
        keys: The key service, as a caller with `keys:decrypt`.
        write: Takes the NDJSON bytes of each chunk.
        user_id: The user replayed; a document of anyone else fails to open.
        purpose: Why; sent with every key request and with the final report.
        window: The time range; events outside it are skipped.
        on_failed: Called with a document's `_id` (printable) and why (`integrity`, `unknown key
            version`) for every document that fails to open.
        chunk_size: Documents per key request, about.

    Raises:
        KeyServiceError: the key service refused a request or cannot be reached.
        Whatever `documents` or `write` raise. Before anything propagates, the outcome so far is reported
        to the audit log if the key service answers within `REPORT_TIMEOUT_S`.
    """
    run = _Replay(keys, write, user_id, purpose, window, on_failed)
    try:
        async for chunk in chunks(documents, chunk_size):
            await run.replay_chunk(chunk)
    except BaseException:
        # Best effort: the keys already granted were audited with the purpose; this adds the counts.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(run.report(), REPORT_TIMEOUT_S)
        raise
    await run.report()
    return run.summary


class _Replay:
    def __init__(
        self,
        keys: ReplayKeys,
        write: Callable[[bytes], object],
        user_id: str,
        purpose: str,
        window: TimeRange,
        on_failed: Callable[[str, str], None],
    ) -> None:
        self._keys = keys
        self._write = write
        self._user_id = user_id
        self._purpose = purpose
        self._window = window
        self._on_failed = on_failed
        # Versions that cannot be had, with (reason, destroyed at): asked for once, not once per chunk.
        self._unavailable: dict[Ref, tuple[str, str | None]] = {}
        self.summary = ReplaySummary()

    async def replay_chunk(self, documents: list[Document]) -> None:
        refs = {ref for d in documents if (ref := self._ref(d)) is not None} - self._unavailable.keys()
        held = await self._fetch(refs) if refs else {}
        lines: list[tuple[datetime, str, bytes]] = []
        for document in documents:
            event = await self._open(document, held)
            if event is not None and self._window.contains(event.occurred_at):
                lines.append((event.occurred_at, event.event_id, canonical_json(event) + b"\n"))
        # Keys are dropped with `held` at the end of the chunk (the client's cache forgets them at their TTL).
        lines.sort(key=lambda line: (line[0], line[1]))
        if lines:
            self._write(b"".join(line for _, _, line in lines))
            self.summary.opened += len(lines)

    async def report(self) -> None:
        await self._keys.report_replay(
            self._user_id,
            purpose=self._purpose,
            opened=self.summary.opened,
            failed=self.summary.failed,
            unreadable=self.summary.unreadable,
        )

    def _ref(self, document: Document) -> Ref | None:
        # Anything the key service would refuse (and so fail the whole request) is a document that
        # cannot be genuine: it fails to open on its own, without asking for a key.
        version = document.get("key_version")
        if (
            document.get("user_id") != self._user_id
            or not isinstance(version, int)
            or isinstance(version, bool)
            or not 1 <= version <= MAX_KEY_VERSION
        ):
            return None
        return (self._user_id, version)

    async def _fetch(self, refs: Iterable[Ref]) -> dict[Ref, DataKey]:
        grant = await self._keys.decrypt_keys(sorted(refs), purpose=self._purpose)
        for ref, reason in grant.missing.items():
            self._unavailable[ref] = (reason, grant.destroyed_at.get(ref))
        return dict(grant.keys)

    async def _open(self, document: Document, held: dict[Ref, DataKey]) -> HealthEvent | None:
        ref = self._ref(document)
        if ref is None:
            self._failed(document, "integrity")
            return None
        for _ in range(3):
            if ref in self._unavailable:
                self._unreadable(document, ref)
                return None
            key = held.get(ref)
            if key is None:  # the client answers every ref; this only guards against a broken answer
                self._unavailable[ref] = (MissingReason.UNKNOWN, None)
                continue
            try:
                return open_sealed(document, key)
            except IntegrityError:
                self._failed(document, "integrity")
                return None
            except KeyExpired:
                # The key reached its TTL between the fetch and this document: fetch it again.
                del held[ref]
                held.update(await self._fetch([ref]))
        raise KeyServiceError("data keys kept expiring before they could be used; check the clock")

    def _unreadable(self, document: Document, ref: Ref) -> None:
        reason, destroyed_at = self._unavailable[ref]
        if reason == MissingReason.SHREDDED:
            self.summary.unreadable += 1
            self.summary.destroyed[destroyed_at] += 1
        else:
            # A version that never existed cannot have sealed this document: its clear fields were changed.
            self._failed(document, "unknown key version")

    def _failed(self, document: Document, why: str) -> None:
        self.summary.failed += 1
        self._on_failed(printable_id(document.get("_id")), why)


def printable_id(value: object) -> str:
    """A document's `_id` fit for one line of stderr: escaped if it is not a short printable string."""
    if isinstance(value, str) and value.isprintable() and 0 < len(value) <= 200:
        return value
    return ascii(value)[:200]
