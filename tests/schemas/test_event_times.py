"""Event times (RFC 3339, offsets, the 24 h bound) and errors that never echo a value."""

from __future__ import annotations

import json
import traceback
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest

from schemas import (
    FieldProblem,
    InvalidEvent,
    MigraineAttackEvent,
    parse_event,
    validate_event,
)
from tests.factories import valid_event
from tests.schemas.helpers import Validate, problems

# --- times ----------------------------------------------------------------------------------------------

RFC3339_NEEDED = "must be an RFC 3339 time with an offset"


@pytest.mark.parametrize(("type_", "field"), [("steps", "occurred_at"), ("migraine_attack", "data.ended_at")])
@pytest.mark.parametrize(
    "text", ["2026-11-28T07:30:00", "2026-11-28", "2026-11-28 07:30:00+01:00", "yesterday"]
)
def test_a_time_without_an_offset_is_refused(validate: Validate, type_: str, field: str, text: str) -> None:
    overrides = {"occurred_at": text} if field == "occurred_at" else {"data": {"ended_at": text}}
    [(path, message)] = problems(validate, valid_event(type_, **overrides))
    assert path == field
    assert message.startswith(RFC3339_NEEDED)


@pytest.mark.parametrize("moment", [datetime(2026, 11, 28, 7, 30), datetime(2026, 11, 28, 7, 30, 0, 1)])
def test_a_naive_python_datetime_is_refused(moment: datetime) -> None:
    for event in (
        valid_event("migraine_attack", occurred_at=moment),
        valid_event("migraine_attack", data={"ended_at": moment}),
    ):
        with pytest.raises(InvalidEvent) as caught:
            validate_event(event)
        assert caught.value.reason.endswith(RFC3339_NEEDED)


def test_an_aware_python_datetime_is_accepted_with_its_offset() -> None:
    moment = datetime(2026, 11, 28, 7, 30, tzinfo=timezone(timedelta(hours=-3)))
    event = validate_event(valid_event("migraine_attack", occurred_at=moment, data={"ended_at": moment}))
    assert isinstance(event, MigraineAttackEvent)
    assert event.occurred_at == moment
    assert event.occurred_at.utcoffset() == timedelta(hours=-3)
    assert event.data.ended_at == moment


@pytest.mark.parametrize("offset", [timedelta(seconds=30), timedelta(minutes=1, microseconds=1)])
def test_a_python_offset_rfc3339_cannot_write_is_refused(offset: timedelta) -> None:
    # Serialising would drop the seconds and move the instant; refuse it instead.
    event = valid_event("steps", occurred_at=datetime(2026, 11, 28, tzinfo=timezone(offset)))
    with pytest.raises(InvalidEvent) as caught:
        validate_event(event)
    assert caught.value.problems == (
        FieldProblem("occurred_at", "must have a UTC offset in whole minutes (RFC 3339)"),
    )


def test_a_python_date_is_not_a_time() -> None:
    with pytest.raises(InvalidEvent) as caught:
        validate_event(valid_event("steps", occurred_at=date(2026, 11, 28)))
    assert caught.value.field == "occurred_at"


@pytest.mark.parametrize(
    "text",
    ["0001-01-01T00:00:00+00:01", "9999-12-31T23:59:59-00:01"],
)
def test_a_time_whose_utc_instant_python_cannot_hold_is_refused(validate: Validate, text: str) -> None:
    assert problems(validate, valid_event("steps", occurred_at=text)) == [
        ("occurred_at", "must fall between years 0001 and 9999 in UTC")
    ]


@pytest.mark.parametrize(
    "text", ["0001-01-01T00:00:00Z", "0001-01-01T00:01:00+00:01", "9999-12-31T23:59:59Z"]
)
def test_the_extreme_utc_instants_are_accepted(validate: Validate, text: str) -> None:
    validate(valid_event("steps", occurred_at=text))


NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
FUTURE = "must not be more than 24 h in the future"


@pytest.mark.parametrize(
    "occurred_at",
    [
        "2026-11-30T12:00:00Z",  # exactly 24 h
        "2026-11-30T17:30:00+05:30",  # the same instant, another offset
        "2026-11-30T11:59:59.999999Z",
        "2026-11-29T12:00:00Z",
        "1970-01-01T00:00:00Z",  # the past has no bound
    ],
)
def test_occurred_at_may_be_up_to_24_hours_after_now(occurred_at: str) -> None:
    event = valid_event("steps", occurred_at=occurred_at)
    assert parse_event(json.dumps(event), now=NOW).occurred_at == datetime.fromisoformat(occurred_at)
    assert validate_event(event, now=NOW).occurred_at == datetime.fromisoformat(occurred_at)


@pytest.mark.parametrize(
    "occurred_at",
    [
        "2026-11-30T12:00:00.000001Z",  # 24 h + 1 µs
        "2026-11-30T07:00:00.000001-05:00",
        "2027-01-01T00:00:00Z",
    ],
)
def test_occurred_at_more_than_24_hours_after_now_is_refused(occurred_at: str) -> None:
    event = valid_event("steps", occurred_at=occurred_at)
    with pytest.raises(InvalidEvent) as from_json:
        parse_event(json.dumps(event), now=NOW)
    with pytest.raises(InvalidEvent) as from_python:
        validate_event(event, now=NOW)
    assert from_json.value.problems == from_python.value.problems == (FieldProblem("occurred_at", FUTURE),)


