"""Generate the frozen envelope v1 sample documents and their table in docs/envelope.md.

    python -m tests.vectors.make_vectors           # write envelopes_v1.json and the docs section
    python -m tests.vectors.make_vectors --check   # exit 1 if either differs from what this would write

Both outputs are committed. The JSON file is frozen: every later PulseSeal must open those documents, and
sealing their events with the same key, nonce and time must give them back byte for byte. Add vectors at
the end if you must; never change one (that would be a change of the v1 format, which needs a v2).

Documents are written as MongoDB Extended JSON (relaxed), so BSON types are explicit: binary fields are
`{"$binary": {"base64": ..., "subType": "00"}}`, dates `{"$date": ...}`. Keys are standard base64.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bson import json_util

from pulseseal.envelope import DataKey, _seal_with_nonce, associated_data, to_millis
from schemas import canonical_json, validate_event

HERE = Path(__file__).resolve().parent
VECTORS_PATH = HERE / "envelopes_v1.json"
DOCS_PATH = HERE.parents[1] / "docs" / "envelope.md"
BEGIN = "<!-- BEGIN GENERATED VECTORS: python -m tests.vectors.make_vectors -->"
END = "<!-- END GENERATED VECTORS -->"

READ_OPTIONS = json_util.JSONOptions(
    json_mode=json_util.JSONMode.RELAXED, tz_aware=True, tzinfo=UTC, document_class=dict
)


@dataclass(frozen=True, slots=True)
class VectorInput:
    """Everything a v1 sample envelope is made from."""

    name: str
    key: bytes
    key_version: int
    nonce: bytes
    sealed_at: datetime
    event: dict[str, Any]


def _key(label: str) -> bytes:
    # Test keys only: derived from a label so anyone can rebuild them.
    return hashlib.sha256(f"pulseseal envelope v1 test key: {label}".encode()).digest()


INPUTS: tuple[VectorInput, ...] = (
    VectorInput(
        name="heart_rate-minimal",
        key=bytes(range(32)),
        key_version=1,
        nonce=bytes(range(12)),
        sealed_at=datetime(2026, 11, 29, 7, 30, 1, 234_000, tzinfo=UTC),
        event={
            "event_id": "6f1c2b9e-8a4d-4c1e-b7f3-2d9e5a1c0b47",
            "user_id": "alice",
            "type": "heart_rate",
            "occurred_at": "2026-11-29T07:30:00Z",
            "data": {"bpm": 64},
        },
    ),
    VectorInput(
        name="steps-offset-and-source",
        key=bytes(range(32)),
        key_version=1,
        nonce=bytes.fromhex("a1a2a3a4a5a6a7a8a9aaabac"),
        sealed_at=datetime(2026, 11, 29, 4, 15, 2, tzinfo=UTC),
        event={
            "event_id": "0d6a3c4e-2f1b-4a8e-9c7d-5b3e1f0a2d64",
            "user_id": "alice",
            "type": "steps",
            "occurred_at": "2026-11-28T23:15:00-05:00",
            "source": {"kind": "wearable", "device": "Pulse Band 2"},
            "data": {"count": 4210, "period_s": 3600},
        },
    ),
    VectorInput(
        name="spo2-rotated-key-sub-millisecond-time",
        key=_key("alice v2"),
        key_version=2,
        nonce=bytes.fromhex("5e2c9a017f3b6d48c1e0a9b2"),
        sealed_at=datetime(2026, 11, 29, 2, 4, 6, 999_000, tzinfo=UTC),
        event={
            "event_id": "9a7b5c3d-1e2f-4a6b-8c0d-e1f2a3b4c5d6",
            "user_id": "alice",
            "type": "spo2",
            "occurred_at": "2026-11-29T03:04:05.678901+01:00",
            "data": {"percent": 96.5},
        },
    ),
    VectorInput(
        name="sleep-imported",
        key=_key("bob@example.org v1"),
        key_version=1,
        nonce=bytes.fromhex("000000000000000000000001"),
        sealed_at=datetime(2026, 11, 29, 6, 0, tzinfo=UTC),
        event={
            "event_id": "C3D4E5F6-A7B8-4C9D-8E0F-112233445566",
            "user_id": "bob@example.org",
            "type": "sleep",
            "occurred_at": "2026-11-27T22:00:00Z",
            "source": {"kind": "import", "device": "sleep-diary.csv"},
            "data": {"stage": "rem", "duration_s": 5400},
        },
    ),
    VectorInput(
        name="migraine_attack-unicode",
        key=_key("bob@example.org v1"),
        key_version=1,
        nonce=bytes.fromhex("f0e1d2c3b4a5968778695a4b"),
        sealed_at=datetime(2026, 11, 29, 7, 0, tzinfo=UTC),
        event={
            "event_id": "5b8e2d71-c4f9-4e3a-a6d0-7f1b9c2e4a83",
            "user_id": "bob@example.org",
            "type": "migraine_attack",
            "occurred_at": "2026-11-29T09:00:00+09:00",
            "source": {"kind": "app", "device": "PulseSeal iOS 3.2"},
            "data": {
                "severity": 8,
                "aura": True,
                "ended_at": "2026-11-29T15:30:00+09:00",
                "triggers": ["Schlafmangel", "強い光", "\U0001f377"],
                "notes": 'Übelkeit, lichtempfindlich — "wie immer".\nZweite Zeile.',
            },
        },
    ),
    VectorInput(
        name="medication-before-1970",
        key=_key("carol:42 v7"),
        key_version=7,
        nonce=bytes.fromhex("ffffffffffffffffffffffff"),
        sealed_at=datetime(2026, 11, 29, 8, 0, tzinfo=UTC),
        event={
            "event_id": "00000000-0000-4000-8000-000000000000",
            "user_id": "carol:42",
            "type": "medication",
            # Half a millisecond before the epoch: the associated data holds -1 (floored), not 0.
            "occurred_at": "1969-12-31T23:59:59.9995Z",
            "data": {"name": "Aspirin", "dose_mg": None},
        },
    ),
)


def build() -> dict[str, Any]:
    """Seal every input; the structure written to envelopes_v1.json."""
    vectors = []
    for item in INPUTS:
        event = validate_event(item.event)
        key = DataKey(event.user_id, item.key_version, item.key)
        document = _seal_with_nonce(event, key, item.nonce, now=item.sealed_at)
        ad = associated_data(
            v=document["v"],
            event_id=event.event_id,
            user_id=event.user_id,
            occurred_at_ms=to_millis(event.occurred_at),
            key_version=item.key_version,
        )
        vectors.append(
            {
                "name": item.name,
                "key": base64.b64encode(item.key).decode(),
                "plaintext": canonical_json(event).decode(),
                "associated_data_hex": ad.hex(),
                "document": json.loads(
                    json_util.dumps(document, json_options=json_util.RELAXED_JSON_OPTIONS)
                ),
            }
        )
    return {
        "description": (
            "PulseSeal sealed envelope v1 sample documents (docs/contract.md §5, docs/envelope.md). Frozen: every "
            "later version must open them. Keys are test keys. Documents are MongoDB Extended JSON (relaxed)."
        ),
        "vectors": vectors,
    }


def render_json(data: dict[str, Any]) -> str:
    """The vectors file's text."""
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def load_document(vector: dict[str, Any]) -> dict[str, Any]:
    """A vector's document as PyMongo would return it (aware UTC dates, bytes)."""
    document: dict[str, Any] = json_util.loads(json.dumps(vector["document"]), json_options=READ_OPTIONS)
    return document


