"""The six event types of docs/contract.md §3: every bound, every required field, strict types, UUIDs.

Most tests run twice, once through `parse_event` (JSON text, as producers send it) and once through
`validate_event` (a Python dict), because the two go through different pydantic input modes. Times and
value-free errors are in test_event_times.py.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import ValidationError

from schemas import (
    EVENT_TYPES,
    FieldProblem,
    HeartRateEvent,
    InvalidEvent,
    MedicationEvent,
    MigraineAttackEvent,
    SleepEvent,
    Spo2Event,
    StepsEvent,
    parse_event,
    validate_event,
)
from tests.factories import DEFAULT_DATA, MISSING, valid_event
from tests.schemas.helpers import Validate, problems

# --- every type ----------------------------------------------------------------------------------------

MODELS: dict[str, type[object]] = {
    "heart_rate": HeartRateEvent,
    "steps": StepsEvent,
    "spo2": Spo2Event,
    "sleep": SleepEvent,
    "migraine_attack": MigraineAttackEvent,
    "medication": MedicationEvent,
}


def test_the_contract_lists_six_event_types() -> None:
    assert set(EVENT_TYPES) == set(MODELS)


@pytest.mark.parametrize("type_", EVENT_TYPES)
def test_a_valid_event_of_each_type_gets_its_model(validate: Validate, type_: str) -> None:
    event = validate(valid_event(type_))
    assert isinstance(event, MODELS[type_])
    assert event.type == type_
    assert event.event_id == "0b6f8d3e-1c2a-4b5e-9f00-0123456789ab"


@pytest.mark.parametrize("type_", EVENT_TYPES)
def test_source_is_optional(validate: Validate, type_: str) -> None:
    assert validate(valid_event(type_, source=MISSING)).source is None


def test_notes_are_optional(validate: Validate) -> None:
    event = validate(valid_event("migraine_attack", data={"notes": MISSING}))
    assert isinstance(event, MigraineAttackEvent)
    assert event.data.notes is None


def test_events_are_immutable() -> None:
    event = validate_event(valid_event("heart_rate"))
    assert isinstance(event, HeartRateEvent)
    with pytest.raises(ValidationError):
        event.data.bpm = 300  # type: ignore[misc]


# --- bounds, both sides ------------------------------------------------------------------------------

# (type, data field, lowest valid, just below it, highest valid, just above it)
NUMBER_BOUNDS: list[tuple[str, str, float, float, float, float]] = [
    ("heart_rate", "bpm", 20, 19, 300, 301),
    ("steps", "count", 0, -1, 100_000, 100_001),
    ("steps", "period_s", 1, 0, 86_400, 86_401),
    ("spo2", "percent", 50.0, math.nextafter(50.0, 0), 100.0, math.nextafter(100.0, 200)),
    ("spo2", "percent", 50, 49, 100, 101),
    ("sleep", "duration_s", 1, 0, 86_400, 86_401),
    ("migraine_attack", "severity", 0, -1, 10, 11),
]


@pytest.mark.parametrize(("type_", "field", "low", "below", "high", "above"), NUMBER_BOUNDS)
def test_number_bounds_are_inclusive_and_enforced_on_both_sides(
    validate: Validate, type_: str, field: str, low: float, below: float, high: float, above: float
) -> None:
    for edge in (low, high):
        event = validate(valid_event(type_, data={field: edge}))
        assert getattr(event.data, field) == edge
    low_text = str(int(low))
    high_text = str(int(high))
    assert problems(validate, valid_event(type_, data={field: below})) == [
        (f"data.{field}", f"must be ≥ {low_text}")
    ]
    assert problems(validate, valid_event(type_, data={field: above})) == [
        (f"data.{field}", f"must be ≤ {high_text}")
    ]


@pytest.mark.parametrize("dose", [5e-324, 0.001, 1, 1e308])
def test_any_positive_dose_is_accepted(validate: Validate, dose: float) -> None:
    event = validate(valid_event("medication", data={"dose_mg": dose}))
    assert isinstance(event, MedicationEvent)
    assert event.data.dose_mg == dose


@pytest.mark.parametrize("dose", [0, 0.0, -0.0, -5e-324, -1])
def test_a_dose_must_be_above_zero(validate: Validate, dose: float) -> None:
    assert problems(validate, valid_event("medication", data={"dose_mg": dose})) == [
        ("data.dose_mg", "must be > 0")
    ]


# A 4-byte UTF-8 character: lengths are counted in characters, not bytes or UTF-16 units.
WIDE = "\U0001f92f"

# (type, overrides building a string of length n, field path, min, max)
STRING_BOUNDS: list[tuple[str, Callable[[str], dict[str, Any]], str, int, int]] = [
    ("heart_rate", lambda s: {"user_id": s}, "user_id", 1, 128),
    ("heart_rate", lambda s: {"source": {"device": s}}, "source.device", 0, 128),
    ("medication", lambda s: {"data": {"name": s}}, "data.name", 1, 200),
    ("migraine_attack", lambda s: {"data": {"notes": s}}, "data.notes", 0, 2000),
    ("migraine_attack", lambda s: {"data": {"triggers": [s]}}, "data.triggers.0", 0, 64),
]


@pytest.mark.parametrize(
    ("type_", "build", "path", "shortest", "longest", "char"),
    [
        pytest.param(*bound, char, id=f"{bound[2]}-{name}")
        for bound in STRING_BOUNDS
        for name, char in (("ascii", "a"), ("wide", WIDE))
        if not (bound[2] == "user_id" and char == WIDE)  # user_id is ASCII by its pattern
    ],
)
def test_string_lengths_are_enforced_on_both_sides(
    validate: Validate,
    type_: str,
    build: Callable[[str], dict[str, Any]],
    path: str,
    shortest: int,
    longest: int,
    char: str,
) -> None:
    validate(valid_event(type_, **build(char * shortest)))
    validate(valid_event(type_, **build(char * longest)))
    too_long = problems(validate, valid_event(type_, **build(char * (longest + 1))))
    assert too_long == [(path, f"must be at most {longest} characters")]
    if shortest > 0:
        too_short = problems(validate, valid_event(type_, **build("")))
        assert too_short == [(path, "must be at least 1 character")]


def test_at_most_twenty_triggers(validate: Validate) -> None:
    validate(valid_event("migraine_attack", data={"triggers": []}))
    validate(valid_event("migraine_attack", data={"triggers": ["x"] * 20}))
    assert problems(validate, valid_event("migraine_attack", data={"triggers": ["x"] * 21})) == [
        ("data.triggers", "must have at most 20 items")
    ]


def test_an_oversized_string_is_refused_with_a_short_message(validate: Validate) -> None:
    found = problems(validate, valid_event("migraine_attack", data={"notes": "x" * 1_000_000}))
    assert found == [("data.notes", "must be at most 2000 characters")]


# --- required fields -----------------------------------------------------------------------------------

TOP_LEVEL_REQUIRED = ("event_id", "user_id", "type", "occurred_at", "data")


@pytest.mark.parametrize("type_", EVENT_TYPES)
@pytest.mark.parametrize("field", TOP_LEVEL_REQUIRED)
def test_every_top_level_field_is_required(validate: Validate, type_: str, field: str) -> None:
    assert problems(validate, valid_event(type_, **{field: MISSING})) == [(field, "is required")]


DATA_REQUIRED = [
    (type_, field)
    for type_, data in DEFAULT_DATA.items()
    for field in data
    if (type_, field) != ("migraine_attack", "notes")
]


@pytest.mark.parametrize(("type_", "field"), DATA_REQUIRED)
def test_every_data_field_is_required(validate: Validate, type_: str, field: str) -> None:
    assert problems(validate, valid_event(type_, data={field: MISSING})) == [(f"data.{field}", "is required")]


@pytest.mark.parametrize("field", ["kind", "device"])
def test_a_given_source_needs_kind_and_device(validate: Validate, field: str) -> None:
    assert problems(validate, valid_event("steps", source={field: MISSING})) == [
        (f"source.{field}", "is required")
    ]


@pytest.mark.parametrize(("type_", "field"), [("migraine_attack", "ended_at"), ("medication", "dose_mg")])
def test_nullable_fields_take_null_but_must_be_present(validate: Validate, type_: str, field: str) -> None:
    event = validate(valid_event(type_, data={field: None}))
    assert getattr(event.data, field) is None


def test_an_empty_object_is_refused_for_its_missing_type(validate: Validate) -> None:
    assert problems(validate, {}) == [("type", "is required")]


# --- types ----------------------------------------------------------------------------------------------

UNKNOWN_TYPE = (
    "unknown event type; expected one of heart_rate, steps, spo2, sleep, migraine_attack, medication"
)


@pytest.mark.parametrize(
    "bad", ["blood_pressure", "HEART_RATE", "heart-rate", "", 5, None, True, ["steps"], {}]
)
def test_an_unknown_type_is_refused(validate: Validate, bad: object) -> None:
    assert problems(validate, valid_event("heart_rate", type=bad)) == [("type", UNKNOWN_TYPE)]


INTEGER = "must be an integer"
NUMBER = "must be a number"
STRING = "must be a string"
BOOLEAN = "must be true or false"
OBJECT = "must be a JSON object"

# (type, overrides, field path, message)
WRONG_TYPES: list[tuple[str, dict[str, Any], str, str]] = [
    ("heart_rate", {"data": {"bpm": "72"}}, "data.bpm", INTEGER),
    ("heart_rate", {"data": {"bpm": 72.0}}, "data.bpm", INTEGER),
    ("heart_rate", {"data": {"bpm": 72.5}}, "data.bpm", INTEGER),
    ("heart_rate", {"data": {"bpm": True}}, "data.bpm", INTEGER),
    ("heart_rate", {"data": {"bpm": None}}, "data.bpm", INTEGER),
    ("steps", {"data": {"count": "1250"}}, "data.count", INTEGER),
    ("steps", {"data": {"period_s": 900.5}}, "data.period_s", INTEGER),
    ("spo2", {"data": {"percent": "97.5"}}, "data.percent", NUMBER),
    ("spo2", {"data": {"percent": True}}, "data.percent", NUMBER),
    ("spo2", {"data": {"percent": None}}, "data.percent", NUMBER),
    ("sleep", {"data": {"stage": 3}}, "data.stage", "must be one of 'awake', 'light', 'deep' or 'rem'"),
    ("sleep", {"data": {"stage": "DEEP"}}, "data.stage", "must be one of 'awake', 'light', 'deep' or 'rem'"),
    ("sleep", {"data": {"duration_s": "1800"}}, "data.duration_s", INTEGER),
    ("migraine_attack", {"data": {"severity": 6.0}}, "data.severity", INTEGER),
    ("migraine_attack", {"data": {"aura": 1}}, "data.aura", BOOLEAN),
    ("migraine_attack", {"data": {"aura": "true"}}, "data.aura", BOOLEAN),
    (
        "migraine_attack",
        {"data": {"ended_at": 1764316800}},
        "data.ended_at",
        "must be an RFC 3339 time string with an offset",
    ),
    ("migraine_attack", {"data": {"triggers": "bright light"}}, "data.triggers", "must be a list"),
    ("migraine_attack", {"data": {"triggers": [1]}}, "data.triggers.0", STRING),
    ("migraine_attack", {"data": {"notes": 5}}, "data.notes", STRING),
    ("medication", {"data": {"name": 5}}, "data.name", STRING),
    ("medication", {"data": {"dose_mg": "50"}}, "data.dose_mg", NUMBER),
    ("steps", {"event_id": 5}, "event_id", STRING),
    ("steps", {"user_id": 5}, "user_id", STRING),
    ("steps", {"occurred_at": 1764316800}, "occurred_at", "must be an RFC 3339 time string with an offset"),
    ("steps", {"source": "wearable"}, "source", OBJECT),
    ("steps", {"source": {"kind": "watch"}}, "source.kind", "must be one of 'wearable', 'app' or 'import'"),
    ("steps", {"source": {"device": 5}}, "source.device", STRING),
    ("steps", {"data": []}, "data", OBJECT),
    ("steps", {"data": None}, "data", OBJECT),
    ("steps", {"data": "1250 steps"}, "data", OBJECT),
]


@pytest.mark.parametrize(("type_", "overrides", "path", "message"), WRONG_TYPES)
def test_wrong_types_are_refused_never_coerced(
    validate: Validate, type_: str, overrides: dict[str, Any], path: str, message: str
) -> None:
    assert problems(validate, valid_event(type_, **overrides)) == [(path, message)]


def test_a_json_integer_is_a_valid_number(validate: Validate) -> None:
    event = validate(valid_event("spo2", data={"percent": 97}))
    assert isinstance(event, Spo2Event)
    assert event.data.percent == 97.0
    assert isinstance(event.data.percent, float)


@pytest.mark.parametrize("body", [b"[]", b"3", b'"event"', b"null", b"true"])
def test_an_event_must_be_a_json_object(body: bytes) -> None:
    with pytest.raises(InvalidEvent) as caught:
        parse_event(body)
    assert caught.value.problems == (FieldProblem(None, OBJECT),)


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_numbers_are_refused(value: str) -> None:
    body = json.dumps(valid_event("spo2")).replace('"percent": 97.5', f'"percent": {value}')
    with pytest.raises(InvalidEvent) as caught:
        parse_event(body)
    assert caught.value.field in (None, "data.percent")
    assert value not in str(caught.value)


# --- unknown fields -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "path"),
    [
        ({"extra": 1}, "extra"),
        ({"data": {"unit": "bpm"}}, "data.unit"),
        ({"source": {"firmware": "1.2"}}, "source.firmware"),
    ],
)
def test_unknown_fields_are_refused_by_name(validate: Validate, overrides: dict[str, Any], path: str) -> None:
    assert problems(validate, valid_event("heart_rate", **overrides)) == [(path, "is not an allowed field")]


@pytest.mark.parametrize("name", ["has space", "x" * 65, "a.b", "ünïcode", "[0]", "diagnosis: epilepsy", ""])
@pytest.mark.parametrize(("where", "parent"), [(None, None), ("data", "data"), ("source", "source")])
def test_an_unknown_field_with_an_odd_name_is_refused_without_repeating_the_name(
    validate: Validate, name: str, where: str | None, parent: str | None
) -> None:
    event = valid_event("heart_rate", **({name: 1} if where is None else {where: {name: 1}}))
    found = problems(validate, event)
    assert found == [(parent, "has a field that is not allowed (name not shown)")]


# --- identifiers ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "event_id",
    [
        "0b6f8d3e-1c2a-4b5e-9f00-0123456789ab",
        "0B6F8D3E-1C2A-4B5E-9F00-0123456789AB",
        "0b6f8d3e-1C2A-4b5e-9f00-0123456789Ab",
        "00000000-0000-0000-0000-000000000000",
    ],
)
def test_a_uuid_is_kept_exactly_as_sent(validate: Validate, event_id: str) -> None:
    assert validate(valid_event("steps", event_id=event_id)).event_id == event_id


@pytest.mark.parametrize(
    "event_id",
    [
        "0b6f8d3e1c2a4b5e9f000123456789ab",  # no hyphens
        "{0b6f8d3e-1c2a-4b5e-9f00-0123456789ab}",
        "urn:uuid:0b6f8d3e-1c2a-4b5e-9f00-0123456789ab",
        "0b6f8d3e-1c2a-4b5e-9f00-0123456789a",  # short
        "0b6f8d3e-1c2a-4b5e-9f00-0123456789abc",  # long
        "0b6f8d3g-1c2a-4b5e-9f00-0123456789ab",  # not hex
        "0b6f8d3e-1c2a4b5e-9f00-0123456789ab-",
        "0b6f8d3e-1c2a-4b5e-9f00-0123456789ab\n",
        " 0b6f8d3e-1c2a-4b5e-9f00-0123456789ab",
        "\uff10b6f8d3e-1c2a-4b5e-9f00-0123456789ab",  # fullwidth zero
        "",
    ],
)
def test_a_malformed_uuid_is_refused(validate: Validate, event_id: str) -> None:
    assert problems(validate, valid_event("steps", event_id=event_id)) == [
        ("event_id", "must be a UUID in 8-4-4-4-12 hex form")
    ]


@pytest.mark.parametrize("user_id", ["u", "user-0001", "a.b_c:d@e-f", "A" * 128, "123"])
def test_user_id_characters(validate: Validate, user_id: str) -> None:
    assert validate(valid_event("steps", user_id=user_id)).user_id == user_id


@pytest.mark.parametrize("user_id", ["has space", "a/b", "ü", "tab\t", "new\nline", "semi;colon", "a+b"])
def test_a_user_id_with_other_characters_is_refused(validate: Validate, user_id: str) -> None:
    assert problems(validate, valid_event("steps", user_id=user_id)) == [
        ("user_id", "must be 1 to 128 characters of A-Za-z0-9._:@-")
    ]
