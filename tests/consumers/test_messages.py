"""Decoding broker messages: the event estimate the batcher sizes batches by (decoding itself is fuzzed in
tests/fuzz and exercised end to end in test_encryptor.py)."""

from __future__ import annotations

import json

import pytest

from consumers.messages import decode_message, estimated_events
from pulseseal.topology import JSON, NDJSON
from tests.factories import valid_event


def test_a_json_message_is_one_event() -> None:
    assert estimated_events(b'{"anything": 1}', JSON) == 1


@pytest.mark.parametrize(
    ("body", "expected"),
    [(b"{}\n{}\n{}\n", 4), (b"{}\n{}\n{}", 3), (b"{}", 1), (b"", 1), (b"\n" * 5000, 1000)],
)
def test_an_ndjson_message_counts_its_lines_at_most_the_batch_limit(body: bytes, expected: int) -> None:
    assert estimated_events(body, NDJSON) == expected


def test_the_estimate_never_undercounts_the_events_decoded() -> None:
    lines = [json.dumps(valid_event("heart_rate", user_id=f"user-{n}")).encode() for n in range(7)]
    body = b"\n".join(lines) + b"\n\n"
    assert len(decode_message(body, NDJSON).events) <= estimated_events(body, NDJSON)


def test_the_content_type_parameters_and_case_are_ignored() -> None:
    assert estimated_events(b"{}\n{}", "Application/X-NDJSON; charset=utf-8") == 2
    assert estimated_events(b"{}\n{}", "text/plain") == 1
