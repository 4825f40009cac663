"""Hypothesis fuzzing of every reader of untrusted bytes: only the defined errors, never a crash.

Already covered elsewhere and not repeated: `parse_event` on random bytes and text
(tests/schemas/test_parsing.py), `open_sealed` on random and mutated documents
(tests/pulseseal/test_envelope.py). Here: broker messages, gateway bodies, the importer's NDJSON and CSV
readers (bytes with event-shaped lines mixed in, so the readers' valid paths are fuzzed too), CSV
headers and rows, base64 data keys, envelopes with random bytes where binary goes, key-store backups and
the shred ledger.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from consumers.messages import INVALID_EVENT, INVALID_MESSAGE, decode_message
from keyservice.backup import BackupError, read_backup
from keyservice.legacyledger import read_legacy_file
from keyservice.wire.errors import LedgerError
from producers.gateway.bodies import parse_body
from producers.gateway.errors import BodyTooLarge, InvalidBatch
from producers.importer.csvrows import HeaderError, RowConverter
from producers.importer.readers import Rejected, csv_items, ndjson_items, read_csv_header
from pulseseal.envelope import DataKey, IntegrityError, InvalidKeyMaterial, open_sealed
from pulseseal.topology import JSON, NDJSON
from schemas import InvalidEvent, canonical_json, parse_event, validate_event
from tests.strategies import event_dicts, json_values

NOW = datetime(2026, 11, 29, tzinfo=UTC)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
KEY = DataKey("alice", 1, bytes(32))

# Lines that are valid events, broken JSON, valid JSON of the wrong shape, or random bytes.
event_lines = event_dicts().map(lambda e: json.dumps(e, ensure_ascii=False).encode())
junk_lines = st.binary(max_size=80) | json_values.map(lambda v: json.dumps(v).encode())
mixed_bodies = st.lists(event_lines | junk_lines, max_size=12).map(lambda lines: b"\n".join(lines))
content_types = st.sampled_from(
    [JSON, NDJSON, f"{NDJSON}; charset=utf-8", "text/csv", "", "APPLICATION/JSON"]
)


def _now() -> datetime:
    return NOW


@given(body=mixed_bodies | st.binary(max_size=400), content_type=st.none() | content_types)
@FUZZ
def test_a_broker_message_splits_into_valid_events_and_coded_rejections(
    body: bytes, content_type: str | None
) -> None:
    decoded = decode_message(body, content_type, now=NOW)
    assert all(isinstance(e, BaseModel) for e in decoded.events)
    assert {r.code for r in decoded.rejected} <= {INVALID_EVENT, INVALID_MESSAGE}
    for rejected in decoded.rejected:
        assert rejected.body in body  # what is dead-lettered is the original bytes (a line, or all)
        assert rejected.reason
        assert "\n" not in rejected.reason


@given(body=mixed_bodies | st.binary(max_size=400), kind=st.sampled_from(["json", "ndjson"]))
@FUZZ
def test_a_gateway_body_is_all_events_or_a_list_of_problems(body: bytes, kind: str) -> None:
    media = JSON if kind == "json" else NDJSON
    try:
        events = parse_body(body, media, now=NOW)
    except (InvalidBatch, BodyTooLarge) as exc:
        assert not isinstance(exc, InvalidBatch) or exc.errors  # noqa: PT017 - either outcome is allowed
    else:
        assert events
        assert all(isinstance(e, BaseModel) for e in events)


@given(body=mixed_bodies | st.binary(max_size=600))
@FUZZ
def test_the_ndjson_reader_yields_canonical_events_or_rejections_in_line_order(body: bytes) -> None:
    items = list(ndjson_items(io.BytesIO(body), now=_now))
    lines = [line for line, _, _ in items]
    assert lines == sorted(set(lines))
    offsets = [offset for _, offset, _ in items]
    assert offsets == sorted(offsets)
    assert all(0 < o <= len(body) for o in offsets)
    for line, _, payload in items:
        if isinstance(payload, Rejected):
            assert payload.line == line
            assert payload.reason
        else:
            assert canonical_json(parse_event(payload)) == payload  # canonical already: publishable as is


header_cells = st.lists(
    st.sampled_from(
        [
            "event_id",
            "user_id",
            "type",
            "occurred_at",
            "source_kind",
            "source_device",
            "data.bpm",
            "data.notes",
        ]
    )
    | st.text(max_size=12),
    max_size=10,
)


@given(cells=header_cells, rows=st.lists(st.lists(st.text(max_size=20), max_size=10), max_size=5))
@FUZZ
def test_csv_headers_are_usable_or_refused_and_rows_always_convert(
    cells: list[str], rows: list[list[str]]
) -> None:
    try:
        converter = RowConverter(cells)
    except HeaderError:
        return
    for row in rows:
        cells_of_row = (row + [""] * converter.width)[: converter.width]
        try:
            validate_event(converter.convert(cells_of_row), now=NOW)
        except InvalidEvent as exc:
            assert exc.problems  # noqa: PT017 - an invalid row is fine; it must say why


@given(body=st.binary(max_size=600) | mixed_bodies)
@FUZZ
def test_the_csv_reader_never_fails_on_any_bytes(body: bytes) -> None:
    data = b"event_id,user_id,type,occurred_at,data.bpm\n" + body
    stream = io.BytesIO(data)
    try:
        converter, line, offset = read_csv_header(stream)
    except HeaderError:
        return
    stream.seek(offset)
    for _, _, payload in csv_items(stream, converter, now=_now, first_line=line + 1, start_offset=offset):
        assert isinstance(payload, Rejected) or parse_event(payload)


@given(body=st.binary(max_size=300))
@example(body=b"event_id,user_id\rtype,occurred_at\n")  # a bare CR raised csv.Error past the importer
@FUZZ
def test_any_header_bytes_are_a_header_or_a_header_error(body: bytes) -> None:
    with contextlib.suppress(HeaderError):
        read_csv_header(io.BytesIO(body))


@given(text=st.text(max_size=60) | st.binary(max_size=40).map(lambda b: base64.b64encode(b).decode()))
@FUZZ
def test_a_data_key_is_32_bytes_of_base64_or_invalid_key_material(text: str) -> None:
    try:
        key = DataKey.from_base64("alice", 1, text)
    except InvalidKeyMaterial:
        return
    assert repr(key) == "DataKey(user_id='alice', version=1)"


random_fields = st.fixed_dictionaries(
    {
        "_id": st.text(max_size=40) | st.binary(max_size=10),
        "user_id": st.sampled_from(["alice", "bob"]) | st.text(max_size=10),
        "occurred_at": st.datetimes(timezones=st.just(UTC)) | st.integers(),
        "key_version": st.integers(-2, 2**33) | st.booleans(),
        "alg": st.sampled_from(["AES-256-GCM", "aes-256-gcm", ""]),
        "v": st.sampled_from([1, 1.0, True, 2]),
        "nonce": st.binary(max_size=16),
        "ciphertext": st.binary(max_size=200),
    }
)


@given(document=random_fields)
@FUZZ
def test_random_bytes_where_an_envelope_has_binary_only_fail_to_open(document: dict[str, Any]) -> None:
    with pytest.raises(IntegrityError):
        open_sealed(document, KEY)


@given(body=st.binary(max_size=400) | st.lists(junk_lines, max_size=5).map(b"\n".join))
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_a_damaged_key_store_backup_is_refused_with_backup_error(body: bytes, tmp_path: Path) -> None:
    path = tmp_path / "keystore.backup"
    path.write_bytes(body)
    with pytest.raises(BackupError):
        read_backup(path)


@given(
    body=st.binary(max_size=400)
    | st.lists(junk_lines, min_size=1, max_size=5).map(lambda x: b"\n".join(x) + b"\n")
)
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_a_damaged_legacy_shred_ledger_is_refused_with_ledger_error(body: bytes, tmp_path: Path) -> None:
    path = tmp_path / "shred-ledger.ndjson"
    path.write_bytes(body)
    try:
        entries = read_legacy_file(path, Ed25519PrivateKey.generate())
    except LedgerError:
        return
    assert entries == []  # nothing unsigned ever verifies: only blank input loads