def test_now_in_another_offset_is_the_same_instant() -> None:
    now = NOW.astimezone(timezone(timedelta(hours=-8)))
    validate_event(valid_event("steps", occurred_at="2026-11-30T12:00:00Z"), now=now)
    with pytest.raises(InvalidEvent):
        validate_event(valid_event("steps", occurred_at="2026-11-30T12:00:00.000001Z"), now=now)


def test_without_now_there_is_no_future_bound() -> None:
    validate_event(valid_event("steps", occurred_at="2100-01-01T00:00:00Z"))


def test_the_future_bound_is_for_occurred_at_only() -> None:
    validate_event(valid_event("migraine_attack", data={"ended_at": "2100-01-01T00:00:00Z"}), now=NOW)


def test_a_naive_now_is_a_programming_error() -> None:
    naive = datetime(2026, 11, 29, 12, 0)
    with pytest.raises(TypeError, match="timezone-aware"):
        validate_event(valid_event("steps"), now=naive)
    with pytest.raises(TypeError, match="timezone-aware"):
        parse_event(b"{}", now=naive)


# --- errors never echo values -----------------------------------------------------------------------

CANARY = "CANARY-5f0e1d2c"

# (type, overrides, the canary text that must not come back)
CANARIES: list[tuple[str, dict[str, Any], str]] = [
    ("steps", {"event_id": CANARY}, CANARY),
    ("steps", {"user_id": f"{CANARY} !"}, CANARY),
    ("steps", {"user_id": CANARY * 10}, CANARY),
    ("steps", {"type": CANARY}, CANARY),
    ("steps", {"occurred_at": CANARY}, CANARY),
    ("steps", {"occurred_at": "2026-13-45T07:30:00Z"}, "2026-13-45"),
    ("steps", {"source": {"kind": CANARY}}, CANARY),
    ("steps", {"source": {"device": CANARY * 20}}, CANARY),
    ("steps", {"source": CANARY}, CANARY),
    ("steps", {"extra": CANARY}, CANARY),
    ("steps", {CANARY: 1}, CANARY),
    ("steps", {"data": {CANARY: 1}}, CANARY),
    ("steps", {"data": CANARY}, CANARY),
    ("heart_rate", {"data": {"bpm": 987654321}}, "987654321"),
    ("heart_rate", {"data": {"bpm": CANARY}}, CANARY),
    ("steps", {"data": {"count": -8675309}}, "8675309"),
    ("spo2", {"data": {"percent": 31.41592653589793}}, "31.4159"),
    ("spo2", {"data": {"percent": CANARY}}, CANARY),
    ("sleep", {"data": {"stage": CANARY}}, CANARY),
    ("migraine_attack", {"data": {"aura": CANARY}}, CANARY),
    ("migraine_attack", {"data": {"ended_at": CANARY}}, CANARY),
    ("migraine_attack", {"data": {"triggers": [CANARY * 5]}}, CANARY),
    ("migraine_attack", {"data": {"triggers": [CANARY] * 21}}, CANARY),
    ("migraine_attack", {"data": {"notes": CANARY * 200}}, CANARY),
    ("medication", {"data": {"name": CANARY * 20}}, CANARY),
    ("medication", {"data": {"dose_mg": -271828.18}}, "271828"),
    ("medication", {"data": {"dose_mg": CANARY}}, CANARY),
]


@pytest.mark.parametrize(("type_", "overrides", "canary"), CANARIES)
def test_errors_name_the_field_and_rule_but_never_the_value(
    validate: Validate, type_: str, overrides: dict[str, Any], canary: str
) -> None:
    with pytest.raises(InvalidEvent) as caught:
        validate(valid_event(type_, **overrides))
    error = caught.value
    texts = [str(error), repr(error), error.reason, *map(str, error.args)]
    for problem in error.problems:
        texts += [problem.field or "", problem.message, str(problem)]
    # What a log line with the traceback would show (the pydantic error, which holds the input, is not
    # chained in).
    texts.append("".join(traceback.format_exception(error)))
    assert all(canary not in text for text in texts)
    assert error.__cause__ is None


def test_every_problem_is_reported_in_field_order(validate: Validate) -> None:
    event = valid_event("heart_rate", user_id="has space", data={"bpm": 10}, extra=1)
    with pytest.raises(InvalidEvent) as caught:
        validate(event)
    assert [(p.field, p.message) for p in caught.value.problems] == [
        ("user_id", "must be 1 to 128 characters of A-Za-z0-9._:@-"),
        ("data.bpm", "must be ≥ 20"),
        ("extra", "is not an allowed field"),
    ]
    assert str(caught.value) == "user_id: must be 1 to 128 characters of A-Za-z0-9._:@- (and 2 more)"
    assert caught.value.field == "user_id"
