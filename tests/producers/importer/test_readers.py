"""Streaming readers: NDJSON and CSV lines in, canonical events or value-free rejections out."""

from __future__ import annotations

import io
import json
import tracemalloc
from datetime import UTC, datetime
from typing import Any

import pytest

from producers.importer.csvrows import HeaderError, RowConverter
from producers.importer.lines import read_lines
from producers.importer.readers import Rejected, csv_items, ndjson_items, read_csv_header
from tests.factories import valid_event

NOW = datetime(2026, 11, 29, tzinfo=UTC)
HEADER = "event_id,user_id,type,occurred_at,source_kind,source_device,data.bpm,data.severity,data.aura,data.ended_at,data.triggers,data.notes,data.name,data.dose_mg"


def now() -> datetime:
    return NOW


def ndjson_of(data: bytes) -> list[tuple[int, int, bytes | Rejected]]:
    return list(ndjson_items(io.BytesIO(data), now=now))


def csv_of(text: str | bytes) -> list[tuple[int, int, bytes | Rejected]]:
    data = text.encode() if isinstance(text, str) else text
    stream = io.BytesIO(data)
    converter, line, offset = read_csv_header(stream)
    stream.seek(offset)
    return list(csv_items(stream, converter, now=now, first_line=line + 1, start_offset=offset))


def events(items: list[tuple[int, int, bytes | Rejected]]) -> list[dict[str, Any]]:
    return [json.loads(p) for _, _, p in items if isinstance(p, bytes)]


def rejected(items: list[tuple[int, int, bytes | Rejected]]) -> list[Rejected]:
    return [p for _, _, p in items if isinstance(p, Rejected)]


def test_lines_carry_numbers_and_the_offset_after_each() -> None:
    assert list(read_lines(io.BytesIO(b"a\nbb\n\nccc"))) == [
        (1, b"a\n", 2),
        (2, b"bb\n", 5),
        (3, b"\n", 6),
        (4, b"ccc", 9),
    ]


def test_a_10_mb_line_is_skipped_without_being_held_in_memory() -> None:
    data = b'{"a": 1}\n' + b"x" * (10 * 1024 * 1024) + b"\n" + b'{"b": 2}\n'
    stream = io.BytesIO(data)
    tracemalloc.start()
    lines = list(read_lines(stream))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert [(n, line) for n, line, _ in lines] == [(1, b'{"a": 1}\n'), (2, None), (3, b'{"b": 2}\n')]
    assert lines[-1][2] == len(data)
    assert peak < 3 * 1024 * 1024  # one line's worth (≤ 1 MiB) at a time, not 10 MB


def test_valid_ndjson_lines_become_canonical_events_and_bad_ones_rejections() -> None:
    good = valid_event()
    data = (
        json.dumps(good, indent=None) + "\n\n" + '{"type": "heart_rate"}\n' + json.dumps(good) + "\n"
    ).encode()
    items = ndjson_of(data)
    assert [line for line, _, _ in items] == [1, 3, 4]
    assert events(items) == [good, good]
    assert rejected(items)[0].line == 3
    assert rejected(items)[0].field == "event_id"
    assert "(and 3 more" in rejected(items)[0].reason


def test_a_truncated_last_line_is_rejected_with_a_hint_and_the_rest_imported() -> None:
    good = json.dumps(valid_event())
    items = ndjson_of(f"{good}\n{good[:40]}".encode())
    assert len(events(items)) == 1
    assert rejected(items) == [
        Rejected(2, None, "is not valid JSON (the last line has no newline: cut short?)")
    ]


def test_a_complete_last_line_without_newline_is_imported() -> None:
    assert len(events(ndjson_of(json.dumps(valid_event()).encode()))) == 1


def test_invalid_utf8_is_named_as_such() -> None:
    bad = (
        json.dumps(valid_event(source={"device": "PLACEHOLDER"}))
        .encode()
        .replace(b"PLACEHOLDER", b"\xff\xfe")
    )
    items = ndjson_of(bad + b"\n" + json.dumps(valid_event()).encode() + b"\n")
    assert rejected(items) == [Rejected(1, None, "is not valid UTF-8")]
    assert len(events(items)) == 1


def test_a_byte_order_mark_on_the_first_line_is_ignored() -> None:
    assert len(events(ndjson_of(b"\xef\xbb\xbf" + json.dumps(valid_event()).encode()))) == 1


def test_an_overlong_ndjson_line_is_rejected_and_its_neighbours_kept() -> None:
    good = json.dumps(valid_event()).encode()
    items = ndjson_of(good + b"\n" + b" " * (2 * 1024 * 1024) + b"x\n" + good + b"\n")
    assert [r.line for r in rejected(items)] == [2]
    assert "longer than 1 MiB" in rejected(items)[0].reason
    assert len(events(items)) == 2


def csv_row(**cells: str) -> str:
    base = {
        "event_id": valid_event()["event_id"],
        "user_id": "user-0001",
        "type": "heart_rate",
        "occurred_at": "2026-11-28T07:30:00+01:00",
    }
    base.update(cells)
    return ",".join(base.get(name, "") for name in HEADER.split(","))


