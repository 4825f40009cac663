"""Request bodies: read with a size limit while they stream in, then parse into events or per-item errors.

A body is one event (a JSON object), a JSON array of events, or NDJSON (docs/contract.md §7). Errors carry the
event's 0-based position in the request (`index`; for NDJSON the position among its non-blank lines),
the field and the rule — never a value.
"""

from __future__ import annotations

from collections.abc import AsyncIterable
from datetime import datetime

from producers.gateway.errors import (
    BodyTimeout,
    BodyTooLarge,
    InvalidBatch,
    ItemError,
    UnsupportedMediaType,
)
from pulseseal import bodies as body_limits
from pulseseal.bodies import read_limited
from schemas import (
    MAX_BATCH_BYTES,
    MAX_BATCH_EVENTS,
    HealthEvent,
    InvalidEvent,
    iter_ndjson_lines,
    load_json,
    parse_event,
    validate_event,
)

JSON_TYPES = frozenset({"application/json", ""})
NDJSON_TYPES = frozenset(
    {"application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines"}
)


def media_type(content_type: str | None) -> str:
    """The media type of a `Content-Type` header, lower case, without parameters ("" when absent).

    Raises:
        UnsupportedMediaType: it is neither JSON nor NDJSON.
    """
    kind = (content_type or "").split(";", 1)[0].strip().lower()
    if kind not in JSON_TYPES and kind not in NDJSON_TYPES:
        raise UnsupportedMediaType("the body must be application/json or application/x-ndjson")
    return kind


async def read_body(
    chunks: AsyncIterable[bytes],
    *,
    declared_length: int | None,
    limit: int = MAX_BATCH_BYTES,
    timeout_s: float,
) -> bytes:
    """Read a body of at most `limit` bytes, refusing it as soon as it is known to be larger.

    Args:
        chunks: The body as it arrives.
        declared_length: The `Content-Length` header, if any (checked before reading a byte).
        limit: The most bytes accepted.
        timeout_s: The whole body must have arrived within this long.

    Raises:
        BodyTooLarge: the declared or the actual length is over `limit`.
        BodyTimeout: the body did not arrive in time.
    """
    try:
        return await read_limited(chunks, declared_length=declared_length, limit=limit, timeout_s=timeout_s)
    except body_limits.BodyTooLarge:
        raise BodyTooLarge(
            f"the body is larger than {limit} bytes (1 MiB); split it into smaller requests"
        ) from None
    except body_limits.BodyTimeout:
        raise BodyTimeout(f"the body did not arrive within {timeout_s:g} s") from None


def parse_body(body: bytes, kind: str, *, now: datetime | None) -> list[HealthEvent]:
    """Parse a whole body into validated events: all of them, or an error listing every problem.

    Args:
        body: The body bytes.
        kind: Its media type, from `media_type`.
        now: Reference time for the 24 h future bound.

    Raises:
        InvalidBatch: the body is empty, not JSON, not events, or at least one event is invalid.
        BodyTooLarge: more than 1000 events.
    """
    if not body.strip():
        raise InvalidBatch([ItemError(None, None, "the body is empty; send at least one event")])
    if kind in NDJSON_TYPES:
        return _parse_ndjson(body, now)
    try:
        value = load_json(body)
    except InvalidEvent:
        raise InvalidBatch([ItemError(None, None, "the body is not valid JSON")]) from None
    if isinstance(value, dict):
        items: list[object] = [value]
    elif isinstance(value, list):
        items = value
    else:
        raise InvalidBatch([ItemError(None, None, "the body must be a JSON object or an array of them")])
    _check_count(len(items))
    if not items:
        raise InvalidBatch([ItemError(None, None, "the array is empty; send at least one event")])
    events: list[HealthEvent] = []
    errors: list[ItemError] = []
    for index, item in enumerate(items):
        try:
            events.append(validate_event(item, now=now))
        except InvalidEvent as exc:
            errors.extend(ItemError(index, p.field, p.message) for p in exc.problems)
    if errors:
        raise InvalidBatch(errors)
    return events


def _parse_ndjson(body: bytes, now: datetime | None) -> list[HealthEvent]:
    lines = [line for _, line in iter_ndjson_lines(body)]
    _check_count(len(lines))
    events: list[HealthEvent] = []
    errors: list[ItemError] = []
    for index, line in enumerate(lines):
        try:
            events.append(parse_event(line, now=now))
        except InvalidEvent as exc:
            errors.extend(ItemError(index, p.field, p.message) for p in exc.problems)
    if errors:
        raise InvalidBatch(errors)
    return events


def _check_count(count: int) -> None:
    if count > MAX_BATCH_EVENTS:
        raise BodyTooLarge(
            f"the body holds more than {MAX_BATCH_EVENTS} events; split it into smaller requests"
        )
