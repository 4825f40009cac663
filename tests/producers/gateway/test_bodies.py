"""Request bodies: size limits enforced while reading, a deadline, and parsing into events or per-item errors."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from producers.gateway.bodies import media_type, parse_body, read_body
from producers.gateway.errors import BodyTimeout, BodyTooLarge, InvalidBatch, ItemError, UnsupportedMediaType
from tests.factories import MISSING, valid_event
from tests.producers.helpers import ndjson

NOW = datetime(2026, 11, 29, tzinfo=UTC)


class Chunks:
    """A body arriving in chunks, counting how many the reader took."""

    def __init__(self, chunk: bytes, count: int, delay_s: float = 0.0) -> None:
        self.chunk, self.count, self.delay_s, self.taken = chunk, count, delay_s, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for _ in range(self.count):
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            self.taken += 1
            yield self.chunk


async def test_a_body_within_the_limit_is_read_whole() -> None:
    body = Chunks(b"x" * 1000, 5)
    assert await read_body(body, declared_length=None, limit=5000, timeout_s=5) == b"x" * 5000


async def test_a_declared_length_over_the_limit_is_refused_before_reading_a_byte() -> None:
    body = Chunks(b"x" * 1024, 2048)
    with pytest.raises(BodyTooLarge, match="1 MiB"):
        await read_body(body, declared_length=2 * 1024 * 1024, timeout_s=5)
    assert body.taken == 0


async def test_an_undeclared_body_is_cut_off_as_soon_as_it_passes_the_limit() -> None:
    body = Chunks(b"x" * 64 * 1024, 32)  # 2 MiB, chunked
    with pytest.raises(BodyTooLarge):
        await read_body(body, declared_length=None, timeout_s=5)
    assert body.taken == 17  # 16 chunks are exactly 1 MiB; the 17th is one too many, the rest never read


async def test_a_body_that_trickles_in_is_cut_off_at_the_deadline() -> None:
    body = Chunks(b"{", 100, delay_s=0.05)
    with pytest.raises(BodyTimeout, match=r"0\.2 s"):
        await read_body(body, declared_length=None, timeout_s=0.2)
    assert body.taken < 10


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, ""),
        ("application/json", "application/json"),
        ("Application/JSON; charset=utf-8", "application/json"),
        ("application/x-ndjson", "application/x-ndjson"),
        ("application/jsonl", "application/jsonl"),
    ],
)
def test_json_and_ndjson_media_types_are_understood(header: str | None, expected: str) -> None:
    assert media_type(header) == expected


@pytest.mark.parametrize("header", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"])
def test_other_media_types_are_refused(header: str) -> None:
    with pytest.raises(UnsupportedMediaType):
        media_type(header)


def test_one_object_an_array_and_ndjson_all_give_events() -> None:
    event = valid_event()
    assert [e.event_id for e in parse_body(json.dumps(event).encode(), "application/json", now=NOW)] == [
        event["event_id"]
    ]
    events = [valid_event(event_id=f"00000000-0000-4000-8000-{n:012d}") for n in range(3)]
    ids = [e["event_id"] for e in events]
    assert [e.event_id for e in parse_body(json.dumps(events).encode(), "", now=NOW)] == ids
    with_blank_lines = b"\n" + ndjson(events[:1]) + b"\n  \n" + ndjson(events[1:])
    assert [e.event_id for e in parse_body(with_blank_lines, "application/x-ndjson", now=NOW)] == ids


def test_every_problem_of_every_invalid_event_is_listed_by_index() -> None:
    events = [
        valid_event(),
        valid_event("steps", data={"count": -1, "period_s": MISSING}),
        valid_event(),
        "not an object",
    ]
    with pytest.raises(InvalidBatch) as caught:
        parse_body(json.dumps(events).encode(), "application/json", now=NOW)
    assert caught.value.errors == (
        ItemError(1, "data.count", "must be ≥ 0"),
        ItemError(1, "data.period_s", "is required"),
        ItemError(3, None, "must be a JSON object"),
    )


def test_ndjson_errors_are_indexed_by_event_position() -> None:
    body = ndjson([valid_event()]) + b"\n" + b"{broken\n"
    with pytest.raises(InvalidBatch) as caught:
        parse_body(body, "application/x-ndjson", now=NOW)
    assert caught.value.errors == (ItemError(1, None, "is not valid JSON"),)


def test_an_event_too_far_in_the_future_is_refused_by_the_clock_given() -> None:
    event = valid_event(occurred_at="2026-11-30T01:00:00Z")
    with pytest.raises(InvalidBatch) as caught:
        parse_body(json.dumps(event).encode(), "application/json", now=NOW)
    assert caught.value.errors[0].field == "occurred_at"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "empty"),
        (b"  \n ", "empty"),
        (b"[]", "empty"),
        (b"not json", "not valid JSON"),
        (b'{"a": 1} {"b": 2}', "not valid JSON"),
        (b"42", "JSON object or an array"),
        (b'"text"', "JSON object or an array"),
    ],
)
def test_bodies_that_hold_no_events_are_refused_as_a_whole(body: bytes, message: str) -> None:
    with pytest.raises(InvalidBatch) as caught:
        parse_body(body, "application/json", now=NOW)
    [error] = caught.value.errors
    assert error.index is None
    assert message in error.message


@pytest.mark.parametrize("kind", ["application/json", "application/x-ndjson"])
def test_more_than_1000_events_is_too_large(kind: str) -> None:
    events = [valid_event()] * 1001
    body = json.dumps(events).encode() if kind == "application/json" else ndjson(events)
    with pytest.raises(BodyTooLarge, match="1000 events"):
        parse_body(body, kind, now=NOW)
    assert len(parse_body(json.dumps(events[:1000]).encode(), "application/json", now=NOW)) == 1000
