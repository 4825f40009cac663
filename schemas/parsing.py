"""Turning untrusted bytes into validated events, and events into canonical bytes.

Every error names the field and the rule it broke and never repeats the value: rejected events end up in
HTTP answers, dead-letter headers and rejected-lines files, none of which may hold health data.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pydantic_core
from pydantic import TypeAdapter, ValidationError

from schemas.events import EVENT_TYPES, HealthEvent
from schemas.userids import USER_ID_RULE

_ADAPTER: TypeAdapter[HealthEvent] = TypeAdapter(HealthEvent)

MAX_BATCH_EVENTS = 1000
MAX_BATCH_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class FieldProblem:
    """One reason an event was refused: a dotted field path (None for the event as a whole) and a rule."""

    field: str | None
    message: str

    def __str__(self) -> str:
        return self.message if self.field is None else f"{self.field}: {self.message}"


class InvalidEvent(ValueError):
    """An event failed validation. `problems` lists every field and rule; no value is ever included."""

    def __init__(self, problems: list[FieldProblem]) -> None:
        self.problems = tuple(problems) or (FieldProblem(None, "invalid event"),)
        first = str(self.problems[0])
        more = len(self.problems) - 1
        super().__init__(first if more == 0 else f"{first} (and {more} more)")

    @property
    def field(self) -> str | None:
        """The first offending field, the one a single-line report names."""
        return self.problems[0].field

    @property
    def reason(self) -> str:
        """The first problem as one line."""
        return str(self.problems[0])


def parse_event(raw: bytes | str, *, now: datetime | None = None) -> HealthEvent:
    """Validate one JSON-encoded event.

    Args:
        raw: The event's JSON text.
        now: When given (timezone-aware), `occurred_at` may be at most 24 h after it.

    Raises:
        InvalidEvent: the JSON is malformed or the event breaks a rule of docs/contract.md §3.
        TypeError: `now` is a naive datetime.
    """
    try:
        return _ADAPTER.validate_json(raw, context=_context(now))
    except ValidationError as exc:
        raise InvalidEvent(problems_from(exc)) from None


def validate_event(obj: Any, *, now: datetime | None = None) -> HealthEvent:
    """Validate one event already decoded from JSON (or built in Python).

    Raises:
        InvalidEvent: the event breaks a rule of docs/contract.md §3.
        TypeError: `now` is a naive datetime.
    """
    try:
        return _ADAPTER.validate_python(obj, context=_context(now))
    except ValidationError as exc:
        raise InvalidEvent(problems_from(exc)) from None


def load_json(raw: bytes | str) -> Any:
    """Decode JSON text strictly (lone surrogates, NaN and trailing garbage are errors).

    Raises:
        InvalidEvent: not valid JSON.
    """
    try:
        return pydantic_core.from_json(raw, allow_inf_nan=False)
    except ValueError:
        raise InvalidEvent([FieldProblem(None, "is not valid JSON")]) from None


def iter_ndjson_lines(body: bytes) -> Iterator[tuple[int, bytes]]:
    """Yield (1-based line number, line) for every non-blank line of an NDJSON body."""
    for number, line in enumerate(body.split(b"\n"), start=1):
        stripped = line.strip()
        if stripped:
            yield number, stripped


def canonical_json(event: HealthEvent) -> bytes:
    """The canonical serialisation of an event: what is sealed and what replay gives back.

    Compact UTF-8 JSON, keys in the models' declaration order (`event_id`, `user_id`, `occurred_at`,
    `source`, `type`, `data`), optional fields that were not given left out, explicit nulls kept, times
    with their original offset and microseconds. Equal events give equal bytes. Pydantic's compiled
    serialiser does this at several times the speed of `json.dumps`, which matters on the seal path.
    """
    return event.__pydantic_serializer__.to_json(event, exclude_unset=True)


def _context(now: datetime | None) -> dict[str, Any] | None:
    if now is None:
        return None
    # Checked here, once: a naive `now` would otherwise fail deep in the validator with a TypeError, and
    # only for events that got that far.
    if now.utcoffset() is None:
        raise TypeError("now must be a timezone-aware datetime")
    return {"now": now}


# --- error messages --------------------------------------------------------------------------------

_FIXED = {
    "missing": "is required",
    "extra_forbidden": "is not an allowed field",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be a string",
    "string_unicode": "must be valid Unicode text",
    "list_type": "must be a list",
    "model_type": "must be a JSON object",
    "model_attributes_type": "must be a JSON object",
    "dict_type": "must be a JSON object",
    "json_invalid": "is not valid JSON",
    "json_type": "must be JSON text",
    "union_tag_not_found": "is required",
    "datetime_type": "must be an RFC 3339 time with an offset",
    "datetime_parsing": "must be an RFC 3339 time with an offset",
    "datetime_from_date_parsing": "must be an RFC 3339 time with an offset",
    "timezone_aware": "must be an RFC 3339 time with an offset",
}

_PATTERN_MESSAGES = {
    "user_id": f"must be {USER_ID_RULE}",
    "event_id": "must be a UUID in 8-4-4-4-12 hex form",
}

# Unknown field names are only repeated when they look like a field name could.
_SAFE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


def problems_from(exc: ValidationError) -> list[FieldProblem]:
    """Translate pydantic errors into value-free `FieldProblem`s.

    Pydantic's own messages sometimes quote the input (an unknown union tag, for one), so messages are
    rebuilt from the error type and its limits only.
    """
    problems: list[FieldProblem] = []
    for error in exc.errors(include_input=False, include_url=False):
        loc, error_type = error["loc"], error["type"]
        if error_type == "extra_forbidden" and not _SAFE_NAME.fullmatch(str(loc[-1])):
            # An unknown field's name is sender data: it may be long (dead-letter headers must stay
            # small) or hold the very values we never echo. Name its parent instead.
            field = _field_path(loc[:-1], error_type)
            problems.append(FieldProblem(field, "has a field that is not allowed (name not shown)"))
            continue
        field = _field_path(loc, error_type)
        problems.append(FieldProblem(field, _message(error_type, error.get("ctx") or {}, field)))
    return problems


def _field_path(loc: tuple[int | str, ...], error_type: str) -> str | None:
    parts = list(loc)
    # A discriminated union puts the selected tag first: ('heart_rate', 'data', 'bpm').
    if parts and parts[0] in EVENT_TYPES:
        parts = parts[1:]
    if error_type in ("union_tag_invalid", "union_tag_not_found"):
        parts = [*parts, "type"]
    # Constrained and wrapped types add internal names such as 'function-after[...]'; drop them.
    names = [str(p) for p in parts if isinstance(p, int) or ("[" not in p and "(" not in p)]
    return ".".join(names) if names else None


def _number(limit: object) -> str:
    # Limits of float fields come back as 0.0 or 50.0; show them as the contract writes them.
    if isinstance(limit, float) and limit.is_integer():
        return str(int(limit))
    return str(limit)


def _message(error_type: str, ctx: Mapping[str, Any], field: str | None) -> str:
    if error_type in _FIXED:
        return _FIXED[error_type]
    if error_type == "value_error":
        return str(ctx.get("error", "is not valid"))
    if error_type == "union_tag_invalid":
        return f"unknown event type; expected one of {', '.join(EVENT_TYPES)}"
    if error_type == "literal_error":
        return f"must be one of {ctx.get('expected', 'the allowed values')}"
    if error_type == "string_pattern_mismatch":
        leaf = (field or "").rsplit(".", 1)[-1]
        return _PATTERN_MESSAGES.get(leaf, "contains characters that are not allowed")
    bounds = {
        "greater_than_equal": ("must be ≥", "ge"),
        "greater_than": ("must be >", "gt"),
        "less_than_equal": ("must be ≤", "le"),
        "less_than": ("must be <", "lt"),
    }
    if error_type in bounds:
        text, key = bounds[error_type]
        return f"{text} {_number(ctx.get(key))}"
    if error_type == "string_too_short":
        return f"must be at least {_count(ctx.get('min_length'), 'character')}"
    if error_type == "string_too_long":
        return f"must be at most {_count(ctx.get('max_length'), 'character')}"
    if error_type == "too_long":
        return f"must have at most {_count(ctx.get('max_length'), 'item')}"
    if error_type == "too_short":
        return f"must have at least {_count(ctx.get('min_length'), 'item')}"
    return f"is not valid ({error_type})"


def _count(number: object, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"
