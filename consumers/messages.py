"""Decoding one broker message into the events it carries and the ones it must dead-letter.

A message is either one JSON event or an NDJSON batch (docs/contract.md §4). An invalid event inside a batch does
not spoil its neighbours: it is set aside with a code and a value-free reason, to be dead-lettered on
its own while the rest are sealed.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime

from pulseseal.topology import JSON, NDJSON
from schemas import (
    MAX_BATCH_BYTES,
    MAX_BATCH_EVENTS,
    HealthEvent,
    InvalidEvent,
    iter_ndjson_lines,
    parse_event,
)

INVALID_EVENT = "invalid_event"
INVALID_MESSAGE = "invalid_message"
USER_SHREDDED = "user_shredded"
ID_CONFLICT = "id_conflict"


@dataclass(frozen=True, slots=True)
class Rejected:
    """Something to dead-letter: the original bytes, a stable code and a reason naming no value."""

    body: bytes
    code: str
    reason: str
    line: int | None = None
    event_id: str | None = None


@dataclass(slots=True)
class Decoded:
    """What a message carried: valid events, and what must be dead-lettered instead."""

    events: list[HealthEvent] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    failure: str | None = None
    """Decoding itself broke (the error's type name): the message is handed back, nothing of it sealed."""
    redelivered: bool = False
    """RabbitMQ delivered the message before (a restart, a crash): its events may be stored already."""


def readable_event_id(raw: bytes) -> str | None:
    """The `event_id` of one event's JSON when it can be read and is a UUID, else None.

    Only a UUID is returned because the id travels in a clear dead-letter header: whatever else a
    broken event put in that field could be a value.
    """
    try:
        candidate = json.loads(raw).get("event_id")
        return str(uuid.UUID(candidate)) if isinstance(candidate, str) and len(candidate) == 36 else None
    except (ValueError, AttributeError, TypeError, RecursionError):
        return None


def estimated_events(body: bytes, content_type: str | None) -> int:
    """How many events a message holds at most (1 to 1000), counted without decoding it.

    The batcher sizes batches by it while the message waits as bytes; an overestimate (blank lines,
    invalid events) only makes a batch smaller.
    """
    if _media_type(content_type) != NDJSON:
        return 1
    return max(1, min(body.count(b"\n") + 1, MAX_BATCH_EVENTS))


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def decode_message(body: bytes, content_type: str | None, *, now: datetime | None = None) -> Decoded:
    """Split a message body into valid events and rejected parts.

    A message that is not a PulseSeal message at all (unknown content type, too large, too many events)
    is rejected as a whole with code `invalid_message`.

    Args:
        body: The message body.
        content_type: The message's content type.
        now: Reference time for the 24 h future bound.
    """
    decoded = Decoded()
    media_type = _media_type(content_type)
    if len(body) > MAX_BATCH_BYTES:
        decoded.rejected.append(Rejected(body, INVALID_MESSAGE, "message body is larger than 1 MiB"))
    elif media_type == JSON:
        _add(decoded, body, None, now)
    elif media_type == NDJSON:
        lines = list(iter_ndjson_lines(body))
        if len(lines) > MAX_BATCH_EVENTS:
            decoded.rejected.append(
                Rejected(body, INVALID_MESSAGE, f"batch has more than {MAX_BATCH_EVENTS} events")
            )
        else:
            for number, line in lines:
                _add(decoded, line, number, now)
    else:
        decoded.rejected.append(Rejected(body, INVALID_MESSAGE, f"content type must be {JSON} or {NDJSON}"))
    return decoded


def decode_or_fail(body: bytes, content_type: str | None, *, now: datetime | None = None) -> Decoded:
    """`decode_message`, with any error of decoding itself caught as `Decoded(failure=<type name>)`.

    One message that breaks the decoder (a bug, not bad data: bad data is `rejected`) fails alone; its
    batch neighbours are still sealed.
    """
    try:
        return decode_message(body, content_type, now=now)
    except Exception as exc:  # noqa: BLE001 - handed back alone, by type name only (never the body)
        return Decoded(failure=type(exc).__name__)


def _add(decoded: Decoded, raw: bytes, line: int | None, now: datetime | None) -> None:
    try:
        decoded.events.append(parse_event(raw, now=now))
    except InvalidEvent as exc:
        where = "" if line is None else f"line {line}: "
        decoded.rejected.append(Rejected(raw, INVALID_EVENT, where + exc.reason, line=line))