def test_csv_cells_become_typed_json_values() -> None:
    text = "\n".join(
        [
            HEADER,
            csv_row(source_kind="wearable", source_device="Band", **{"data.bpm": "72"}),
            csv_row(
                type="migraine_attack",
                **{"data.severity": "6", "data.aura": "TRUE", "data.triggers": "stress; poor sleep"},
            ),
            csv_row(
                type="migraine_attack",
                **{
                    "data.severity": "2",
                    "data.aura": "false",
                    "data.ended_at": "2026-11-28T09:00:00Z",
                    "data.triggers": '"[""light""]"',
                    "data.notes": "ok",
                },
            ),
            csv_row(type="medication", **{"data.name": "Ibuprofen"}),
        ]
    )
    items = csv_of(text + "\n")
    assert rejected(items) == []
    heart, migraine, migraine2, medication = events(items)
    assert heart["data"] == {"bpm": 72}
    assert heart["source"] == {"kind": "wearable", "device": "Band"}
    assert migraine["data"] == {
        "severity": 6,
        "aura": True,
        "ended_at": None,
        "triggers": ["stress", "poor sleep"],
    }
    assert "source" not in migraine
    assert migraine2["data"]["triggers"] == ["light"]
    assert migraine2["data"]["notes"] == "ok"
    assert medication["data"] == {"name": "Ibuprofen", "dose_mg": None}
    assert [line for line, _, _ in items] == [2, 3, 4, 5]


def test_csv_values_that_do_not_convert_are_reported_by_the_schema() -> None:
    items = csv_of(
        "\n".join(
            [HEADER, csv_row(**{"data.bpm": "seventy"}), csv_row(**{"data.bpm": ""}), csv_row(type="x")]
        )
        + "\n"
    )
    assert [(r.line, r.field, r.reason) for r in rejected(items)] == [
        (2, "data.bpm", "must be an integer"),
        (3, "data.bpm", "is required"),
        (
            4,
            "type",
            "unknown event type; expected one of heart_rate, steps, spo2, sleep, migraine_attack, medication",
        ),
    ]


def test_csv_rows_with_missing_or_extra_cells_are_rejected_and_the_rest_imported() -> None:
    good = csv_row(**{"data.bpm": "70"})
    items = csv_of("\n".join([HEADER, good, good + ",extra", good.rsplit(",", 3)[0], good]) + "\n")
    assert [(r.line, r.reason) for r in rejected(items)] == [
        (3, "has 15 cells where the header has 14"),
        (4, "has 11 cells where the header has 14"),
    ]
    assert len(events(items)) == 2


def test_a_quoted_newline_keeps_the_row_on_its_first_line_number() -> None:
    notes = '"two\nlines"'
    row = csv_row(
        type="migraine_attack",
        **{"data.severity": "1", "data.aura": "true", "data.triggers": "", "data.notes": notes},
    )
    items = csv_of("\n".join([HEADER, row, csv_row(**{"data.bpm": "x"})]) + "\n")
    assert events(items)[0]["data"]["notes"] == "two\nlines"
    assert [line for line, _, _ in items] == [2, 4]


def test_invalid_utf8_and_overlong_csv_rows_are_rejected_and_reading_goes_on() -> None:
    good = csv_row(**{"data.bpm": "70"}).encode()
    half = b"n" * (600 * 1024)
    long_field = (
        csv_row(type="migraine_attack", **{"data.notes": "PLACEHOLDER"})
        .encode()
        .replace(b"PLACEHOLDER", b'"' + half + b"\n" + half + b'"')
    )
    data = (
        HEADER.encode()
        + b"\n"
        + good.replace(b"user-0001", b"user-\xff")
        + b"\n"
        + long_field
        + b"\n"
        + good
        + b"\n"
    )
    items = csv_of(data)
    assert [(r.line, r.reason) for r in rejected(items)] == [
        (2, "is not valid UTF-8"),
        (3, "is not valid CSV (a field longer than 1 MiB, or unbalanced quotes)"),
    ]
    assert [line for line, _, p in items if isinstance(p, bytes)] == [5]


def test_empty_list_cells_are_empty_lists() -> None:
    row = csv_row(type="migraine_attack", **{"data.severity": "1", "data.aura": "true"})
    assert events(csv_of(f"{HEADER}\n{row}\n"))[0]["data"]["triggers"] == []


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("user_id,type,occurred_at", "lacks the column(s) event_id"),
        ("event_id,user_id,type,occurred_at,data.bmp", "unknown data.bmp"),
        ("event_id,user_id,type,occurred_at,type", "repeats the column(s) type"),
        ("event_id,user_id,type,occurred_at,a b c", "unknown 1 column(s)"),
    ],
)
def test_unusable_csv_headers_are_refused(header: str, message: str) -> None:
    with pytest.raises(HeaderError, match=message.replace("(", r"\(").replace(")", r"\)")):
        RowConverter(header.split(","))


def test_a_bom_before_the_header_is_ignored_and_blank_lines_before_it_skipped() -> None:
    converter, line, _ = read_csv_header(io.BytesIO(b"\n\xef\xbb\xbf" + HEADER.encode() + b"\n"))
    assert (converter.width, line) == (14, 2)


def test_a_file_without_a_header_row_is_refused() -> None:
    with pytest.raises(HeaderError, match="no CSV header"):
        read_csv_header(io.BytesIO(b"\n\n"))
