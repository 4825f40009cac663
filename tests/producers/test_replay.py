"""Replay's core on the real MongoDB-compatible server, with an in-memory key source (the real key service is
driven by tests/pulseseal/test_cli_replay.py): exact bytes in exact order, the range to the microsecond,
tampered and swapped documents, destroyed keys, keys expiring mid-chunk, and a report even on failure."""

from __future__ import annotations

import itertools
import random
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from pymongo.asynchronous.collection import AsyncCollection

from keyservice.client import DecryptKeys
from producers.replay import (
    ReplaySummary,
    TimeRange,
    chunks,
    find_sealed,
    printable_id,
    replay_user,
)
from producers.replay_output import FileOutput
from pulseseal import mongo
from pulseseal.envelope import DataKey, seal
from pulseseal.ferretdb_sql import PostgresTarget
from schemas import canonical_json, validate_event
from tests.consumers.helpers import fixed_key_material
from tests.factories import valid_event

Ref = tuple[str, int]
BASE = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TYPES = ("heart_rate", "steps", "spo2", "sleep", "migraine_attack", "medication")


class FakeKeys:
    """Key versions of one user as the key service would answer them; records every request and report."""

    def __init__(
        self,
        user_id: str,
        live: Iterable[int] = (1,),
        shredded: dict[int, str | None] | None = None,
        *,
        ttl_s: float | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.user_id = user_id
        self.live = set(live)
        self.shredded = shredded or {}
        self.ttl_s = ttl_s
        self.clock = clock
        self.requests: list[list[Ref]] = []
        self.reports: list[dict[str, Any]] = []

    def key(self, version: int) -> DataKey:
        material = fixed_key_material(self.user_id, version)
        if self.clock is None:
            return DataKey(self.user_id, version, material)
        expires_at = None if self.ttl_s is None else self.clock() + self.ttl_s
        return DataKey(self.user_id, version, material, expires_at=expires_at, clock=self.clock)

    async def decrypt_keys(self, refs: Iterable[Ref], *, purpose: str) -> DecryptKeys:
        assert purpose == "test replay"
        wanted = list(refs)
        self.requests.append(wanted)
        keys, missing, dates = {}, {}, {}
        for user_id, version in wanted:
            if user_id == self.user_id and version in self.live:
                keys[(user_id, version)] = self.key(version)
            elif user_id == self.user_id and version in self.shredded:
                missing[(user_id, version)] = "shredded"
                date = self.shredded[version]
                if date is not None:
                    dates[(user_id, version)] = date
            else:
                missing[(user_id, version)] = "unknown"
        return DecryptKeys(keys, missing, dates)

    async def report_replay(
        self, user_id: str, *, purpose: str, opened: int, failed: int, unreadable: int
    ) -> object:
        self.reports.append(
            {
                "user_id": user_id,
                "purpose": purpose,
                "opened": opened,
                "failed": failed,
                "unreadable": unreadable,
            }
        )
        return None


def events_at(user_id: str, times: Iterable[datetime], rng: random.Random) -> list[dict[str, Any]]:
    return [
        valid_event(
            rng.choice(TYPES),
            event_id=str(uuid.uuid4()),  # random: the session's database is shared by every test
            user_id=user_id,
            occurred_at=moment.isoformat(),
        )
        for moment in times
    ]


def sealed(event: dict[str, Any], keys: FakeKeys, version: int = 1) -> dict[str, Any]:
    return seal(
        validate_event(event), DataKey(keys.user_id, version, fixed_key_material(keys.user_id, version))
    )


def canonical(events: Iterable[dict[str, Any]]) -> bytes:
    """What replay must write: canonical lines by exact instant, then event id."""
    parsed = sorted((validate_event(e) for e in events), key=lambda e: (e.occurred_at, e.event_id))
    return b"".join(canonical_json(e) + b"\n" for e in parsed)


@pytest.fixture
async def collection(
    mongo_url: str, mongo_db: str, ferretdb_postgresql: PostgresTarget | None
) -> AsyncIterator[AsyncCollection[dict[str, Any]]]:
    """`sealed_events` of this session's database (each test uses users of its own)."""
    client = mongo.connect(mongo_url)
    sealed_events = mongo.sealed_events(client, mongo_db)
    await mongo.ensure_indexes(sealed_events, postgresql=ferretdb_postgresql)
    yield sealed_events
    await client.close()


@pytest.fixture
def user() -> str:
    return f"replay-{uuid.uuid4().hex[:12]}"


async def store(collection: AsyncCollection[dict[str, Any]], documents: list[dict[str, Any]]) -> None:
    shuffled = list(documents)
    random.Random(5).shuffle(shuffled)  # insertion order must not matter
    await collection.insert_many(shuffled)


async def run(
    collection: AsyncCollection[dict[str, Any]],
    keys: FakeKeys,
    window: TimeRange | None = None,
    *,
    chunk_size: int = 500,
) -> tuple[bytes, ReplaySummary, list[tuple[str, str]]]:
    out, failed = bytearray(), []
    window = window or TimeRange()
    summary = await replay_user(
        find_sealed(collection, keys.user_id, window),
        keys,
        out.extend,
        user_id=keys.user_id,
        purpose="test replay",
        window=window,
        on_failed=lambda doc_id, why: failed.append((doc_id, why)),
        chunk_size=chunk_size,
    )
    return bytes(out), summary, failed


# --- order, bytes, chunks ---


@pytest.mark.integration
async def test_replay_writes_the_canonical_events_in_exact_order(
    collection: AsyncCollection[dict[str, Any]], user: str
) -> None:
    rng = random.Random(1)
    times = [BASE + timedelta(microseconds=rng.randrange(10**10)) for _ in range(1000)]
    same_ms = [BASE + timedelta(milliseconds=7, microseconds=rng.randrange(1000)) for _ in range(150)]
    exact_ties = [BASE + timedelta(seconds=3)] * 40  # ordered by event_id
    offsets = [
        (BASE + timedelta(hours=h)).astimezone(timezone(timedelta(hours=5, minutes=30))) for h in range(9)
    ]
    events = events_at(user, times + same_ms + exact_ties + offsets, rng)
    keys = FakeKeys(user, live=(1, 2))
    await store(collection, [sealed(e, keys, version=1 + n % 2) for n, e in enumerate(events)])

    out, summary, failed = await run(collection, keys, chunk_size=100)

    assert out == canonical(events)
    assert (summary.opened, summary.failed, summary.unreadable, failed) == (len(events), 0, 0, [])
    # One key request per chunk, each naming the versions it needs once; the client's cache saves the rest.
    assert 11 <= len(keys.requests) <= 13
    assert all(request == [(user, 1), (user, 2)] for request in keys.requests)
    assert keys.reports == [
        {"user_id": user, "purpose": "test replay", "opened": len(events), "failed": 0, "unreadable": 0}
    ]


async def test_chunks_never_split_a_stored_millisecond() -> None:
    async def documents() -> AsyncIterator[dict[str, Any]]:
        for n in range(30):
            yield {"_id": str(n), "occurred_at": BASE + timedelta(milliseconds=n // 7)}

    sizes = [len(chunk) async for chunk in chunks(documents(), 5)]
    assert sizes == [7, 7, 7, 7, 2]


@pytest.mark.integration
async def test_the_range_is_since_inclusive_until_exclusive_to_the_microsecond(
    collection: AsyncCollection[dict[str, Any]], user: str
) -> None:
    since = BASE + timedelta(microseconds=400)
    until = BASE + timedelta(seconds=1, microseconds=700)
    us = timedelta(microseconds=1)
    times = [since - us, since, since + us, until - us, until, until + us, BASE - timedelta(days=1)]
    events = events_at(user, times, random.Random(2))
    keys = FakeKeys(user)
    await store(collection, [sealed(e, keys) for e in events])
    # Given with another offset: the range compares instants.
    window = TimeRange(since.astimezone(timezone(timedelta(hours=-5))), until)

    out, summary, _ = await run(collection, keys, window)

    assert out == canonical(events[1:4])
    assert summary.opened == 3
    assert keys.reports[0]["opened"] == 3


def test_a_time_range_must_be_ordered_and_have_offsets() -> None:
    with pytest.raises(ValueError, match="before"):
        TimeRange(BASE, BASE)
    with pytest.raises(ValueError, match="before"):
        TimeRange(BASE + timedelta(seconds=1), BASE)
    with pytest.raises(ValueError, match="offset"):
        TimeRange(datetime(2026, 1, 1), None)  # naive on purpose
    assert TimeRange(None, BASE).contains(BASE - timedelta(microseconds=1))


# --- documents that do not open ---


@pytest.mark.integration
async def test_tampered_and_swapped_documents_are_reported_and_the_rest_written(
    collection: AsyncCollection[dict[str, Any]], user: str
) -> None:
    events = events_at(user, [BASE + timedelta(minutes=n) for n in range(40)], random.Random(3))
    keys = FakeKeys(user)
    documents = [sealed(e, keys) for e in events]
    flipped, swap_a, swap_b, moved, unknown, text_version, huge_version = documents[3:10]
    flipped["ciphertext"] = flipped["ciphertext"][:-1] + bytes([flipped["ciphertext"][-1] ^ 1])
    swap_a["ciphertext"], swap_b["ciphertext"] = swap_b["ciphertext"], swap_a["ciphertext"]
    swap_a["nonce"], swap_b["nonce"] = swap_b["nonce"], swap_a["nonce"]
    moved["occurred_at"] += timedelta(milliseconds=1)
    unknown["key_version"] = 7
    text_version["key_version"] = "1"
    huge_version["key_version"] = 2**40
    await store(collection, documents)

    out, summary, failed = await run(collection, keys, chunk_size=10)

    assert out == canonical(events[:3] + events[10:])
    assert sorted(failed) == sorted(
        [(d["_id"], "integrity") for d in (flipped, swap_a, swap_b, moved, text_version, huge_version)]
        + [(unknown["_id"], "unknown key version")]
    )
    assert (summary.opened, summary.failed, summary.unreadable) == (33, 7, 0)
    # Versions no key service would accept are never asked for; the unknown one is asked for once.
    asked = [ref for request in keys.requests for ref in request]
    assert set(asked) == {(user, 1), (user, 7)}
    assert asked.count((user, 7)) == 1
    assert keys.reports[0]["failed"] == 7


@pytest.mark.integration
async def test_destroyed_keys_make_records_unreadable_with_the_date(
    collection: AsyncCollection[dict[str, Any]], user: str
) -> None:
    events = events_at(user, [BASE + timedelta(minutes=n) for n in range(60)], random.Random(4))
    keys = FakeKeys(user, live=(3,), shredded={1: "2026-03-02T09:15:00.000Z", 2: None})
    await store(collection, [sealed(e, keys, version=1 + n // 20) for n, e in enumerate(events)])

    out, summary, failed = await run(collection, keys, chunk_size=8)

    assert out == canonical(events[40:])
    assert failed == []
    assert (summary.opened, summary.unreadable) == (20, 40)
    assert summary.destroyed == {"2026-03-02T09:15:00.000Z": 20, None: 20}
    asked = [ref for request in keys.requests for ref in request]
    assert (asked.count((user, 1)), asked.count((user, 2))) == (1, 1)  # not once per chunk
    assert keys.reports[0] == {
        "user_id": user,
        "purpose": "test replay",
        "opened": 20,
        "failed": 0,
        "unreadable": 40,
    }


@pytest.mark.integration
async def test_a_key_that_expires_mid_chunk_is_fetched_again(
    collection: AsyncCollection[dict[str, Any]], user: str
) -> None:
    events = events_at(user, [BASE + timedelta(seconds=n) for n in range(30)], random.Random(5))
    ticks = itertools.count()
    keys = FakeKeys(user, ttl_s=4, clock=lambda: float(next(ticks)))  # every use of the clock is a second
    await store(collection, [sealed(e, keys) for e in events])

    out, summary, _ = await run(collection, keys)

    assert out == canonical(events)
    assert summary.opened == 30
    assert len(keys.requests) > 5


@pytest.mark.integration
async def test_a_replay_that_fails_part_way_still_reports_what_it_opened(
    collection: AsyncCollection[dict[str, Any]], user: str
) -> None:
    events = events_at(user, [BASE + timedelta(seconds=n) for n in range(25)], random.Random(6))
    keys = FakeKeys(user)
    await store(collection, [sealed(e, keys) for e in events])
    written: list[bytes] = []

    def write(data: bytes) -> None:
        if written:
            raise OSError(28, "No space left on device")
        written.append(data)

    with pytest.raises(OSError, match="No space"):
        await replay_user(
            find_sealed(collection, user, TimeRange()),
            keys,
            write,
            user_id=user,
            purpose="test replay",
            window=TimeRange(),
            on_failed=lambda doc_id, why: None,
            chunk_size=10,
        )
    assert written == [canonical(events[:10])]
    assert keys.reports[0]["opened"] == 10


async def test_documents_of_another_user_fail_to_open(user: str) -> None:
    keys = FakeKeys(user)
    event = events_at(user, [BASE], random.Random(7))[0]
    document = {**sealed(event, keys), "user_id": "someone-else"}

    async def documents() -> AsyncIterator[dict[str, Any]]:
        yield document

    out, failed = bytearray(), []
    summary = await replay_user(
        documents(),
        keys,
        out.extend,
        user_id=user,
        purpose="test replay",
        window=TimeRange(),
        on_failed=lambda doc_id, why: failed.append((doc_id, why)),
    )
    assert (bytes(out), summary.failed, failed) == (b"", 1, [(event["event_id"], "integrity")])
    assert keys.requests == []


def test_ids_are_printed_on_one_line() -> None:
    assert printable_id("0b6f8d3e-1c2a-4b5e-9f00-0123456789ab") == "0b6f8d3e-1c2a-4b5e-9f00-0123456789ab"
    assert printable_id("evil\nreplay: forged line") == "'evil\\nreplay: forged line'"
    assert printable_id(42) == "42"
    assert printable_id(None) == "None"
    assert len(printable_id("x" * 5000)) == 200


# --- the --out file ---


def test_an_out_file_appears_whole_and_private(tmp_path: Path) -> None:
    target = tmp_path / "replay.ndjson"
    output = FileOutput(target)
    output.write(b'{"a":1}\n')
    assert not target.exists()
    output.write(b'{"b":2}\n')
    output.commit()
    assert target.read_bytes() == b'{"a":1}\n{"b":2}\n'
    assert target.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["replay.ndjson"]


def test_a_discarded_out_file_leaves_the_old_one(tmp_path: Path) -> None:
    target = tmp_path / "replay.ndjson"
    target.write_bytes(b"previous\n")
    output = FileOutput(target)
    output.write(b"half a replay\n")
    output.discard()
    assert target.read_bytes() == b"previous\n"
    assert [p.name for p in tmp_path.iterdir()] == ["replay.ndjson"]