def render_markdown(data: dict[str, Any]) -> str:
    """The vectors section of docs/envelope.md, between the BEGIN and END markers."""
    parts = [BEGIN, ""]
    for vector in data["vectors"]:
        document = load_document(vector)
        parts += [
            f"#### `{vector['name']}`",
            "",
            "```text",
            f"key (hex)        {base64.b64decode(vector['key']).hex()}",
            f"key_version      {document['key_version']}",
            f"nonce            {document['nonce'].hex()}",
            f"sealed_at        {_utc(document['sealed_at'])}",
            f"occurred_at      {_utc(document['occurred_at'])} ({to_millis(document['occurred_at'])} ms)",
            f"plaintext        {vector['plaintext']}",
            f"associated data  {vector['associated_data_hex']}",
            f"ciphertext+tag   {document['ciphertext'].hex()}",
            "```",
            "",
        ]
    parts.append(END)
    return "\n".join(parts)


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def replace_section(docs: str, section: str) -> str:
    """`docs` with the text between the markers (markers included) replaced by `section`.

    Raises:
        ValueError: the markers are missing.
    """
    start = docs.index(BEGIN)
    stop = docs.index(END) + len(END)
    return docs[:start] + section + docs[stop:]


def main(argv: list[str]) -> int:
    """Write (or with --check, compare) the vectors file and the docs section."""
    check = argv == ["--check"]
    if argv and not check:
        print("usage: python -m tests.vectors.make_vectors [--check]", file=sys.stderr)
        return 2
    data = build()
    vectors_text = render_json(data)
    docs_text = replace_section(DOCS_PATH.read_text(encoding="utf-8"), render_markdown(data))
    if check:
        stale = [
            str(path)
            for path, text in ((VECTORS_PATH, vectors_text), (DOCS_PATH, docs_text))
            if path.read_text(encoding="utf-8") != text
        ]
        if stale:
            print(f"out of date: {', '.join(stale)}", file=sys.stderr)
            return 1
        return 0
    VECTORS_PATH.write_text(vectors_text, encoding="utf-8")
    DOCS_PATH.write_text(docs_text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
