"""From untrusted bytes to events and back: JSON decoding, NDJSON lines, canonical JSON, error reports."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import (
    FieldProblem,
    InvalidEvent,
    canonical_json,
    iter_ndjson_lines,
    load_json,
    parse_event,
    validate_event,
)
from tests.factories import valid_event
from tests.strategies import event_dicts, json_values

NOT_JSON = (FieldProblem(None, "is not valid JSON"),)

# --- decoding -------------------------------------------------------------------------------------------


def test_parse_event_takes_bytes_or_text() -> None:
    body = json.dumps(valid_event("sleep"))
    assert parse_event(body) == parse_event(body.encode())


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{",
        b'{"event_id": "CANARY-77a1',
        b'{"a": 1} trailing',
        b'{"a": 1}{"b": 2}',
        b"\xff\xfe{}",  # not UTF-8
        b'{"a": "\\ud800"}',  # a lone surrogate
        b"{'a': 1}",
    ],
)
def test_malformed_json_is_one_fixed_problem(body: bytes) -> None:
    with pytest.raises(InvalidEvent) as load_error:
        load_json(body)
    assert load_error.value.problems == NOT_JSON
    with pytest.raises(InvalidEvent) as parse_error:
        parse_event(body)
    assert parse_error.value.problems == NOT_JSON


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_number_tokens_are_not_json(token: str) -> None:
    with pytest.raises(InvalidEvent) as caught:
        load_json(f'{{"a": {token}}}')
    assert caught.value.problems == NOT_JSON
    # parse_event's parser reads the token, and the field refuses it (see test_events).
    with pytest.raises(InvalidEvent):
        parse_event(json.dumps(valid_event("spo2")).replace("97.5", token))


def test_load_json_decodes_plain_json() -> None:
    assert load_json(b'{"a": [1, 2.5, "\\u00e9", null, true]}') == {"a": [1, 2.5, "é", None, True]}


def test_a_lone_surrogate_in_python_text_is_refused() -> None:
    with pytest.raises(InvalidEvent) as caught:
        validate_event(valid_event("medication", data={"name": "\ud800"}))
    assert caught.value.problems == (FieldProblem("data.name", "must be valid Unicode text"),)


def test_ndjson_lines_are_numbered_from_one_and_blank_lines_skipped() -> None:
    body = b'{"a":1}\n\n   \r\n{"b":2}\r\n\t{"c":3}'
    assert list(iter_ndjson_lines(body)) == [(1, b'{"a":1}'), (4, b'{"b":2}'), (5, b'{"c":3}')]


@pytest.mark.parametrize("body", [b"", b"\n", b"\n\r\n  \n"])
def test_an_empty_ndjson_body_has_no_lines(body: bytes) -> None:
    assert list(iter_ndjson_lines(body)) == []


# --- canonical JSON -------------------------------------------------------------------------------------


def test_canonical_json_is_compact_utf8_in_declaration_order() -> None:
    event = validate_event(valid_event("migraine_attack"))
    assert canonical_json(event) == (
        b'{"event_id":"0b6f8d3e-1c2a-4b5e-9f00-0123456789ab","user_id":"user-0001",'
        b'"occurred_at":"2026-11-28T07:30:00+01:00","source":{"kind":"wearable","device":"Pulse Band 2"},'
        b'"type":"migraine_attack","data":{"severity":6,"aura":true,"ended_at":"2026-11-28T11:05:00+01:00",'
        b'"triggers":["bright light","poor sleep"],"notes":"Started behind the left eye."}}'
    )


def test_canonical_json_does_not_depend_on_how_the_input_was_written() -> None:
    event = valid_event("steps")
    shuffled = dict(reversed(list(event.items())))
    shuffled["data"] = dict(reversed(list(event["data"].items())))
    spaced = json.dumps(shuffled, indent=4)
    assert canonical_json(parse_event(spaced)) == canonical_json(validate_event(event))


def test_fields_not_given_are_left_out_and_explicit_nulls_kept() -> None:
    omitted = validate_event(
        valid_event("migraine_attack", source=None, data={"notes": None, "ended_at": None})
    )
    text = canonical_json(omitted).decode()
    assert '"source":null' in text
    assert '"notes":null' in text
    assert '"ended_at":null' in text
    left_out = canonical_json(validate_event(valid_event("migraine_attack", source=None))).decode()
    assert '"notes"' in left_out
    bare = valid_event("migraine_attack")
    del bare["source"]
    del bare["data"]["notes"]
    text = canonical_json(validate_event(bare)).decode()
    assert '"source"' not in text
    assert '"notes"' not in text


@pytest.mark.parametrize(
    ("given_time", "canonical_time"),
    [
        ("2026-11-28T07:30:00Z", "2026-11-28T07:30:00Z"),
        ("2026-11-28T07:30:00+00:00", "2026-11-28T07:30:00Z"),
        ("2026-11-28T07:30:00-00:00", "2026-11-28T07:30:00Z"),
        ("2026-11-28t07:30:00z", "2026-11-28T07:30:00Z"),
        ("2026-11-28T07:30:00+05:30", "2026-11-28T07:30:00+05:30"),
        ("2026-11-28T07:30:00.5-03:00", "2026-11-28T07:30:00.500000-03:00"),
        ("2026-11-28T07:30:00.000Z", "2026-11-28T07:30:00Z"),
        ("2026-11-28T07:30:00.1234567Z", "2026-11-28T07:30:00.123456Z"),
        ("1969-07-20T20:17:40Z", "1969-07-20T20:17:40Z"),
    ],
)
def test_times_keep_their_offset_and_microseconds(given_time: str, canonical_time: str) -> None:
    event = validate_event(valid_event("steps", occurred_at=given_time))
    assert f'"occurred_at":"{canonical_time}"'.encode() in canonical_json(event)


def test_numbers_are_written_as_their_model_type() -> None:
    event = validate_event(valid_event("spo2", data={"percent": 97}))
    assert b'"data":{"percent":97.0}' in canonical_json(event)


def test_text_is_raw_utf8_with_json_escapes_only_where_json_needs_them() -> None:
    name = 'Zolmitriptan "Zomig" \\ é 偏头痛 \U0001f92f\n\t\x00'
    event = validate_event(valid_event("medication", data={"name": name}))
    expected = json.dumps(name, ensure_ascii=False).encode()
    assert b'"name":' + expected in canonical_json(event)


@settings(max_examples=300)
@given(event_dicts())
def test_any_valid_event_round_trips_through_canonical_json(raw: dict[str, Any]) -> None:
    event = validate_event(raw)
    sealed_bytes = canonical_json(event)
    again = parse_event(sealed_bytes)
    assert again == event
    # Equality of aware datetimes ignores the offset; the bytes do not.
    assert canonical_json(again) == sealed_bytes
    assert again.occurred_at.utcoffset() == event.occurred_at.utcoffset()
    assert parse_event(json.dumps(raw)) == event


# --- errors ---------------------------------------------------------------------------------------------


def test_an_invalid_event_reports_its_first_problem_and_how_many_more() -> None:
    error = InvalidEvent([FieldProblem("data.bpm", "must be ≥ 20"), FieldProblem(None, "is not valid JSON")])
    assert str(error) == "data.bpm: must be ≥ 20 (and 1 more)"
    assert error.field == "data.bpm"
    assert error.reason == "data.bpm: must be ≥ 20"
    assert isinstance(error, ValueError)


def test_an_invalid_event_without_problems_still_says_something() -> None:
    error = InvalidEvent([])
    assert error.problems == (FieldProblem(None, "invalid event"),)
    assert str(error) == "invalid event"
    assert error.field is None


def test_a_field_problem_reads_as_field_and_rule() -> None:
    assert str(FieldProblem("source.kind", "is required")) == "source.kind: is required"
    assert str(FieldProblem(None, "must be a JSON object")) == "must be a JSON object"


# --- rubbish in, InvalidEvent out -------------------------------------------------------------------------


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_random_bytes_only_ever_raise_invalid_event(body: bytes) -> None:
    with pytest.raises(InvalidEvent):
        parse_event(body)


@settings(max_examples=300)
@given(st.text(max_size=200))
def test_random_text_only_ever_raises_invalid_event(body: str) -> None:
    with pytest.raises(InvalidEvent):
        parse_event(body)


@settings(max_examples=300)
@given(json_values)
def test_random_json_values_only_ever_raise_invalid_event(value: object) -> None:
    with pytest.raises(InvalidEvent):
        validate_event(value)
    with pytest.raises(InvalidEvent):
        parse_event(json.dumps(value))


CANARY = "CANARY-1c9b"


@st.composite
def mutated_events(draw: st.DrawFn) -> dict[str, Any]:
    """A valid event with one field (at the top or in `data`/`source`) set to a random JSON value."""
    event = draw(event_dicts())
    where = draw(st.sampled_from([event, event["data"], event.get("source", event)]))
    field = draw(st.sampled_from([*where, "unexpected"]))
    marked = st.text(max_size=10).map(lambda text: f"{CANARY}{text}")
    where[field] = draw(json_values | marked | st.lists(marked, min_size=1, max_size=3))
    return event


@settings(max_examples=500)
@given(mutated_events())
def test_a_mutated_event_is_valid_or_refused_without_echoing_the_value(event: dict[str, Any]) -> None:
    try:
        validate_event(event)
    except InvalidEvent as error:
        reported = [str(error), *(str(problem) for problem in error.problems)]
        assert all(CANARY not in text for text in reported)
